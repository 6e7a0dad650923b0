"""The demo's final report: per symbol what each stream stored and what the merge made of it, where the
output is and how to load it. Fails the demo if the merged output lacks ids a stream received."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from depth_pipeline.demo.processes import DemoError
from depth_pipeline.demo.readback import STREAMS, MergedSummary, StreamStats


def fmt_ranges(ranges: Sequence[tuple[int, int]], limit: int = 3) -> str:
    parts = [f"{a}..{b} ({b - a + 1} ids)" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"+{len(ranges) - limit} more")
    return ", ".join(parts) if parts else "none"


def quality_line(store_dir: Path, files: Sequence[str]) -> str:
    """Where the data-quality report is (PNG + markdown per symbol-day), or that none was written."""
    if not files:
        return f"Quality:  no report under {store_dir / 'quality'} (the quality asset did not run)"
    pictures = [f for f in files if f.endswith(".png")]
    shown = pictures[0] if pictures else files[0]
    return f"Quality:  {store_dir / 'quality'}  ({len(files)} files, e.g. {store_dir / shown})"


def print_report(
    seconds: float,
    symbols: Sequence[str],
    data_dir: Path,
    stats: dict[tuple[str, str], StreamStats],
    merged: dict[str, MergedSummary],
    dates: Sequence[str],
    store_dir: Path,
    dagster_home: Path,
    leftovers: dict[str, list[Path]],
    raw_before: int,
    raw_after: int,
) -> None:
    lines = ["", "=" * 78, f"DEMO REPORT — {seconds:.0f}s captured, dates {', '.join(dates)}", "=" * 78]
    for symbol in symbols:
        m = merged[symbol]
        lines.append(f"{symbol}")
        for stream in STREAMS:
            st = stats[(stream, symbol)]
            gap_text = (
                ", ".join(
                    f"{a}..{b} ({b - a + 1} ids, {'covered by the other stream' if ok else 'NOT covered'})"
                    for a, b, ok in m.covered_gaps[stream][:3]
                )
                or "none"
            )
            lines.append(
                f"  stream {stream}: {st.events} events, {st.snapshots} snapshots, {st.objects} raw objects; "
                f"gaps: {gap_text}"
            )
        share = ", ".join(f"{k}={v}" for k, v in sorted(m.by_source.items()))
        lines.append(
            f"  merged: {m.events} events, {m.rows} rows ({m.snapshot_rows} snapshot rows); "
            f"supplied by {share}"
        )
        lost = sum(m.missing.values())
        lines.append(
            f"  merged coverage: {'complete' if not m.gaps else 'gaps ' + fmt_ranges(m.gaps)}; "
            f"ids a stream received but merged lacks: {lost}"
        )
    leftover_count = sum(len(v) for v in leftovers.values())
    lines += [
        "",
        f"Raw objects: {raw_before} before the gated cleanup, {raw_after} after; "
        f"spool files left after SIGTERM: {leftover_count}",
        f"Parquet:  {store_dir / 'merged'}",
        quality_line(store_dir, [f for m in merged.values() for f in m.quality_files]),
        f"Logs:     {data_dir / 'logs'}",
        "",
        "Load it with polars:",
        "    import polars as pl",
        f'    df = pl.scan_parquet("{store_dir}/merged/**/*.parquet", hive_partitioning=True)',
        '    print(df.group_by("symbol", "source").len().collect())',
        "",
        f"Browse the runs:  make ui   (reads {data_dir / 'demo.env'}; Dagster home {dagster_home})",
        "=" * 78,
    ]
    print("\n".join(lines), flush=True)
    bad = [s for s in symbols if sum(merged[s].missing.values())]
    if bad:
        raise DemoError(f"merged output lacks ids a stream received for {', '.join(bad)}")
