"""Table files in and out: CSV and Parquet through pyarrow, written atomically (complete file or none).

Columns named as text fields are read from CSV as strings (so a column of digits stays text to scrub); every
other column keeps the type pyarrow infers (CSV) or stores (Parquet), and it is written back with that type.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Sequence

from .core import require_pyarrow
from .fields import parse_keys

TableKind = Literal["csv", "parquet"]


def read_table(path: Path, kind: TableKind, text_keys: Sequence[str]) -> Any:
    """The whole file as a ``pyarrow.Table``; text-field columns of a CSV are read as strings."""
    pa = require_pyarrow()
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.csv as pcsv

    roots = {path_[0] for path_ in parse_keys(text_keys)}
    convert = pcsv.ConvertOptions(column_types={name: pa.string() for name in roots}, strings_can_be_null=False)
    return pcsv.read_csv(path, convert_options=convert)


def write_table(table: Any, path: Path, kind: TableKind) -> None:
    """Write ``table`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
