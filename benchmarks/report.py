"""Results -> markdown tables and a log-log plot of tokens/s against input length."""
from __future__ import annotations

from pathlib import Path

from .contenders import BASELINE


def render_markdown(results: dict) -> str:
    meta, roof = results["meta"], results.get("roofline") or {}
    notes: list[str] = []
    lines = [f"# Benchmark results ({meta['mode']}, {meta['device']})", "",
             f"- Command: `{meta['command']}`", f"- Date: {meta['date']}; commit {meta['commit']}",
             f"- Machine: {meta.get('machine', 'unknown')}; threads: {meta['threads']}",
             f"- Model: {meta['size']}-size random checkpoint ({meta['model_shape']}); "
             "timing depends only on shapes",
             f"- {meta['repeats']} runs per figure: median [min-max]; "
             "ratios compare contenders within this run"]
    if roof:
        lines.append(f"- Roofline: bf16 matmul {roof['gflops']:,.0f} GFLOP/s measured / "
                     f"{roof['flops_per_token'] / 1e9:.3g} GFLOP per token = ceiling "
                     f"**{roof['ceiling_tokens_per_s']:,.0f} tokens/s**")
    scaling = _scaling_table(results, notes)  # fills ``notes`` with the skip reasons it numbers
    if notes:
        scaling += ["", "Skipped:", *[f"{i + 1}. {note}" for i, note in enumerate(notes)]]
    sections = (_targets_table(results), _issue18_table(results), _paired_table(results), scaling,
                _relative_table(results), _memory_table(results), _rss_by_length_table(results),
                _pipe_table(results), _cold_table(results))
    for section in sections:
        lines += ["", *section]
    lines.append("")
    return "\n".join(lines)


def _columns(results: dict) -> list[str]:
    return [str(n) for n in results["meta"]["lengths"]]


def _rows(results: dict):
    for name, entry in results["contenders"].items():
        if entry.get("status") == "ok" and "scaling" not in entry:
            continue  # not run (yet): a partial write during the run, or --only without "scaling"
        yield name, entry, (entry.get("scaling") or {})


def _status_cell(entry: dict, job: dict) -> str | None:
    for block in (entry, job):
        if block.get("status") in ("skipped", "failed"):
            return f"{block['status']}: {block.get('reason', '')}"
    return None


def _fmt_summary(summary: dict | None, digits: int = 0) -> str:
    if not summary:
        return "-"
    return f"{summary['median']:,.{digits}f} [{summary['min']:,.{digits}f}-{summary['max']:,.{digits}f}]"


def _note(notes: list[str], text: str) -> str:
    if text not in notes:
        notes.append(text)
    return f"skipped ({notes.index(text) + 1})"


def _scaling_table(results: dict, notes: list[str]) -> list[str]:
    cols = _columns(results)
    lines = ["## Single texts: tokens/s by input length (one forward pass, logits out)", "",
             "| contender | " + " | ".join(f"{c} tok" for c in cols) + " | 32 texts x ~200 tok |",
             "|---" * (len(cols) + 2) + "|"]
    for _, entry, job in _rows(results):
        status = _status_cell(entry, job)
        if status:
            lines.append(f"| {entry['label']} | {status} |" + " |" * len(cols))
            continue
        cells = []
        for col in cols:
            point = job.get("lengths", {}).get(col, {})
            cells.append(_note(notes, point["skipped"]) if "skipped" in point
                         else _fmt_summary(point.get("tokens_per_s")))
        batch = job.get("batch32") or {}
        cells.append(_note(notes, batch["skipped"]) if "skipped" in batch
                     else _fmt_summary(batch.get("tokens_per_s")))
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return lines


def median_tps(job: dict, col: str) -> float | None:
    if col == "batch32":
        summary = (job.get("batch32") or {}).get("tokens_per_s")
    else:
        summary = job.get("lengths", {}).get(col, {}).get("tokens_per_s")
    return summary["median"] if summary else None


def roofline_share(results: dict, job: dict, col: str) -> float | None:
    """Median tokens/s of ``job`` at ``col`` over this run's roofline ceiling; None when either is missing."""
    ceiling = (results.get("roofline") or {}).get("ceiling_tokens_per_s")
    tps = median_tps(job, col)
    return tps / ceiling if tps is not None and ceiling else None


def _targets_table(results: dict) -> list[str]:
    """The issue targets (#3 runtime, #5 component), read off this run; '-' where a figure is missing."""
    entries = results["contenders"]
    job = lambda name: (entries.get(name) or {}).get("scaling") or {}  # noqa: E731
    tps = lambda name, col: median_tps(job(name), col)  # noqa: E731

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    ours = "torch-bf16"
    # Resident memory while serving ordinary texts: RSS right after the 512-token runs (every weight has been
    # used by then). Long inputs add activation memory on top; the memory tables show it.
    int8_rss = (job("torch-int8").get("lengths", {}).get("512") or {}).get("rss_mb")
    pipe = ((entries.get(ours) or {}).get("pipe") or {}).get("batch_sizes", {})
    shares = [p["overhead_share"]["median"] for p in pipe.values() if p.get("overhead_share")]
    rows = [
        ("torch bf16 / transformers eager at 512 tokens",
         ratio(tps(ours, "512"), tps("hf-eager", "512")), 2.0, "x"),
        ("torch bf16 / transformers grouped_mm at 512 tokens",
         ratio(tps(ours, "512"), tps("hf-grouped_mm", "512")), 1.2, "x"),
        ("torch bf16 / transformers eager at 4,096 tokens",
         ratio(tps(ours, "4096"), tps("hf-eager", "4096")), 10.0, "x"),
        ("torch bf16 tokens/s at 32,768 / at 512 (1 = flat; 0.8 read as roughly flat)",
         ratio(tps(ours, "32768"), tps(ours, "512")), 0.8, "x"),
        ("torch 8-bit resident memory after the 512-token runs, GB (10^9 bytes)",
         int8_rss * 2**20 / 1e9 if int8_rss else None, -1.7, " GB"),
        ("nlp.pipe outside-model share (worst batch size)", max(shares) if shares else None, -0.05, "%"),
    ]
    return ["## Targets (issues #3 and #5) read off this run", "", "| figure | this run | target | met |",
            "|---|---|---|---|", *_target_rows(rows)]


def _target_rows(rows) -> list[str]:
    """Table rows from ``(figure, value or None, target, unit[, complete])``; negative target: upper bound.

    ``complete=False``: the run covered only part of what the target spans (fewer lengths or documents),
    so the figure can miss its bound ("no") but not meet it ("-").
    """
    lines = []
    for name, value, target, unit, *rest in rows:
        fmt = (lambda v: f"{v:.1%}") if unit == "%" else (lambda v: f"{v:.2f}{unit}")  # noqa: E731
        bound = f"<= {fmt(-target)}" if target < 0 else f">= {fmt(target)}"
        good = value is not None and (value <= -target if target < 0 else value >= target)
        met = "-" if value is None or (good and rest and not rest[0]) else ("yes" if good else "no")
        lines.append(f"| {name} | {'-' if value is None else fmt(value)} | {bound} | {met} |")
    return lines


def _issue18_table(results: dict) -> list[str]:
    """The targets of issue #18 (performance round 2), read off this run; '-' where a figure is missing."""
    entries, lengths = results["contenders"], _columns(results)
    job = lambda name, kind="scaling": (entries.get(name) or {}).get(kind) or {}  # noqa: E731
    bf16, int8 = job("torch-bf16"), job("torch-int8")
    ran = lambda j: [c for c in lengths if median_tps(j, c) is not None]  # noqa: E731
    rows: list[tuple] = [(f"torch bf16 share of the roofline ceiling at {int(col):,} tokens",
                          roofline_share(results, bf16, col), bound, "%") for col, bound in
                         (("2048", 0.60), ("512", 0.45))]
    flat = [c for c in ran(bf16) if 2048 <= int(c) <= 32768]
    speeds = [median_tps(bf16, c) for c in flat]
    rows.append((f"torch bf16 tokens/s, slowest / fastest over 2,048-32,768 tokens (ran: {_names(flat)})",
                 min(speeds) / max(speeds) if len(speeds) > 1 else None, 0.85, "",
                 {"2048", "32768"} <= set(flat)))
    # 8-bit / bf16: from the paired job (one process, runs alternating) when it ran; the separate processes'
    # ratio is named beside it.
    separate = {c: median_tps(int8, c) / median_tps(bf16, c) for c in ran(bf16) if c in ran(int8)}
    paired = paired_ratios(results)
    ratios = paired or separate
    both = [c for c in lengths if c in ratios]

    def how(col: str | None) -> str:
        if not paired:
            return " (separate processes)"
        beside = f"; separate processes: {separate[col]:.2f}x" if col in separate else ""
        return f" (paired: one process, runs alternating{beside})"

    rows.append((f"torch 8-bit / torch bf16 tokens/s at 128 tokens{how('128')}", ratios.get("128"), 1.3, "x"))
    worst = min(both, key=ratios.__getitem__, default=None)
    rows.append((f"torch 8-bit / torch bf16 tokens/s at the worst length: {_names([worst] if worst else [])} "
                 f"tokens (lengths both ran: {_names(both)}){how(worst)}", ratios.get(worst), 1.0, "x",
                 both == lengths and "32768" in lengths))
    # Peaks per length are running peaks (reset after loading), ascending: the last one <= 8,192 is the peak.
    peaks = [(c, p["peak_rss_mb"]) for c, p in int8.get("lengths", {}).items()
             if int(c) <= 8192 and "peak_rss_mb" in p]
    rows.append((f"torch 8-bit peak RSS while running single texts up to 8,192 tokens (ran up to "
                 f"{_names([max(peaks, key=lambda cp: int(cp[0]))[0]] if peaks else [])}), GB (10^9 bytes)"
                 + _unreset(int8),
                 max(mb for _, mb in peaks) * 2**20 / 1e9 if peaks else None, -2.0, " GB",
                 "8192" in dict(peaks)))
    pipe = job("torch-bf16", "pipe")
    above = (pipe["peak_rss_mb"] - pipe["rss_model_loaded_mb"]) * 2**20 / 1e9 \
        if pipe.get("status") == "ok" and "rss_model_loaded_mb" in pipe else None
    rows.append((f"nlp.pipe over {pipe.get('documents', '?')} documents (torch bf16): peak RSS above the "
                 "loaded model, GB (10^9 bytes)" + _unreset(pipe), above, -1.5, " GB",
                 pipe.get("documents", 0) >= 500))
    cold = job("torch-int8", "cold")
    phases = cold.get("phases_s") if cold.get("status") == "ok" else None
    rows.append(("cold start, torch 8-bit: import + load + first "
                 f"{cold.get('doc_tokens', '?')}-token document in a fresh process, median of "
                 f"{phases['n'] if phases else '?'} (the process wall in the cold-start table adds interpreter "
                 "start and exit), s", phases["median"] if phases else None, -3.0, " s"))
    return ["## Targets (issue #18) read off this run", "",
            "| figure (ratios compare contenders measured in this run) | this run | target | met |",
            "|---|---|---|---|", *_target_rows(rows), "",
            "met '-': no figure, or a figure within its bound from a run that covered only part of the "
            "target (fewer lengths or documents than it names); such a figure that misses its bound "
            "reads 'no'."]


def paired_ratios(results: dict) -> dict[str, float]:
    """8-bit / bf16 speed ratio (median over rounds) per length the paired job ran; {} when it did not run."""
    paired = results.get("paired") or {}
    if paired.get("status") != "ok":
        return {}
    return {col: point["ratio"]["median"] for col, point in paired["lengths"].items() if "ratio" in point}


def _paired_table(results: dict) -> list[str]:
    paired = results.get("paired")
    lines = ["## torch 8-bit vs torch bf16, paired: one process, runs alternating", ""]
    if not paired:
        return lines + ["(not run)"]
    if paired.get("status") != "ok":
        return lines + [f"{paired.get('status')}: {paired.get('reason', '')}"]
    lines += [f"Both models loaded in one process; at each length {paired['rounds']} rounds of one run each, the "
              "order alternating. Ratio = 8-bit tokens/s / bf16 tokens/s within a round, median [min-max]: the "
              "two runs of a round are made seconds apart, so the machine's drifts between the separate "
              "processes of the tables above (minutes apart) cancel out.", "",
              "| tokens | torch bf16 tokens/s | torch 8-bit tokens/s | 8-bit / bf16 |", "|---|---|---|---|"]
    for col, point in paired["lengths"].items():
        if "skipped" in point:
            lines.append(f"| {int(col):,} | skipped: {point['skipped']} | | |")
            continue
        r = point["ratio"]
        lines.append(f"| {int(col):,} | {_fmt_summary(point['tokens_per_s'][0])} | "
                     f"{_fmt_summary(point['tokens_per_s'][1])} | "
                     f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}] |")
    return lines


def _names(cols: list[str]) -> str:
    return ", ".join(f"{int(c):,}" for c in cols) or "none"


def _unreset(job: dict) -> str:
    # Without the Linux peak reset (clear_refs) the job's peaks include the transients of loading.
    return " (peak includes loading: no peak reset here)" if job.get("peak_reset") is False else ""


def _relative_table(results: dict) -> list[str]:
    cols = _columns(results) + ["batch32"]
    baseline = (results["contenders"].get(BASELINE) or {}).get("scaling") or {}
    lines = ["## Relative: speed-up over transformers eager (same run) and share of the roofline ceiling", "",
             "| contender | " + " | ".join(f"{c} tok" if c != "batch32" else "32 x ~200" for c in cols)
             + " |",
             "|---" * (len(cols) + 1) + "|"]
    for _, entry, job in _rows(results):
        if _status_cell(entry, job):
            continue
        cells = []
        for col in cols:
            tps = median_tps(job, col)
            if tps is None:
                cells.append("-")
                continue
            base = median_tps(baseline, col)
            ratio = f"{tps / base:.2f}x" if base else "n/a"
            share = roofline_share(results, job, col)
            share = f"{share:.0%}" if share is not None else "n/a"
            cells.append(f"{ratio} / {share}")
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    lines += ["", "n/a: transformers eager did not run at that length (see 'Skipped' above)."]
    return lines


def _memory_table(results: dict) -> list[str]:
    gpu = results["meta"]["device"] == "cuda"
    head = ("| contender | load s (incl. 1-token forward) | RSS after load | peak RSS while loading | "
            "RSS after the 512-token runs | peak RSS while running (all lengths) | RSS at the end |"
            + (" GPU peak |" if gpu else ""))
    lines = ["## Memory (MiB) and load time (each contender in its own process)", "", head,
             "|---" * (8 if gpu else 7) + "|"]
    for _, entry, job in _rows(results):
        if _status_cell(entry, job):
            continue
        mib = lambda key: f"{job[key]:,.0f}" if key in job else "-"  # noqa: E731
        row = (f"| {entry['label']} | {job.get('load_s', 0):.1f} | {mib('rss_after_load_mb')} | "
               f"{mib('load_peak_rss_mb')} | {_rss_at(job, '512')} | {mib('peak_rss_mb')} | {mib('rss_end_mb')} |")
        if gpu:
            row += f" {job.get('gpu_peak_mb', 0):,.0f} |"
        lines.append(row)
    lines += ["", "Memory-mapped weights count towards RSS only once touched, so 'RSS after load' can be "
              "low; "
              "'RSS at the end' follows every length and the batch (what the C allocator keeps after the longest "
              "input, for the torch contenders). Peaks while running exclude loading "
              "(the peak is reset after loading, Linux only)."]
    return lines


def _rss_at(job: dict, length: str) -> str:
    value = (job.get("lengths", {}).get(length) or {}).get("rss_mb")
    return f"{value:,.0f}" if value is not None else "-"


def _rss_by_length_table(results: dict) -> list[str]:
    cols = _columns(results)
    lines = ["## Peak RSS (MiB) while running, up to each length (ascending, so growth per length shows)",
             "",
             "| contender | " + " | ".join(f"{c} tok" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for _, entry, job in _rows(results):
        if _status_cell(entry, job):
            continue
        cells = [f"{p['peak_rss_mb']:,.0f}" if "peak_rss_mb" in p else "-"
                 for p in (job.get("lengths", {}).get(col, {}) for col in cols)]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return lines


def _pipe_table(results: dict) -> list[str]:
    lines = ["## spaCy `nlp.pipe` on realistic documents (clinical notes and emails, 100-2,000 tokens)", ""]
    rows = [(entry, entry["pipe"]) for entry in results["contenders"].values() if entry.get("pipe")]
    if not rows:
        return lines + ["(not run)"]
    job0 = next((job for _, job in rows if job.get("status") == "ok"), {})
    if job0:
        lines.append(f"{job0['documents']} documents, {job0['tokens']:,} tokens, "
                     f"split into {job0['shards']} runs "
                     "(median [min-max] over runs). Outside-model share = 1 - time inside the backend's "
                     "`logits` / wall time (spaCy tokenizer, model tokenizer, Viterbi, span alignment).")
        lines.append("")
    lines += ["| contender | batch size | docs/s | tokens/s | outside-model share | peak RSS MiB |",
              "|---|---|---|---|---|---|"]
    for entry, job in rows:
        if job.get("status") != "ok":
            lines.append(f"| {entry['label']} | {job.get('status')}: {job.get('reason', '')} | | | | |")
            continue
        for batch_size, point in job["batch_sizes"].items():
            share = point.get("overhead_share")
            share_text = (f"{share['median']:.1%} [{share['min']:.1%}-{share['max']:.1%}]" if share
                          else "not measured")
            lines.append(f"| {entry['label']} | {batch_size} | {_fmt_summary(point['docs_per_s'], 1)} | "
                         f"{_fmt_summary(point['tokens_per_s'])} | {share_text} | "
                         f"{job['peak_rss_mb']:,.0f} |")
    return lines


def _cold_table(results: dict) -> list[str]:
    lines = ["## Cold start: fresh process, import + load + first document", ""]
    tokens = sorted({e["cold"]["doc_tokens"] for e in results["contenders"].values()
                     if "doc_tokens" in (e.get("cold") or {})})
    if tokens:
        lines += [f"First document: {', '.join(map(str, tokens))} model tokens.", ""]
    python = results.get("meta", {}).get("cold_python")
    if python and python != "this venv":
        lines += [f"Our contenders start in `{python}` (`--cold-python`: a venv with only the package and its "
                  "torch extra, what a user pays); the transformers contenders in the benchmark's venv.", ""]
    rows = [(entry, entry["cold"]) for entry in results["contenders"].values() if entry.get("cold")]
    if not rows:
        return lines + ["(not run)"]
    lines += ["| contender | process wall s | import + load + first doc s | import s | load s | first doc s |",
              "|---|---|---|---|---|---|"]
    for entry, cold in rows:
        if cold.get("status") != "ok":
            lines.append(f"| {entry['label']} | {cold.get('status')}: {cold.get('reason', '')} | | | | |")
            continue
        parts = [_fmt_summary(cold.get(key), 2) for key in ("wall_s", "phases_s", "import_s", "load_s", "first_doc_s")]
        lines.append(f"| {entry['label']} | " + " | ".join(parts) + " |")
    lines += ["", "The first run reads the checkpoint from disk; later runs find it in the page cache. 'load s' is "
                  "spacy.blank + add_pipe + initialize: it includes importing every spaCy plugin that the venv "
                  "registers as an entry point."]
    return lines


def render_plot(results: dict, path: Path) -> Path:
    """tokens/s against input length, log-log, one line per contender, the roofline ceiling dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for _, entry, job in _rows(results):
        points = [(int(col), median_tps(job, col)) for col in _columns(results)]
        points = [(x, y) for x, y in points if y]
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=entry["label"])
    ceiling = (results.get("roofline") or {}).get("ceiling_tokens_per_s")
    if ceiling:
        ax.axhline(ceiling, linestyle="--", color="grey", label=f"roofline ceiling ({ceiling:,.0f} tok/s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    lengths = [int(c) for c in _columns(results)]
    ax.set_xticks(lengths, [f"{n:,}" for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel("tokens in one text (missing points: skipped, see the table)")
    ax.set_ylabel("tokens/s (median)")
    meta = results["meta"]
    ax.set_title(f"Privacy Filter forward pass, {meta['size']} model, {meta['device']}, "
                 f"{meta['threads']} threads")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
