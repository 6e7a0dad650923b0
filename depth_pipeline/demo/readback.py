"""Read back what each stream stored (its raw objects) and what the merge made of it (the merged Parquet),
and compare the two: every id a stream received must be in the merged output."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from depth_core.raw_format import RAW_ROOT, LineKind, RawFormatError, RawObjectKey, read_raw_object
from depth_pipeline.demo.processes import DemoError
from depth_store.base import ObjectStore

STREAMS = ("eu-1", "ap-1")


@dataclass
class StreamStats:
    """What one stream stored for one symbol, read back from its raw objects."""

    objects: int = 0
    events: int = 0
    snapshots: int = 0
    problems: int = 0
    first_id: int | None = None
    last_id: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # missing [first, last] ids
    intervals: list[tuple[int, int]] = field(default_factory=list)  # [U, u] of every event
    snapshot_ids: list[int] = field(default_factory=list)
    event_dates: set[str] = field(default_factory=set)  # UTC dates of the events' exchange time E


def read_stream_stats(store: ObjectStore, symbols: Sequence[str]) -> dict[tuple[str, str], StreamStats]:
    """Count events and find each stream's gaps (``U != previous u + 1``) from the stored raw objects."""
    stats: dict[tuple[str, str], StreamStats] = {
        (stream, symbol): StreamStats() for stream in STREAMS for symbol in symbols
    }
    by_key: dict[tuple[str, str], list[tuple[int, int]]] = {k: [] for k in stats}
    for info in store.list(f"{RAW_ROOT}/"):
        try:
            key = RawObjectKey.parse(info.key)
        except RawFormatError:
            continue
        if key.symbol is not None and (key.stream, key.symbol) not in stats:
            continue
        content = read_raw_object(store.get_bytes(info.key), key.layout)
        counted: set[tuple[str, str]] = set()
        for line in content.lines:
            symbol = key.symbol or line.symbol  # layout 2: each line names its symbol (None: stream-wide)
            entry = stats.get((key.stream, symbol)) if symbol is not None else None
            if entry is None or symbol is None:
                continue
            if (key.stream, symbol) not in counted:
                counted.add((key.stream, symbol))
                entry.objects += 1
            if line.kind is LineKind.DEPTH:
                try:
                    data = orjson.loads(line.text).get("data", {})
                    first, last = int(data["U"]), int(data["u"])
                    entry.event_dates.add(
                        dt.datetime.fromtimestamp(int(data["E"]) / 1000, dt.UTC).date().isoformat()
                    )
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    entry.problems += 1
                    continue
                by_key[(key.stream, symbol)].append((first, last))
            elif line.kind is LineKind.SNAPSHOT:
                entry.snapshots += 1
                with contextlib.suppress(
                    orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError
                ):
                    entry.snapshot_ids.append(int(orjson.loads(line.text)["lastUpdateId"]))
        if content.problems and key.symbol is not None:
            stats[(key.stream, key.symbol)].problems += len(content.problems)
    for k, intervals in by_key.items():
        entry = stats[k]
        unique = sorted(set(intervals))
        entry.events = len(unique)
        entry.intervals = unique
        if unique:
            entry.first_id, entry.last_id = unique[0][0], unique[-1][1]
        reach: int | None = None
        for first, last in unique:
            if reach is not None and first > reach + 1:
                entry.gaps.append((reach + 1, first - 1))
            reach = last if reach is None else max(reach, last)
    return stats


def merged_intervals(frame: object) -> list[tuple[int, int]]:
    """Covered id ranges of the merged rows (events only), joined where contiguous."""
    import polars as pl

    assert isinstance(frame, pl.DataFrame)
    events = (
        frame.filter(~pl.col("is_snapshot"))
        .select("first_update_id", "last_update_id")
        .unique()
        .sort("first_update_id")
    )
    joined: list[tuple[int, int]] = []
    for first, last in events.iter_rows():
        if joined and first <= joined[-1][1] + 1:
            joined[-1] = (joined[-1][0], max(joined[-1][1], last))
        else:
            joined.append((first, last))
    return joined


def covered(intervals: list[tuple[int, int]], first: int, last: int) -> bool:
    """Is ``[first, last]`` inside one of the joined ``intervals``?"""
    import bisect

    i = bisect.bisect_right(intervals, (first, sys.maxsize)) - 1
    return i >= 0 and intervals[i][0] <= first and last <= intervals[i][1]


def subtract(first: int, last: int, cut: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[first, last]`` outside every range in ``cut``."""
    pieces = [(first, last)]
    for a, b in cut:
        kept: list[tuple[int, int]] = []
        for x, y in pieces:
            if b < x or y < a:
                kept.append((x, y))
                continue
            if x < a:
                kept.append((x, a - 1))
            if b < y:
                kept.append((b + 1, y))
        pieces = kept
    return pieces


@dataclass
class MergedSummary:
    rows: int
    events: int
    snapshot_rows: int
    by_source: dict[str, int]
    gaps: list[tuple[int, int]]
    parquet_files: list[str]
    quality_files: list[str]
    missing: dict[str, int]  # stream -> events it had (after the day's anchor) that merged lacks
    covered_gaps: dict[str, list[tuple[int, int, bool]]]  # stream -> its gaps, each covered in merged?


def report_merged(
    store: ObjectStore,
    store_dir: Path,
    symbols: Sequence[str],
    dates: Sequence[str],
    stats: dict[tuple[str, str], StreamStats],
) -> dict[str, MergedSummary]:
    """Read the merged Parquet back and compare it with what each stream stored."""
    import polars as pl

    from depth_core.layout import merged_day_prefix, merged_manifest_key, quality_day_prefix

    out: dict[str, MergedSummary] = {}
    for symbol in symbols:
        files: list[str] = []
        quality: list[str] = []
        for date in dates:
            files += [
                i.key
                for i in store.list(merged_day_prefix("spot", symbol, date))
                if i.key.endswith(".parquet")
            ]
            quality += [i.key for i in store.list(quality_day_prefix("spot", symbol, date))]
        if not files:
            raise DemoError(f"the pipeline wrote no merged Parquet for {symbol} under {store_dir / 'merged'}")
        frame = pl.concat([pl.read_parquet(store_dir / f) for f in files], how="vertical_relaxed")
        joined = merged_intervals(frame)
        gaps = [(joined[i][1] + 1, joined[i + 1][0] - 1) for i in range(len(joined) - 1)]
        anchor = (
            frame.filter(pl.col("is_snapshot")).select(pl.col("last_update_id").min()).item()
            if frame.filter(pl.col("is_snapshot")).height
            else None
        )
        events = (
            frame.filter(~pl.col("is_snapshot")).select("first_update_id", "last_update_id").unique().height
        )
        by_source = dict(
            frame.filter(~pl.col("is_snapshot"))
            .unique(["first_update_id", "last_update_id"])
            .group_by("source")
            .len()
            .iter_rows()
        )
        # ids that cannot be in the output: before the day's first image, and between a recorded gap and
        # the snapshot the book resumed from (the manifest counts those as skipped)
        unusable: list[tuple[int, int]] = [(-(2**62), anchor)] if anchor is not None else []
        for date in dates:
            key = merged_manifest_key("spot", symbol, date)
            if store.exists(key):
                for gap in orjson.loads(store.get_bytes(key)).get("gaps", []):
                    if gap.get("reanchored_at") is not None:
                        unusable.append((int(gap["first_id"]), int(gap["reanchored_at"])))
        missing: dict[str, int] = {}
        covered_gaps: dict[str, list[tuple[int, int, bool]]] = {}
        for stream in STREAMS:
            st = stats[(stream, symbol)]
            missing[stream] = sum(
                1
                for first, last in st.intervals
                if not all(covered(joined, a, b) for a, b in subtract(first, last, unusable))
            )
            covered_gaps[stream] = [(a, b, covered(joined, a, b)) for a, b in st.gaps]
        out[symbol] = MergedSummary(
            rows=frame.height,
            events=events,
            snapshot_rows=frame.filter(pl.col("is_snapshot")).height,
            by_source={str(k): int(v) for k, v in by_source.items()},
            gaps=gaps,
            parquet_files=files,
            quality_files=quality,
            missing=missing,
            covered_gaps=covered_gaps,
        )
    return out
