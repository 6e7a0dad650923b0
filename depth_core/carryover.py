"""Incremental validation across the gated cleanup: carry already-validated data of deleted raw objects over.

Why: after a verified merge the gated cleanup deletes the symbol-day's raw objects, so ``validated/`` becomes
the durable, verified copy of each stream (the cleanup never deletes it). When late raw objects arrive for
that day (a cut-off collector uploading its spool) the day must be re-validated and re-merged, but a fresh
parse would only see the raw objects that still exist. So, for every raw object the previous validated report
listed that is no longer in ``raw/``, its validated rows (events + their levels, snapshots + their levels,
quarantine lines) are taken over from the previous output, matched by object provenance (the ``obj`` column
indexes the report's object list; quarantine rows name the object key). They are unioned with a fresh parse
of the raw objects that exist now; exact duplicates are then dropped as usual. Book tickers and metadata
lines carry no object index: the previous rows that the fresh parse does not reproduce (multiset difference)
are kept.

Safety: the previous output is only trusted if it is the one its ``report.json`` describes (etags of the
files recorded in the report, or row counts for older reports). Before a carrying re-validation overwrites
the files, it copies them (with a report of the copies) to ``_carry_source/``; if it crashes half-way, the
next one carries over from that copy. If neither can be trusted, a ``CarryOverError`` stops the
re-validation and nothing is written or deleted. Level parts of a re-validation are numbered above the
previous ones, so the previous parts stay intact until the new report is written; ``replace_prefix`` then
removes them and the copy.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from depth_core.names import Market
from depth_core.storeio import get_json, put_json, put_parquet, read_parquet
from depth_core.validate import (
    BOOK_TICKERS_FILE,
    EVENTS_FILE,
    META_FILE,
    QUARANTINE_FILE,
    REPORT_FILE,
    SNAPSHOT_LEVELS_FILE,
    SNAPSHOTS_FILE,
    RawObjectRead,
    StreamDayReport,
    levels_part_key,
    validated_day_prefix,
)
from depth_store.base import ObjectInfo, ObjectStore

_PART_RE = re.compile(r"levels-(\d+)\.parquet$")
SOURCE_DIR = "_carry_source/"  # the previous files, saved before a carrying re-validation overwrites them
TRUSTED_FILES = (EVENTS_FILE, SNAPSHOTS_FILE, SNAPSHOT_LEVELS_FILE, BOOK_TICKERS_FILE, QUARANTINE_FILE, META_FILE)


class CarryOverError(RuntimeError):
    """The previous validated output cannot be trusted while some of its raw objects are gone."""


@dataclass
class CarryOver:
    """What a re-validation takes over from the previous validated output of the stream-day."""

    objects: list[RawObjectRead] = field(default_factory=list)  # the gone objects, new indexes 0..k-1
    events: pl.DataFrame | None = None  # obj/ev/part renumbered
    snapshots: pl.DataFrame | None = None
    snapshot_levels: pl.DataFrame | None = None
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    level_parts: list[str] = field(default_factory=list)  # new parts already written
    levels: int = 0
    prev_book_tickers: pl.DataFrame | None = None
    prev_meta: pl.DataFrame | None = None
    price_decimals: int | None = None
    qty_decimals: int | None = None
    next_part: int = 0  # first level part number the fresh parse may use

    @property
    def n_events(self) -> int:
        return 0 if self.events is None else self.events.height

    @property
    def n_snapshots(self) -> int:
        return 0 if self.snapshots is None else self.snapshots.height

    def seed(self, report: StreamDayReport, events_parts: list[pl.DataFrame], snaps_parts: list[pl.DataFrame],
             snap_lv_parts: list[pl.DataFrame], quarantine: list[dict[str, Any]], written: set[str],
             price_dec: Counter[int], qty_dec: Counter[int]) -> tuple[int, int, int]:
        """Put the carried rows first into validation's accumulators; returns (n_events, n_snaps, next part)."""
        report.objects.extend(self.objects)
        report.lines_read += sum(o.events + o.quarantined for o in self.objects)
        if self.events is not None and self.events.height:
            events_parts.append(self.events)
        if self.snapshots is not None and self.snapshots.height:
            snaps_parts.append(self.snapshots)
        if self.snapshot_levels is not None and self.snapshot_levels.height:
            snap_lv_parts.append(self.snapshot_levels)
        quarantine.extend(self.quarantine)
        written.update(self.level_parts)
        report.level_parts.extend(self.level_parts)
        report.levels += self.levels
        if self.levels and self.price_decimals is not None and self.qty_decimals is not None:
            price_dec[self.price_decimals] += self.levels
            qty_dec[self.qty_decimals] += self.levels
        return self.n_events, self.n_snapshots, self.next_part

    def union_book_tickers(self, fresh: pl.DataFrame) -> pl.DataFrame:
        """Fresh book tickers plus the previous ones the fresh parse did not reproduce."""
        if self.prev_book_tickers is None or not self.objects:
            return fresh
        return _multiset_union(fresh, self.prev_book_tickers)

    def union_meta(self, fresh: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """Fresh metadata lines plus the previous ones the fresh parse did not reproduce."""
        if self.prev_meta is None or not self.objects:
            return fresh
        extra = Counter(self.prev_meta.iter_rows()) - Counter(fresh)
        out = list(fresh)
        for row, n in extra.items():
            out.extend([(int(row[0]), bytes(row[1]))] * n)
        return sorted(out, key=lambda r: r[0])


def _multiset_union(fresh: pl.DataFrame, prev: pl.DataFrame) -> pl.DataFrame:
    cols = list(fresh.columns)
    prev = prev.select(cols).cast(dict(fresh.schema))  # type: ignore[arg-type]
    occ = pl.int_range(pl.len()).over(cols).alias("_occ")
    missing = prev.with_columns(occ).join(fresh.with_columns(occ), on=[*cols, "_occ"], how="anti",
                                          nulls_equal=True)
    if not missing.height:
        return fresh
    return pl.concat([fresh, missing.drop("_occ")]).sort("receive_ns", maintain_order=True)


def _part_no(key: str) -> int | None:
    m = _PART_RE.search(key)
    return int(m.group(1)) if m else None


def _read_source(store: ObjectStore, src: str, prev: dict[str, Any], market: Market, stream: str, symbol: str,
                 date: str) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Events and snapshots under ``src``, and why they are not the ones ``prev`` (its report) describes."""
    problems: list[str] = []
    files = prev.get("files") or {}
    for name in TRUSTED_FILES:
        info = store.head(src + name)
        if info is None:
            problems.append(f"{name} is missing")
        elif files.get(name) is not None and info.etag != files[name]:
            problems.append(f"{name} is not the version its report recorded")
    if problems:
        return pl.DataFrame(), pl.DataFrame(), problems
    events = read_parquet(store, src + EVENTS_FILE)
    snapshots = read_parquet(store, src + SNAPSHOTS_FILE)
    if events.height != int(prev.get("events", 0)) + int(prev.get("duplicates", 0)):
        problems.append("events.parquet row count differs from its report")
    if snapshots.height != int(prev.get("snapshots", 0)):
        problems.append("snapshots.parquet row count differs from its report")
    for part in sorted(set(events["part"].to_list())) if events.height else []:
        if store.head(levels_part_key(market, stream, symbol, date, part)) is None:
            problems.append(f"level part {part} is missing")
    return events, snapshots, problems


def _save_source(store: ObjectStore, prefix: str, prev: dict[str, Any]) -> None:
    """Copy the trusted previous files to ``SOURCE_DIR`` before they are overwritten (report last).

    A re-validation that crashes between its file writes and its ``report.json`` leaves files that match no
    report; the next one then carries over from this copy. ``replace_prefix`` removes it after a success.
    """
    etags: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="depth-carry-") as tmp:
        path = Path(tmp) / "file"
        for name in TRUSTED_FILES:
            store.get_file(prefix + name, path)
            etags[name] = store.put_file(prefix + SOURCE_DIR + name, path).etag
    put_json(store, prefix + SOURCE_DIR + REPORT_FILE, {**prev, "files": etags})


def _max_part(report: dict[str, Any]) -> int:
    return max((n for n in (_part_no(k) for k in report.get("level_parts", [])) if n is not None), default=-1)


def load_carryover(store: ObjectStore, market: Market, stream: str, symbol: str, date: str,
                   infos: Sequence[ObjectInfo]) -> CarryOver:
    """The rows to carry over for the raw objects of the previous report that are no longer in ``infos``."""
    prefix = validated_day_prefix(market, stream, symbol, date)
    if store.head(prefix + REPORT_FILE) is None:
        return CarryOver()
    prev: dict[str, Any] = get_json(store, prefix + REPORT_FILE)
    out = CarryOver(next_part=_max_part(prev) + 1)
    present = {i.key for i in infos}
    if all(o["key"] in present for o in prev.get("objects", [])):
        return out

    src = prefix
    events, snapshots, problems = _read_source(store, prefix, prev, market, stream, symbol, date)
    if not problems:
        _save_source(store, prefix, prev)
    else:  # a re-validation crashed half-way: carry over from the copy it saved first
        backup = prefix + SOURCE_DIR
        saved = store.head(backup + REPORT_FILE) is not None
        prev_b: dict[str, Any] = get_json(store, backup + REPORT_FILE) if saved else {}
        events, snapshots, problems_b = (_read_source(store, backup, prev_b, market, stream, symbol, date)
                                         if saved else (events, snapshots, ["no saved copy"]))
        if problems_b:
            raise CarryOverError(
                f"raw objects of {stream} {symbol} {date} were deleted after a merge, but the validated output "
                f"under {prefix} cannot be trusted ({'; '.join(problems)}; {SOURCE_DIR}: {'; '.join(problems_b)})"
                "; refusing to rebuild the day from it — nothing was written or deleted")
        src, prev = backup, prev_b
        out.next_part = max(out.next_part, _max_part(prev) + 1)
    prev_objects: list[dict[str, Any]] = list(prev.get("objects", []))
    gone = [i for i, o in enumerate(prev_objects) if o["key"] not in present]
    carried_ev = events.filter(pl.col("obj").is_in(gone)).sort("ev")
    carried_parts = sorted(set(carried_ev["part"].to_list()))
    del events

    obj_map = pl.DataFrame({"obj": gone, "new_obj": list(range(len(gone)))},
                           schema={"obj": pl.Int32, "new_obj": pl.Int32})
    for o in (prev_objects[i] for i in gone):
        out.objects.append(RawObjectRead(o["key"], int(o["size"]), o.get("etag"), list(o.get("event_dates", [])),
                                         int(o.get("events", 0)), int(o.get("quarantined", 0)), carried=True))
    gone_keys = {prev_objects[i]["key"] for i in gone}

    # events: new ev 0..n-1 (carried rows come first), obj -> new index, part -> new part number
    carried_ev = carried_ev.drop("dup", strict=False).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("new_ev"))
    part_map = {p: out.next_part + i for i, p in enumerate(carried_parts)}
    for old_part, new_part in part_map.items():
        mapping = carried_ev.filter(pl.col("part") == old_part).select("ev", "new_ev")
        lv = read_parquet(store, levels_part_key(market, stream, symbol, date, old_part))
        lv = lv.join(mapping, on="ev", how="inner", maintain_order="left").select(
            pl.col("new_ev").alias("ev"), "is_bid", "price", "qty")
        key = levels_part_key(market, stream, symbol, date, new_part)
        put_parquet(store, key, lv, 131_072, True)
        out.level_parts.append(key)
        out.levels += lv.height
    out.next_part += len(carried_parts)
    out.events = carried_ev.join(obj_map, on="obj", how="left", maintain_order="left").with_columns(
        pl.col("new_obj").alias("obj"), pl.col("new_ev").alias("ev"),
        pl.col("part").replace_strict(part_map, return_dtype=pl.Int32).alias("part"),
    ).drop("new_obj", "new_ev")

    # snapshots and their levels
    carried_sn = snapshots.filter(pl.col("obj").is_in(gone)).sort("snap").with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("new_snap"))
    if carried_sn.height:
        slv = read_parquet(store, src + SNAPSHOT_LEVELS_FILE)
        out.snapshot_levels = slv.join(carried_sn.select("snap", "new_snap"), on="snap", how="inner",
                                       maintain_order="left").select(
            pl.col("new_snap").alias("snap"), "is_bid", "price", "qty")
        out.snapshots = carried_sn.join(obj_map, on="obj", how="left", maintain_order="left").with_columns(
            pl.col("new_obj").alias("obj"), pl.col("new_snap").alias("snap")).drop("new_obj", "new_snap")

    q = read_parquet(store, src + QUARANTINE_FILE)
    out.quarantine = q.filter(pl.col("object_key").is_in(list(gone_keys))).to_dicts()
    out.prev_book_tickers = read_parquet(store, src + BOOK_TICKERS_FILE)
    out.prev_meta = read_parquet(store, src + META_FILE)
    out.price_decimals = prev.get("price_decimals")
    out.qty_decimals = prev.get("qty_decimals")
    return out
