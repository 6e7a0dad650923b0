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

Safety: the previous output is only used if every file its ``report.json`` names exists and is the version
the report recorded (etags, and row counts). Validated files have run-unique names and the previous ones are
deleted only after the new report is committed, so a re-validation that crashes half-way leaves the
previous report and its files intact for the next one. If they cannot be trusted, a ``MissingStateError``
(a ``CarryOverError``) stops the re-validation, naming the deleted objects; nothing is deleted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from depth_core.level_parts import read_level_part
from depth_core.storeio import read_parquet
from depth_core.validated_layout import (
    BOOK_TICKERS_FILE,
    DATA_FILES,
    EVENTS_FILE,
    META_FILE,
    QUARANTINE_FILE,
    SNAPSHOT_LEVELS_FILE,
    SNAPSHOTS_FILE,
    MissingStateError,
    RawObjectRead,
    level_part_keys,
    validated_file_key,
)
from depth_store.base import ObjectInfo, ObjectStore


# What the carry-over needs of the validation's symbol-day builder and file writer (``validate._SymbolDay``,
# ``validate._Writer``), stated here so that this module does not import the validation that calls it.
class _RowBuffer(Protocol):
    def add(self, frame: pl.DataFrame) -> None: ...


class _ReportObjects(Protocol):
    lines_read: int
    levels: int

    @property
    def objects(self) -> list[RawObjectRead]: ...

    @property
    def level_parts(self) -> list[str]: ...


class SymbolDaySeed(Protocol):
    """The symbol-day being validated, which the carried rows are seeded into."""

    n_events: int
    n_snaps: int
    part: int

    @property
    def stream(self) -> str: ...

    @property
    def symbol(self) -> str: ...

    @property
    def date(self) -> str: ...

    @property
    def prefix(self) -> str: ...

    @property
    def prev(self) -> dict[str, Any] | None: ...

    @property
    def report(self) -> _ReportObjects: ...

    @property
    def events(self) -> _RowBuffer: ...

    @property
    def snapshots(self) -> _RowBuffer: ...

    @property
    def snapshot_levels(self) -> _RowBuffer: ...

    @property
    def quarantine(self) -> list[dict[str, Any]]: ...

    @property
    def price_dec(self) -> Counter[int]: ...

    @property
    def qty_dec(self) -> Counter[int]: ...

    def part_key(self, part: int) -> str: ...


class RunWriter(Protocol):
    """Writes a file of this run (so that a failed run removes it)."""

    def parquet(
        self, key: str, frame: pl.DataFrame, fast: bool = False, wait: bool = True
    ) -> ObjectInfo | None: ...

    def level_part(self, key: str, frame: pl.DataFrame, wait: bool = True) -> None: ...


class CarryOverError(MissingStateError):
    """The previous validated output cannot be trusted while some of its raw objects are gone."""


@dataclass
class CarryOver:
    """What a re-validation keeps of the previous output besides the rows seeded into the symbol-day."""

    prev_book_tickers: pl.DataFrame
    prev_meta: pl.DataFrame

    def union_book_tickers(self, fresh: pl.DataFrame) -> pl.DataFrame:
        """Fresh book tickers plus the previous ones the fresh parse did not reproduce."""
        return _multiset_union(fresh, self.prev_book_tickers)

    def union_meta(self, fresh: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """Fresh metadata lines plus the previous ones the fresh parse did not reproduce."""
        extra = Counter(self.prev_meta.iter_rows()) - Counter(fresh)
        out = list(fresh)
        for row, n in extra.items():
            out.extend([(int(row[0]), bytes(row[1]))] * n)
        return sorted(out, key=lambda r: r[0])


def _multiset_union(fresh: pl.DataFrame, prev: pl.DataFrame) -> pl.DataFrame:
    cols = list(fresh.columns)
    prev = prev.select(cols).cast(dict(fresh.schema))  # type: ignore[arg-type]
    occ = pl.int_range(pl.len()).over(cols).alias("_occ")
    missing = prev.with_columns(occ).join(
        fresh.with_columns(occ), on=[*cols, "_occ"], how="anti", nulls_equal=True
    )
    if not missing.height:
        return fresh
    return pl.concat([fresh, missing.drop("_occ")]).sort("receive_ns", maintain_order=True)


def _untrusted(store: ObjectStore, prev: dict[str, Any]) -> list[str]:
    """Why the files ``prev`` (a committed report) names are not the ones it describes (empty: trusted)."""
    problems: list[str] = []
    recorded = prev.get("files") or {}
    for name in DATA_FILES:
        key = validated_file_key(prev, name)
        info = store.head(key)
        if info is None:
            problems.append(f"{key} is missing")
        elif recorded.get(name) is not None and info.etag != recorded[name]:
            problems.append(f"{key} is not the version its report recorded")
    return problems


def load_carryover(
    store: ObjectStore, b: SymbolDaySeed, present: set[str], writer: RunWriter
) -> CarryOver | None:
    """Seed ``b`` with the rows of the raw objects its previous report lists that are no longer in
    ``present``.

    Carried objects come first in the new report (``carried``), their events and snapshots renumbered from 0,
    their level rows rewritten into this run's first level parts.
    """
    prev = b.prev
    if prev is None:
        return None
    prev_objects: list[dict[str, Any]] = list(prev.get("objects", []))
    gone = [i for i, o in enumerate(prev_objects) if o["key"] not in present]
    if not gone:
        return None
    gone_keys = [prev_objects[i]["key"] for i in gone]

    def refuse(problems: list[str]) -> CarryOverError:
        return CarryOverError(
            f"raw objects of {b.stream} {b.symbol} {b.date} were deleted after a merge ({len(gone_keys)}: "
            f"{', '.join(gone_keys[:5])}{' ...' if len(gone_keys) > 5 else ''}), "
            f"but the validated output under {b.prefix} cannot be trusted ({'; '.join(problems)}); "
            "refusing to rebuild the day from it — nothing was deleted"
        )

    problems = _untrusted(store, prev)
    if problems:
        raise refuse(problems)
    events = read_parquet(store, validated_file_key(prev, EVENTS_FILE))
    snapshots = read_parquet(store, validated_file_key(prev, SNAPSHOTS_FILE))
    if events.height != int(prev.get("events", 0)) + int(prev.get("duplicates", 0)):
        problems.append("events.parquet row count differs from its report")
    if snapshots.height != int(prev.get("snapshots", 0)):
        problems.append("snapshots.parquet row count differs from its report")
    carried_ev = events.filter(pl.col("obj").is_in(gone)).sort("ev")
    del events
    parts = level_part_keys(prev)
    carried_parts = sorted(set(carried_ev["part"].to_list()))
    problems += [f"level part {p} is not listed by its report" for p in carried_parts if p not in parts]
    problems += [
        f"{parts[p]} is missing" for p in carried_parts if p in parts and store.head(parts[p]) is None
    ]
    if problems:
        raise refuse(problems)

    rep = b.report
    obj_map = pl.DataFrame(
        {"obj": gone, "new_obj": list(range(len(gone)))}, schema={"obj": pl.Int32, "new_obj": pl.Int32}
    )
    for o in (prev_objects[i] for i in gone):
        rep.objects.append(
            RawObjectRead(
                o["key"],
                int(o["size"]),
                o.get("etag"),
                list(o.get("event_dates", [])),
                int(o.get("events", 0)),
                int(o.get("quarantined", 0)),
                carried=True,
            )
        )
    rep.lines_read += sum(o.events + o.quarantined for o in rep.objects)

    # events: new ev 0..n-1 (carried rows come first), obj -> new index, part -> this run's part numbers
    carried_ev = carried_ev.drop("dup", strict=False).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("new_ev")
    )
    part_map: dict[int, int] = {}
    for old_part in carried_parts:
        mapping = carried_ev.filter(pl.col("part") == old_part).select("ev", "new_ev")
        lv = read_level_part(store, parts[old_part])
        lv = lv.join(mapping, on="ev", how="inner", maintain_order="left").select(
            pl.col("new_ev").alias("ev"), "is_bid", "price", "qty"
        )
        key = b.part_key(b.part)
        writer.level_part(key, lv)
        part_map[old_part] = b.part
        b.part += 1
        rep.level_parts.append(key)
        rep.levels += lv.height
        if lv.height and prev.get("price_decimals") is not None and prev.get("qty_decimals") is not None:
            b.price_dec[int(prev["price_decimals"])] += lv.height
            b.qty_dec[int(prev["qty_decimals"])] += lv.height
    carried_ev = (
        carried_ev.join(obj_map, on="obj", how="left", maintain_order="left")
        .with_columns(
            pl.col("new_obj").alias("obj"),
            pl.col("new_ev").alias("ev"),
            pl.col("part").replace_strict(part_map, return_dtype=pl.Int32).alias("part"),
        )
        .drop("new_obj", "new_ev")
    )
    b.events.add(carried_ev)
    b.n_events = carried_ev.height

    # snapshots and their levels
    carried_sn = (
        snapshots.filter(pl.col("obj").is_in(gone))
        .sort("snap")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("new_snap"))
    )
    if carried_sn.height:
        slv = read_parquet(store, validated_file_key(prev, SNAPSHOT_LEVELS_FILE))
        b.snapshot_levels.add(
            slv.join(
                carried_sn.select("snap", "new_snap"), on="snap", how="inner", maintain_order="left"
            ).select(pl.col("new_snap").alias("snap"), "is_bid", "price", "qty")
        )
        b.snapshots.add(
            carried_sn.join(obj_map, on="obj", how="left", maintain_order="left")
            .with_columns(pl.col("new_obj").alias("obj"), pl.col("new_snap").alias("snap"))
            .drop("new_obj", "new_snap")
        )
        b.n_snaps = carried_sn.height

    q = read_parquet(store, validated_file_key(prev, QUARANTINE_FILE))
    b.quarantine.extend(q.filter(pl.col("object_key").is_in(gone_keys)).to_dicts())
    return CarryOver(
        read_parquet(store, validated_file_key(prev, BOOK_TICKERS_FILE)),
        read_parquet(store, validated_file_key(prev, META_FILE)),
    )
