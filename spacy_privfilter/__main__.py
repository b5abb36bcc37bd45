"""``python -m spacy_privfilter``: the same command line as the ``spacy-privfilter`` script."""
import sys

from .cli.parser import main

if __name__ == "__main__":
    sys.exit(main())
