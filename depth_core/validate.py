"""Validate a stream-day: raw objects -> typed Parquet per symbol under ``validated/`` + reports.

Why a per-stream step: each stream (collector region) is checked on its own first — what it received, what
was malformed, where its own id chain broke — so the merge works on clean typed columns and the report
tells an operator which region had trouble.

One pass per stream-day: a v2 raw object holds every symbol of its stream (v1 objects one symbol each), so
:func:`validate_stream_day` reads each object of the stream-day once, however many symbols it holds, and
splits every symbol into its own validated output (``validated/market=/stream=/symbol=/date=/``); merges
stay per symbol-day. ``validate_symbol_day`` is the same pass restricted to one symbol.

Day boundary: an event belongs to the UTC day of its exchange time ``E``; raw objects are filed by the day of
their first *receive* time. So besides the objects of day D this reads the objects of D-1 that started in
its last hour and the objects of D+1 that started in its first hour (``EDGE_NS``) and keeps exactly the
events whose ``E`` falls on D. Each raw object read is listed with the set of event dates it holds, so the
gated cleanup deletes an object only once every one of those days was merged.

Memory: objects are processed in batches (``BATCH_BYTES`` of compressed input). Each symbol's rows wait in
a buffer; level rows go to the symbol's next level part when its buffer reaches ``PART_ROWS``, and when all
buffers together pass ``BUFFER_BYTES`` the largest are flushed (levels to a part, the other tables to spill
files read back once at the end). So memory is bounded by one batch plus ``BUFFER_BYTES`` plus the largest
symbol-day's event table, whatever the number of symbols.

Run-unique names, committed by the report: every file a validation writes is named ``{run_id}-...``; the
symbol-day's ``report.json``, written last (a compare-and-swap against the report it replaces where the store
supports it), names them (``keys``); readers read exactly those. The files of the replaced report are deleted
only after the new report is in place, and a run never deletes files it did not write or that no report it
replaced named, so two validations of one day can never delete each other's files.

Missing state is an error: after a cleanup the validated output is the only copy of the deleted raw objects.
If a raw object that the previous report, the stream-day report or the merged manifest says held a
symbol-day is gone and its rows cannot be carried over (the report or a file it names is missing or not the
version recorded), validation stops with :class:`MissingStateError` naming the objects; nothing is deleted.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import secrets
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from depth_core.carryover import load_carryover
from depth_core.days import DAY_MS, date_of_day_index, day_index
from depth_core.events import (
    BOOK_TICKER_SCHEMA,
    SYM_COLUMN,
    ParsedChunk,
    QuarantineEntry,
    join_objects,
    parse_objects,
    symbol_decimal_counts,
)
from depth_core.idline import gaps_between, union_ranges
from depth_core.level_parts import LEVEL_COLUMNS, put_level_part, release_tick_arrays
from depth_core.memory import pass_settings, release_free_memory
from depth_core.names import Market, validate_collector_id, validate_date, validate_market, validate_symbol
from depth_core.raw_format import (
    RawFormatError,
    RawObjectKey,
    decompress,
    stream_date_prefix,
    stream_day_prefix,
    stream_prefix,
)
from depth_core.storeio import get_json, put_parquet, read_parquet
from depth_core.validated_layout import (
    BOOK_TICKERS_FILE,
    COMPACT_SYMBOL_DATES_VERSION,
    DATA_FILES,
    EVENTS_FILE,
    META_FILE,
    QUARANTINE_FILE,
    REPORT_FILE,
    SNAPSHOT_LEVELS_FILE,
    SNAPSHOTS_FILE,
    MissingStateError,
    RawObjectRead,
    compact_symbol_event_dates,
    object_dates_of,
    object_symbol_dates,
    stream_day_report_key,
    stream_day_report_version,
    validated_day_prefix,
    validated_stream_day_prefix,
)
from depth_store.base import ObjectInfo, ObjectNotFoundError, ObjectStore, StoreError

EDGE_NS = 3600 * 10**9
# Compressed raw input per batch. Kept so that a batch's text (~5-6x this) and the parser's per-batch level
# columns (as many bytes as the text) stay under glibc's largest mmap threshold (32 MiB): then they are
# reused from batch to batch, where larger ones were mapped, page-faulted, zeroed and unmapped (a TLB
# shootdown across the validation's threads) every batch: at 8 MiB, 2x the page faults and ~4 CPU-s more
# system time per BTCUSDT day (benchmarks/NOTES.md, "Seventh session").
BATCH_BYTES = 4 << 20
# Text parsed at once, whatever the objects' compression ratio (real Binance lines gzip ~8x: 4 MiB of them
# would be ~32 MiB of text): a batch with more is parsed in pieces of whole objects, for the same reason.
TEXT_BYTES = 28 << 20
PART_ROWS = 1_000_000  # level rows of one symbol per level part (memory: a few parts are in memory at once)
BUFFER_BYTES = 512 << 20  # rows waiting in all symbols' buffers before the largest are flushed
PREFETCH = 2
COMMIT_THREADS = 4  # symbol-days whose files are written and reports committed at once (many small PUTs)
STATE_THREADS = 8  # symbol-days whose previous state (report, merged manifest) is read at once
REPORT_VERSION = 2
ORPHAN_AGE = dt.timedelta(
    days=1
)  # unlisted files older than this (a crashed run's) are removed by the next run

QUARANTINE_SCHEMA = {
    "object_key": pl.String(),
    "line_no": pl.Int64(),
    "receive_ns": pl.Int64(),
    "reason": pl.String(),
    "text": pl.Binary(),
}
META_SCHEMA = {"receive_ns": pl.Int64, "text": pl.Binary}


class ConcurrentValidationError(RuntimeError):
    """Another validation committed the symbol-day's report while this one ran; this run's files were
    removed."""


# ------------------------------------------------------------------------------------------------ keys


def read_symbol_day_report(
    store: ObjectStore, market: Market, stream: str, symbol: str, date: str
) -> tuple[dict[str, Any], str | None] | None:
    """The committed report of a validated symbol-day and its etag, or None if there is none.

    The etag is the version read (the same before and after the read), so a compare-and-swap against it
    replaces exactly the report whose files were used.
    """
    data, etag = _read_json_version(store, validated_day_prefix(market, stream, symbol, date) + REPORT_FILE)
    return None if data is None else (data, etag)


def new_run_id() -> str:
    """Sortable by start time, unique: ``YYYYmmddTHHMMSS`` + random."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(4)


# ------------------------------------------------------------------------------------------------ reports


@dataclass
class SymbolDayReport:
    """The validation of one stream-symbol-day (``report.json``)."""

    market: str
    stream: str
    symbol: str
    date: str
    events: int = 0
    levels: int = 0
    duplicates: int = 0
    snapshots: int = 0
    book_tickers: int = 0
    meta_lines: int = 0
    lines_read: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    other_day_events: int = 0
    first_update_id: int | None = None
    last_update_id: int | None = None
    first_exchange_ms: int | None = None
    last_exchange_ms: int | None = None
    segments: list[tuple[int, int]] = field(default_factory=list)  # covered (lo, hi] id ranges
    gaps: list[tuple[int, int]] = field(default_factory=list)  # holes (lo, hi] between segments
    covered_ids: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    clock_offset_ms: float | None = None  # min(receive - E): offset + smallest network delay
    price_decimals: int | None = None
    qty_decimals: int | None = None
    mixed_decimals_levels: int = 0
    objects: list[RawObjectRead] = field(default_factory=list)
    level_parts: list[str] = field(default_factory=list)  # keys, in part order
    files: dict[str, str | None] = field(
        default_factory=dict
    )  # data file name -> etag of the version written
    keys: dict[str, str] = field(default_factory=dict)  # data file name -> key (run-unique)
    prefix: str = ""
    run_id: str = ""
    version: int = REPORT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """As ``dataclasses.asdict`` with the id ranges as lists; not ``asdict`` itself, whose generic deep
        copy of the ~10^4 objects read took 75 ms per report (only the containers are copied here)."""
        out = {name: getattr(self, name) for name in _SYMBOL_DAY_REPORT_FIELDS}
        out["quarantine_reasons"] = dict(self.quarantine_reasons)
        out["segments"] = [list(s) for s in self.segments]
        out["gaps"] = [list(g) for g in self.gaps]
        out["objects"] = [o.to_dict() for o in self.objects]
        out["level_parts"] = list(self.level_parts)
        out["files"] = dict(self.files)
        out["keys"] = dict(self.keys)
        return out

    @property
    def has_data(self) -> bool:
        return self.events > 0

    def file_key(self, name: str) -> str:
        return self.keys.get(name, self.prefix + name)


_SYMBOL_DAY_REPORT_FIELDS = tuple(f.name for f in fields(SymbolDayReport))


@dataclass
class StreamObject:
    """One raw object of the stream-day report: what the cleanup needs to know before deleting it."""

    key: str
    size: int
    etag: str | None
    layout: int
    symbols: list[str] = field(default_factory=list)  # symbols whose lines it holds
    event_dates: list[str] = field(default_factory=list)  # every event date it holds (any symbol)
    symbol_event_dates: dict[str, list[str]] = field(default_factory=dict)  # per symbol
    carried: bool = False  # gone from raw/; known from the previous stream-day report
    # symbols whose lines no validation has dated yet (a run of chosen symbols skips the others' lines): the
    # cleanup keeps the object until one has
    undated: list[str] = field(default_factory=list)


@dataclass
class StreamDayValidation:
    """Outcome of :func:`validate_stream_day` (its ``to_dict()`` is ``_stream_day.json``)."""

    market: str
    stream: str
    date: str
    run_id: str
    symbols_filter: list[str] | None
    reports: dict[str, SymbolDayReport] = field(default_factory=dict)  # the symbol-days validated by this run
    objects: list[StreamObject] = field(default_factory=list)
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)  # per symbol: counts, report key, run
    unattributed_quarantined: int = 0  # v2 lines naming no symbol (bad header): kept in quarantine_key
    quarantine_key: str | None = None
    stats: dict[str, int] = field(default_factory=dict)  # objects read, batches, bytes, buffer peak, flushes

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("reports", "objects")}
        # asdict() is slow for 10^5 objects; symbol_event_dates in the compact form (validated_layout)
        out["objects"] = [
            {
                **{k: v for k, v in o.__dict__.items() if k != "undated" or v},  # written only when any
                "symbol_event_dates": compact_symbol_event_dates(
                    [s for s in o.symbols if s not in o.undated] if o.undated else o.symbols,
                    o.event_dates,
                    o.symbol_event_dates,
                ),
            }
            for o in self.objects
        ]
        out["version"] = COMPACT_SYMBOL_DATES_VERSION
        return out

    @property
    def report_key(self) -> str:
        return stream_day_report_key(self.market, self.stream, self.date)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ listing


Listed = tuple[ObjectInfo, RawObjectKey]


def _window(date: str) -> list[tuple[str, int, int]]:
    """(receive day, lo, hi): objects of D, of D-1 that started in its last hour, of D+1 in its first hour."""
    start_ns = day_index(date) * DAY_MS * 10**6
    end_ns = start_ns + DAY_MS * 10**6
    return [
        (date_of_day_index(day_index(date) - 1), start_ns - EDGE_NS, start_ns),
        (date, 0, 1 << 63),
        (date_of_day_index(day_index(date) + 1), end_ns, end_ns + EDGE_NS),
    ]


def _v1_symbols(store: ObjectStore, market: Market, stream: str) -> list[str]:
    """Symbols with v1 objects under the stream (any day): one short listing per symbol (skip-scan)."""
    base = stream_prefix(market, stream) + "symbol="
    out: list[str] = []
    after: str | None = None
    while True:
        first = next(iter(store.list(base, start_after=after)), None)
        if first is None:
            return out
        sym = first.key[len(base) :].split("/", 1)[0]
        out.append(sym)
        after = f"{base}{sym}0"  # '0' sorts right after '/': skips every key of this symbol


def list_stream_day(
    store: ObjectStore, market: Market, stream: str, date: str, symbols: Collection[str] | None = None
) -> list[Listed]:
    """The raw objects of a stream-day (v2 objects, and v1 objects of ``symbols`` or of every symbol), with
    the neighbouring hours across midnight, in order of first receive time."""
    out: list[Listed] = []
    v1_symbols = sorted(symbols) if symbols is not None else _v1_symbols(store, market, stream)
    for day, lo, hi in _window(date):
        prefixes = [stream_date_prefix(market, stream, day)]
        prefixes += [stream_day_prefix(market, stream, s, day) for s in v1_symbols]
        for prefix in prefixes:
            for info in store.list(prefix):
                try:
                    key = RawObjectKey.parse(info.key)
                except RawFormatError:
                    continue  # foreign object: not ours to read (nor to delete)
                if lo <= key.first_receive_ns < hi:
                    out.append((info, key))
    out.sort(key=lambda x: (x[1].first_receive_ns, x[0].key))
    return out


def runs_within(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Runs ``[lo, hi)`` of consecutive items whose sizes add up to at most ``limit`` (an item larger than
    that alone), in order: how raw objects are cut into batches (compressed bytes) and a batch's texts into
    pieces (text bytes)."""
    out: list[tuple[int, int]] = []
    lo, total = 0, 0
    for i, n in enumerate(sizes):
        if i > lo and total + n > limit:
            out.append((lo, i))
            lo, total = i, 0
        total += n
    if lo < len(sizes):
        out.append((lo, len(sizes)))
    return out


def _fetch_batch(store: ObjectStore, batch: list[Listed]) -> tuple[list[bytes], list[str | None]]:
    """Get and gunzip one batch of objects (runs on a helper thread).

    Joined by the caller, on the thread that parses and frees the batch: a batch's text allocated on a
    helper thread lives in that thread's malloc arena, whose heap is released when the batch is freed and
    mapped (and zeroed) again for the next one: 20 % more page faults, ~1.5 CPU-s of system time a BTCUSDT
    day (benchmarks/NOTES.md, "Seventh session")."""
    texts = [decompress(store.get_bytes(info.key)) for info, _key in batch]
    return [t for t, _p in texts], [p for _t, p in texts]


def _day_of(ms: pl.Expr) -> pl.Expr:
    return ms.floordiv(DAY_MS)


def _snap_day() -> pl.Expr:
    return _day_of(pl.coalesce(pl.col("E"), pl.col("receive_ns") // 10**6))


# ------------------------------------------------------------------------------------------------ one symbol


ONE_ROW_GROUP_ROWS = 1 << 22
"""Row groups of the per-event and per-line files: one for a symbol-day of up to 4 M events, so a reader
(the merge's :func:`depth_core.storeio.read_arrow`) gets each column in one chunk, with no copy to join them
(a bench day: two copies of 70 MB)."""


class _Writer:
    """The files one run writes (run-unique names), so that a failed run removes exactly its own."""

    def __init__(self, store: ObjectStore, pool: cf.ThreadPoolExecutor) -> None:
        self.store = store
        self.pool = pool
        self.written: set[str] = set()
        self.lock = threading.Lock()
        self.pending: list[cf.Future[ObjectInfo]] = []

    def parquet(
        self, key: str, frame: pl.DataFrame | pa.Table, fast: bool = False, wait: bool = True
    ) -> ObjectInfo | None:
        with self.lock:
            self.written.add(key)
        if wait:  # not fast: a table of one row per event or line (events, snapshots): ints delta-encoded
            return put_parquet(
                self.store, key, frame, 131_072 if fast else ONE_ROW_GROUP_ROWS, fast, delta_ints=not fast
            )
        self.pending.append(self.pool.submit(put_parquet, self.store, key, frame, 131_072, fast))
        self._bound_pending()
        return None

    def level_part(self, key: str, frame: pl.DataFrame | list[pl.DataFrame], wait: bool = True) -> None:
        """A level part (``depth_core.level_parts``: exact integer ticks where they exist)."""
        with self.lock:
            self.written.add(key)
        if wait:
            put_level_part(self.store, key, frame)
            return
        self.pending.append(self.pool.submit(put_level_part, self.store, key, frame))
        self._bound_pending()

    def _bound_pending(self) -> None:
        while len(self.pending) > 1:  # at most one part in flight (bounded memory)
            self.pending.pop(0).result()

    def forget(self, keys: set[str]) -> None:
        with self.lock:
            self.written -= keys

    def drain(self) -> None:
        while self.pending:
            self.pending.pop(0).result()

    def discard(self, keys: Iterable[str] | None = None) -> None:
        """Remove files of this run (all of them by default); best effort: used on the way out of a
        failure."""
        with self.lock:
            doomed = list(self.written if keys is None else keys)
        for f in self.pending:
            with contextlib.suppress(Exception):
                f.result()
        self.pending.clear()
        if doomed:
            with contextlib.suppress(StoreError):
                self.store.delete_many(doomed)


class _PendingFile(NamedTuple):
    """A file :meth:`_SymbolDay.finish` built, written by the caller before the report is committed."""

    key: str
    frame: pl.DataFrame | pa.Table  # the events file: an Arrow table over the buffered chunks (no copy)
    fast: bool = False
    level_part: bool = False

    @property
    def nbytes(self) -> int:
        return int(self.frame.nbytes if isinstance(self.frame, pa.Table) else self.frame.estimated_size())


@dataclass
class _Buffer:
    frames: list[pl.DataFrame] = field(default_factory=list)
    spills: list[str] = field(default_factory=list)
    bytes: int = 0

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.frames.append(frame)
            self.bytes += int(frame.estimated_size())


class _SymbolDay:
    """Accumulates one symbol's rows across batches and writes its validated output."""

    def __init__(self, market: Market, stream: str, symbol: str, date: str, run_id: str) -> None:
        self.market, self.stream, self.symbol, self.date, self.run_id = market, stream, symbol, date, run_id
        self.prefix = validated_day_prefix(market, stream, symbol, date)
        self.report = SymbolDayReport(market, stream, symbol, date, prefix=self.prefix, run_id=run_id)
        self.prev: dict[str, Any] | None = None
        self.prev_etag: str | None = None
        self.events = _Buffer()
        self.levels = _Buffer()
        self.snapshots = _Buffer()
        self.snapshot_levels = _Buffer()
        self.book_tickers = _Buffer()
        self.level_rows = 0  # buffered level rows
        self.quarantine: list[dict[str, Any]] = []
        self.meta: list[tuple[int, bytes]] = []
        self.n_events = 0
        self.n_snaps = 0
        self.part = 0
        self.spill_no = 0
        self.price_dec: Counter[int] = Counter()
        self.qty_dec: Counter[int] = Counter()
        self.omap: np.ndarray = np.zeros(0, np.int32)  # batch object index -> index into report.objects
        self.carry: Any = None

    @property
    def buffered(self) -> int:
        return (
            self.events.bytes
            + self.levels.bytes
            + self.snapshots.bytes
            + self.snapshot_levels.bytes
            + self.book_tickers.bytes
        )

    def part_key(self, part: int) -> str:
        return f"{self.prefix}{self.run_id}-levels-{part:05d}.parquet"

    def file_key(self, name: str) -> str:
        return f"{self.prefix}{self.run_id}-{name}"

    def take(
        self,
        events: pl.DataFrame,
        levels: pl.DataFrame,
        snaps: pl.DataFrame,
        snap_levels: pl.DataFrame,
        book_tickers: pl.DataFrame,
    ) -> None:
        """This symbol's rows of one batch, already numbered (``ev``/``snap``) and pointing at its objects."""
        if events.height:
            self.events.add(events)
            self.levels.add(levels)
            self.level_rows += levels.height
            self.report.levels += levels.height
            self.n_events += events.height
        if snaps.height:
            self.snapshots.add(snaps)
            self.snapshot_levels.add(snap_levels)
            self.n_snaps += snaps.height
        # every bookTicker read (edge windows too): the check joins them on u, which only the day's events
        # match, and a ticker received before midnight may belong to an event of this day
        self.book_tickers.add(book_tickers)

    def add_quarantine(self, q: QuarantineEntry, object_key: str) -> None:
        self.quarantine.append(
            {
                "object_key": object_key,
                "line_no": q.line_no,
                "receive_ns": q.receive_ns,
                "reason": q.reason,
                "text": q.text,
            }
        )
        idx = self.omap[q.object_index]
        if idx >= 0:
            self.report.objects[idx].quarantined += 1
        self.report.lines_read += 1

    def add_meta(self, ns: int, text: bytes) -> None:
        self.meta.append((ns, text))
        self.report.lines_read += 1

    def flush(self, writer: _Writer, spill: bool, defer: list[_PendingFile] | None = None) -> None:
        """Buffered levels -> the next level part; with ``spill`` also the other tables -> spill files.

        ``defer``: append the level part there instead of writing it now."""
        if self.levels.frames or any("part" not in f.columns for f in self.events.frames):
            key = self.part_key(self.part)
            frames = self.levels.frames or [pl.DataFrame(schema=LEVEL_COLUMNS)]
            if defer is not None:
                defer.append(_PendingFile(key, pl.concat(frames, rechunk=False), level_part=True))
            else:  # the frames as they are: the writer encodes them chunk by chunk (no concatenated copy)
                writer.level_part(key, frames, wait=False)
            self.report.level_parts.append(key)
            fresh = [f for f in self.events.frames if "part" not in f.columns]
            if fresh:  # one frame for the events of this part
                tagged = pl.concat(fresh).with_columns(pl.lit(self.part, pl.Int32).alias("part"))
                self.events.frames = [f for f in self.events.frames if "part" in f.columns] + [tagged]
            self.part += 1
            self.levels = _Buffer()
            self.level_rows = 0
        if spill:
            for name, buf in (
                ("events", self.events),
                ("snapshots", self.snapshots),
                ("snapshot_levels", self.snapshot_levels),
                ("book_tickers", self.book_tickers),
            ):
                if buf.frames:
                    key = f"{self.prefix}{self.run_id}-spill-{name}-{self.spill_no:05d}.parquet"
                    writer.parquet(key, pl.concat(buf.frames, how="diagonal_relaxed"), fast=True)
                    buf.spills.append(key)
                    buf.frames, buf.bytes = [], 0
            self.spill_no += 1

    def _gather(self, store: ObjectStore, buf: _Buffer, empty: pl.DataFrame) -> pl.DataFrame:
        frames = [read_parquet(store, k) for k in buf.spills] + buf.frames
        buf.frames, buf.bytes = [], 0
        return pl.concat(frames, how="diagonal_relaxed") if frames else empty

    def finish(self, store: ObjectStore, writer: _Writer) -> list[_PendingFile]:
        """Build the data files and fill in the report; returns the files to write: the last level part, then
        the data files (:data:`DATA_FILES` order), committed by the caller."""
        out: list[_PendingFile] = []
        self.flush(writer, spill=False, defer=out)
        rep = self.report
        events = self._gather(store, self.events, _empty_events())
        if not events["ev"].is_sorted():  # usually in order already (no copy then)
            events = events.sort("ev")  # ev is 0..n-1 (carried rows first): a row's ev is its position
        dup = _exact_duplicates(events)
        rep.duplicates = int(np.count_nonzero(dup))
        live = ~dup if rep.duplicates else slice(None)  # what the report counts
        rep.events = len(dup) - rep.duplicates
        if rep.events:
            lo = _lo_column(events, self.market)[live]
            hi = _column(events, "u")[live]
            rep.segments = union_ranges(lo, hi)
            rep.gaps = gaps_between(rep.segments)
            rep.covered_ids = sum(h - lo_ for lo_, h in rep.segments)
            rep.first_update_id = int(_column(events, "U")[live].min())
            rep.last_update_id = int(hi.max())
            del lo, hi
            exchange_ms = _column(events, "E")[live]
            rep.first_exchange_ms = int(exchange_ms.min())
            rep.last_exchange_ms = int(exchange_ms.max())
            lat = (_column(events, "receive_ns")[live] - exchange_ms * 10**6) / 1e6
            del exchange_ms
            rep.latency_p50_ms = float(np.percentile(lat, 50))
            rep.latency_p99_ms = float(np.percentile(lat, 99))
            rep.clock_offset_ms = float(lat.min())
            del lat
        events_file = _events_table(events, dup)
        del events
        if self.price_dec:
            rep.price_decimals = max(self.price_dec)
            rep.qty_decimals = max(self.qty_dec)
            rep.mixed_decimals_levels = (
                sum(self.price_dec.values()) - self.price_dec[rep.price_decimals]
            ) + (sum(self.qty_dec.values()) - self.qty_dec[rep.qty_decimals])
        snapshots = self._gather(store, self.snapshots, _empty_snapshots())
        snapshot_levels = self._gather(
            store,
            self.snapshot_levels,
            pl.DataFrame(
                schema={"snap": pl.Int64, "is_bid": pl.Boolean, "price": pl.Float64, "qty": pl.Float64}
            ),
        )
        book_tickers = self._gather(store, self.book_tickers, pl.DataFrame(schema=BOOK_TICKER_SCHEMA))
        meta = sorted(self.meta, key=lambda r: r[0])
        if self.carry is not None:
            book_tickers = self.carry.union_book_tickers(book_tickers)
            meta = self.carry.union_meta(meta)
        rep.snapshots = snapshots.height
        rep.book_tickers = book_tickers.height
        rep.meta_lines = len(meta)
        rep.quarantined = len(self.quarantine)
        rep.quarantine_reasons = dict(Counter(_reason_class(q["reason"]) for q in self.quarantine))
        for name, frame in (
            (EVENTS_FILE, events_file),
            (SNAPSHOTS_FILE, snapshots),
            (SNAPSHOT_LEVELS_FILE, snapshot_levels),
            (BOOK_TICKERS_FILE, book_tickers),
            (QUARANTINE_FILE, pl.DataFrame(self.quarantine, schema=QUARANTINE_SCHEMA)),
            (META_FILE, pl.DataFrame(meta, schema=META_SCHEMA, orient="row")),
        ):
            rep.keys[name] = self.file_key(name)
            out.append(_PendingFile(rep.keys[name], frame))
        self.quarantine, self.meta = [], []
        return out

    def spill_keys(self) -> list[str]:
        return [
            k
            for b in (self.events, self.snapshots, self.snapshot_levels, self.book_tickers)
            for k in b.spills
        ]


def _by_symbol(frame: pl.DataFrame, one: bool) -> dict[tuple[Any, ...], pl.DataFrame]:
    """Rows per symbol id (without the id column); no copy when one symbol has them all (a v1 batch);
    ``one``: the batch has one symbol, id 0 (no pass over the ids; the frame may lack the id column)."""
    if not frame.height:
        return {}
    if one:
        return {(0,): frame.drop(SYM_COLUMN, strict=False)}
    first = frame[SYM_COLUMN][0]
    if frame[SYM_COLUMN].n_unique() == 1:
        return {(first,): frame.drop(SYM_COLUMN)}
    return frame.partition_by(SYM_COLUMN, as_dict=True, include_key=False)


# the columns of the gathered event rows (the empty frames below: one list)
_EVENT_COLUMNS = {
    "obj": pl.Int32,
    "line_no": pl.Int64,
    "receive_ns": pl.Int64,
    "E": pl.Int64,
    "T": pl.Int64,
    "U": pl.Int64,
    "u": pl.Int64,
    "pu": pl.Int64,
    "n_levels": pl.Int32,
    "levels_hash": pl.Int64,
    "ev": pl.Int64,
}

_SNAPSHOT_COLUMNS = {
    "obj": pl.Int32,
    "line_no": pl.Int64,
    "receive_ns": pl.Int64,
    "E": pl.Int64,
    "T": pl.Int64,
    "last_update_id": pl.Int64,
    "n_levels": pl.Int32,
    "snap": pl.Int64,
}

_EMPTY = {
    "ev": pl.DataFrame(schema=_EVENT_COLUMNS),
    "lv": pl.DataFrame(schema=LEVEL_COLUMNS),
    "sn": pl.DataFrame(schema=_SNAPSHOT_COLUMNS),
    "slv": pl.DataFrame(
        schema={"snap": pl.Int64, "is_bid": pl.Boolean, "price": pl.Float64, "qty": pl.Float64}
    ),
    "bt": pl.DataFrame(schema=BOOK_TICKER_SCHEMA),
}


def _unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_counts=True)``, without sorting every value: rows come in object order, so
    equal values come in runs; the runs are found in one pass and only their values sorted."""
    if len(values) < 2:
        return np.unique(values, return_counts=True)
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    lengths = np.diff(np.append(starts, len(values)))
    run_values = values[starts]
    if (run_values[1:] > run_values[:-1]).all():  # the runs in order already, each value once
        return run_values, lengths
    uniq, inverse = np.unique(run_values, return_inverse=True)
    return uniq, np.bincount(inverse, weights=lengths, minlength=len(uniq)).astype(np.int64)


def _reason_class(reason: str) -> str:
    """Group quarantine reasons for counting (drop the variable tail)."""
    return reason.split(":")[0][:60]


_DUP_KEYS = ("U", "u", "pu", "E", "n_levels", "levels_hash")


def _exact_duplicates(events: pl.DataFrame) -> np.ndarray:
    """Per row: an exact duplicate (same ids, time and levels: ``_DUP_KEYS``; e.g. a segment uploaded twice or
    a reconnect overlap) of an event received earlier (ties: lower ``ev``), which is kept.

    Only events sharing ``(U, u)`` can be duplicates: one numpy sort of those two columns finds them, and only
    they are compared on every key (a sort and struct hash of the whole table peaked at ~4x its size)."""
    n = events.height
    dup = np.zeros(n, np.bool_)
    if n < 2:
        return dup
    null = np.iinfo(np.int64).min
    first_id = events["U"].fill_null(null).to_numpy()
    last_id = events["u"].fill_null(null).to_numpy()
    order = np.lexsort((first_id, last_id))
    same = (last_id[order[1:]] == last_id[order[:-1]]) & (first_id[order[1:]] == first_id[order[:-1]])
    if not same.any():
        return dup
    shared = np.zeros(n, np.bool_)
    shared[1:] |= same
    shared[:-1] |= same
    rows = np.sort(order[shared])
    del order, same, shared
    cand = (
        events[rows]
        .select("receive_ns", "ev", *_DUP_KEYS)
        .with_columns(pl.Series("row", rows))
        .sort("receive_ns", "ev")
    )
    first = cand.select(pl.struct(_DUP_KEYS).is_first_distinct())[:, 0].to_numpy()
    dup[cand["row"].to_numpy()] = ~first
    return dup


def _empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema={**_EVENT_COLUMNS, "part": pl.Int32})


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    """One column of a day's events (never null there) as numpy: only this column is made contiguous."""
    return frame.get_column(name).to_numpy()


def _lo_column(events: pl.DataFrame, market: Market) -> np.ndarray:
    """``lo`` of every event (``depth_core.idline.lo_expr``: ``pu``, else ``U - 1``) from its two columns only
    (a frame expression would first copy the whole table into aligned chunks: see :func:`_events_table`)."""
    lo = _column(events, "U") - 1
    if market == "usdm":
        pu = events.get_column("pu")
        known = pu.is_not_null().to_numpy()
        lo[known] = pu.fill_null(0).to_numpy()[known]
    return lo


def _events_table(events: pl.DataFrame, dup: np.ndarray) -> pa.Table:
    """The validated events file's table: the gathered events (the columns of :func:`_empty_events`) and the
    duplicate flag.

    Built column by column over the buffered chunks, without a copy: polars joins the chunks of a column that
    is null throughout (a spot day's ``T`` and ``pu``) into one, and any frame operation over columns chunked
    differently first copies the whole table into one chunk (+56 MiB for a bench day's 861 k events, at the
    validation's peak). Arrow tables allow each column its own chunks, and the Parquet writer takes them as
    they are."""
    columns = {name: _arrow_column(events.get_column(name)) for name in _empty_events().columns}
    columns["dup"] = pa.chunked_array([pa.array(dup, pa.bool_())])
    return pa.table(columns)


_ARROW_INTS: dict[type[pl.DataType], pa.DataType] = {pl.Int32: pa.int32(), pl.Int64: pa.int64()}
_NULL_CHUNK_ROWS = 1 << 16


def _arrow_column(series: pl.Series) -> pa.ChunkedArray:
    """One integer column of the events as Arrow, chunk for chunk, without a copy: a chunk without nulls as
    its numpy array (pyarrow holds the array itself), a chunk of nulls only as nulls sharing one small buffer,
    the rare chunk with some nulls filled and masked (a copy of that chunk).

    Why not ``pa.chunked_array(series)`` (polars' Arrow export): the file is written, and the table dropped,
    on a commit thread, and the parser's arrays behind a table exported that way outlived it (polars lets go
    of them there without the GIL, and that waits until polars next runs on a thread holding it): after a
    bench day's validation and a full collection the C heap still held 92 MiB, 39 with this export, as after
    an eighth of the day; the day's events stayed under the next pass and the merge (benchmarks/NOTES.md,
    fourteenth session)."""
    type_ = _ARROW_INTS[series.dtype.base_type()]
    chunks: list[pa.Array] = []
    for chunk in series.get_chunks():
        n, nulls = chunk.len(), chunk.null_count()
        if nulls == 0:
            chunks.append(pa.array(chunk.to_numpy(), type_))
        elif nulls == n:
            shared = pa.nulls(min(n, _NULL_CHUNK_ROWS), type_)
            whole, rest = divmod(n, _NULL_CHUNK_ROWS)
            chunks += [shared] * whole + ([shared.slice(0, rest)] if rest else [])
        else:
            chunks.append(pa.array(chunk.fill_null(0).to_numpy(), type_, mask=chunk.is_null().to_numpy()))
    return pa.chunked_array(chunks, type_)


def _empty_snapshots() -> pl.DataFrame:
    return pl.DataFrame(schema=_SNAPSHOT_COLUMNS)


# ------------------------------------------------------------------------------------------------ stream-day


class _StreamDayRun:
    """One validation of a stream-day (see :func:`validate_stream_day`)."""

    def __init__(
        self, store: ObjectStore, market: Market, stream: str, date: str, symbols: Collection[str] | None
    ) -> None:
        self.store, self.market, self.stream, self.date = store, market, stream, date
        self.filter = None if symbols is None else sorted({validate_symbol(s) for s in symbols})
        self.run_id = new_run_id()
        self.day = day_index(date)
        self.result = StreamDayValidation(market, stream, date, self.run_id, self.filter)
        self.builders: dict[str, _SymbolDay] = {}
        self.present: set[str] = set()
        self.prev_stream = self._read_prev_stream_report()
        self.objects: dict[str, StreamObject] = {}
        self.unattributed: list[dict[str, Any]] = []
        # objects holding only stream-wide notes, with their notes: every symbol-day gets them at the end
        self.stream_wide_only: list[tuple[ObjectInfo, list[tuple[int, bytes]]]] = []
        self.stats = Counter[str]()
        self.checked: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
        self._batch_keys: list[str] = []
        self._names: list[str] = []
        self.finish_bytes = (
            BUFFER_BYTES // 2
        )  # built files waiting for their writes, at most (one symbol always)
        self.buffer_bytes, self.part_rows = BUFFER_BYTES, PART_ROWS

    def _read_prev_stream_report(self) -> dict[str, Any]:
        key = stream_day_report_key(self.market, self.stream, self.date)
        try:
            out: dict[str, Any] = get_json(self.store, key)
            return out
        except ObjectNotFoundError:
            return {}

    def wanted(self, symbol: str) -> bool:
        return self.filter is None or symbol in self.filter

    # -------------------------------------------------------------------- state checks

    def _known_objects(self, symbol: str) -> dict[str, str]:
        """Raw objects that some record says held this symbol-day of this stream -> where it says so."""
        known: dict[str, str] = {}
        version = stream_day_report_version(self.prev_stream)
        for o in self.prev_stream.get("objects", []):
            if symbol in o.get("symbols", []) and self.date in object_dates_of(
                o, symbol, version, [self.date]
            ):
                known[o["key"]] = "the stream-day report"
        from depth_core.layout import merged_manifest_key  # the merge's record of what it consumed

        try:
            manifest = get_json(self.store, merged_manifest_key(self.market, symbol, self.date))
        except ObjectNotFoundError:
            manifest = {}
        for o in manifest.get("raw_objects", []):
            if o.get("stream") == self.stream:
                known.setdefault(o["key"], "the merged manifest")
        return known

    def builder(self, symbol: str, writer: _Writer) -> _SymbolDay:
        """The symbol-day's accumulator; on first use, checks its previous state and seeds the carry-over."""
        b = self.builders.get(symbol)
        if b is None:
            b = self._register(self._make_builder(symbol, writer), writer)
        return b

    def _make_builder(self, symbol: str, writer: _Writer) -> _SymbolDay:
        b = _SymbolDay(self.market, self.stream, symbol, self.date, self.run_id)
        b.prev, b.prev_etag = self._check_state(symbol)
        b.carry = load_carryover(self.store, b, self.present, writer)
        return b

    def _create_builders(self, symbols: list[str], writer: _Writer) -> None:
        """First sight of these symbols: previous state and carry-over read concurrently (many small
        requests), a window at a time (carried rows bounded), registered in order with the buffers bounded
        after each."""
        new = [n for n in symbols if n not in self.builders]
        if len(new) <= 1:
            for n in new:
                self.builder(n, writer)
            return
        with cf.ThreadPoolExecutor(
            max_workers=STATE_THREADS, thread_name_prefix="depth-validate-state"
        ) as pool:
            todo = list(reversed(new))
            futures: list[cf.Future[_SymbolDay]] = []
            try:
                while todo or futures:
                    while todo and len(futures) < 2 * STATE_THREADS:
                        futures.append(pool.submit(self._make_builder, todo.pop(), writer))
                    self._register(futures.pop(0).result(), writer)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _register(self, b: _SymbolDay, writer: _Writer) -> _SymbolDay:
        self.builders[b.symbol] = b
        if b.carry is not None:  # carried rows wait in its buffers: keep all buffers within the budget
            self._bound_memory(writer, self.buffer_bytes, self.part_rows)
        return b

    def _check_state(self, symbol: str) -> tuple[dict[str, Any] | None, str | None]:
        """The symbol-day's committed report (and etag); MissingStateError if a raw object some record says
        held the symbol-day is gone and that report does not list it (its rows would be lost)."""
        if symbol in self.checked:
            return self.checked[symbol]
        prev = read_symbol_day_report(self.store, self.market, self.stream, symbol, self.date)
        report, etag = prev if prev is not None else (None, None)
        gone_known = {k: where for k, where in self._known_objects(symbol).items() if k not in self.present}
        listed = {o["key"] for o in (report or {}).get("objects", [])}
        missing = {k: where for k, where in gone_known.items() if k not in listed}
        if missing:
            names = ", ".join(f"{k} (listed by {where})" for k, where in sorted(missing.items())[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            state = (
                "its validated report.json is missing"
                if report is None
                else "its validated report.json does not list them"
            )
            raise MissingStateError(
                f"validation of {self.stream} {symbol} {self.date} stopped: {len(missing)} raw object(s) of "
                f"this symbol-day were deleted after a merge and {state}, so their rows exist nowhere else: "
                f"{names}{more}. Restore validated/ (or the raw objects) before re-validating; nothing was "
                "deleted"
            )
        self.checked[symbol] = (report, etag)
        return report, etag

    # -------------------------------------------------------------------- the pass

    def run(self, batch_bytes: int, buffer_bytes: int, part_rows: int) -> StreamDayValidation:
        store = self.store
        self.buffer_bytes, self.part_rows, self.finish_bytes = buffer_bytes, part_rows, buffer_bytes // 2
        listed = list_stream_day(store, self.market, self.stream, self.date, self.filter)
        self.present = {info.key for info, _k in listed}
        with cf.ThreadPoolExecutor(max_workers=PREFETCH + 1, thread_name_prefix="depth-validate") as pool:
            writer = _Writer(store, pool)
            try:
                # before anything is read: the symbols named by the caller (written even without data), and
                # every symbol whose objects the previous stream-day report lists as gone (state checked only)
                first = (
                    self.filter
                    if self.filter is not None
                    else sorted(
                        {
                            s
                            for o in self.prev_stream.get("objects", [])
                            if o["key"] not in self.present
                            for s in o.get("symbols", [])
                        }
                    )
                )
                with cf.ThreadPoolExecutor(
                    max_workers=STATE_THREADS, thread_name_prefix="depth-validate-state"
                ) as sp:
                    list(sp.map(self._check_state, first))
                self._create_builders(list(self.filter or []), writer)
                batches = [listed[a:b] for a, b in runs_within([i.size for i, _k in listed], batch_bytes)]
                ahead = [pool.submit(_fetch_batch, store, b) for b in batches[:PREFETCH]]
                for bi, batch in enumerate(batches):
                    fetched = ahead.pop(0).result()
                    if bi + PREFETCH < len(batches):
                        ahead.append(pool.submit(_fetch_batch, store, batches[bi + PREFETCH]))
                    texts, problems = fetched
                    del fetched
                    self.stats["batches"] += 1
                    self.stats["objects_read"] += len(batch)
                    self.stats["bytes_read"] += sum(i.size for i, _k in batch)
                    self.stats["max_batch_bytes"] = max(
                        self.stats["max_batch_bytes"], sum(i.size for i, _k in batch)
                    )
                    for lo, hi in runs_within([len(t) for t in texts], TEXT_BYTES):
                        piece, texts[lo:hi] = texts[lo:hi], [b""] * (hi - lo)  # the piece's list holds them
                        self._parse_piece(batch[lo:hi], piece, problems[lo:hi], writer)
                        self._bound_memory(writer, buffer_bytes, part_rows)
                    del texts
                # the batches' freed memory was kept for the next batch: none comes, and the files built next
                # would come on top of it
                release_free_memory()
                self._finish(writer)
            except BaseException:
                writer.discard()
                raise
        return self.result

    def _parse_piece(
        self, batch: list[Listed], texts: list[bytes], problems: list[str | None], writer: _Writer
    ) -> None:
        """Join, parse and split the texts of ``batch`` (at most ``TEXT_BYTES`` of them, or one object); the
        texts are dropped from ``texts`` once joined, so a batch is not held twice."""
        joined, starts = join_objects(texts)
        texts.clear()
        self.stats["max_batch_text_bytes"] = max(self.stats["max_batch_text_bytes"], len(joined))
        t0 = time.perf_counter()
        chunk = parse_objects((joined, starts), [key.symbol for _i, key in batch], self.filter)
        del joined
        t1 = time.perf_counter()
        self._split(chunk, batch, problems, writer)
        del chunk
        self.stats["parse_ms"] += int((t1 - t0) * 1000)
        self.stats["split_ms"] += int((time.perf_counter() - t1) * 1000)

    def _split(
        self, chunk: ParsedChunk, batch: list[Listed], problems: list[str | None], writer: _Writer
    ) -> None:
        """Hand every symbol its rows of one parsed batch, numbered in one vectorised pass over all
        symbols."""
        names = chunk.symbols
        n_sym, n_obj = len(names), len(batch)
        self._names, self._batch_keys = names, [info.key for info, _k in batch]
        held: list[set[int]] = []
        for i, (_info, key) in enumerate(batch):
            h = set(chunk.object_symbols[i])
            if key.symbol is not None:
                h.add(names.index(key.symbol))
            held.append(h)
        for i, (info, key) in enumerate(batch):  # the stream-day report sees every symbol (filtered or not)
            symbols = sorted(names[s] for s in held[i])
            undated = [] if self.filter is None else [s for s in symbols if not self.wanted(s)]
            self.objects[info.key] = StreamObject(
                info.key, info.size, info.etag, key.layout, symbols, undated=undated
            )
        # read whole, but no symbol's lines: only stream-wide notes (a flush while cut off from the exchange)
        stream_wide = {i: batch[i][0] for i in range(n_obj) if not held[i] and not problems[i]}
        self._create_builders([n for n in names if self.wanted(n)], writer)
        builders = {sid: self.builder(name, writer) for sid, name in enumerate(names) if self.wanted(name)}
        wanted = np.zeros(n_sym + 1, np.bool_)
        wanted[list(builders)] = True
        # omap[sid, i]: index of batch object i in symbol sid's report.objects (-1: it holds none of it)
        omap = np.full((n_sym + 1, n_obj), -1, np.int32)
        for sid, b in builders.items():
            objs = [i for i in range(n_obj) if sid in held[i]]
            omap[sid, objs] = np.arange(
                len(b.report.objects), len(b.report.objects) + len(objs), dtype=np.int32
            )
            b.report.objects.extend(
                RawObjectRead(batch[i][0].key, batch[i][0].size, batch[i][0].etag, []) for i in objs
            )
            b.omap = omap[sid]

        events, levels = self._number(chunk.events, chunk.levels, "ev", pl.col("E"), builders, omap, wanted)
        snaps, snap_levels = self._number(
            chunk.snapshots,
            chunk.snapshot_levels,
            "snap",
            pl.coalesce(pl.col("E"), pl.col("receive_ns") // 10**6),
            builders,
            omap,
            wanted,
        )
        one = n_sym == 1  # a batch of one symbol (a v1 batch, or one busy symbol): no per-row symbol work
        if levels.height:  # decimals per symbol: one compiled pass over (symbol, decimals)
            lsym = np.zeros(0, np.int32) if one else levels[SYM_COLUMN].to_numpy()
            for col in ("price_dec", "qty_dec"):
                counts = symbol_decimal_counts(lsym, levels[col].to_numpy(), n_sym + 1)
                for sid, d in zip(*np.nonzero(counts), strict=True):
                    getattr(builders[int(sid)], col)[int(d)] += int(counts[sid, d])
        levels = levels.drop("price_dec", "qty_dec")
        by = {
            name: _by_symbol(frame, one)
            for name, frame in (("ev", events), ("lv", levels), ("sn", snaps), ("slv", snap_levels))
        }
        by["bt"] = _by_symbol(chunk.book_tickers, False)
        for sid, b in builders.items():
            k = (sid,)
            b.take(
                by["ev"].get(k, _EMPTY["ev"]),
                by["lv"].get(k, _EMPTY["lv"]),
                by["sn"].get(k, _EMPTY["sn"]),
                by["slv"].get(k, _EMPTY["slv"]),
                by["bt"].get(k, _EMPTY["bt"]),
            )
        bt_sym = chunk.book_tickers[SYM_COLUMN].to_numpy()
        for sid, n in enumerate(np.bincount(bt_sym, minlength=n_sym).tolist() if len(bt_sym) else []):
            if n and sid in builders:
                builders[sid].report.lines_read += n

        for i, problem in enumerate(problems):
            if not problem:
                continue
            row = {
                "object_key": batch[i][0].key,
                "line_no": 0,
                "receive_ns": None,
                "reason": problem,
                "text": b"",
            }
            for sid in held[i]:
                if sid in builders:
                    builders[sid].quarantine.append(dict(row))
                    builders[sid].report.objects[omap[sid, i]].quarantined += 1
            if not held[i]:
                self.unattributed.append(row)
        for q in chunk.quarantine:
            okey = batch[q.object_index][0].key
            if q.sym >= 0:
                if q.sym in builders:
                    builders[q.sym].add_quarantine(q, okey)
            else:  # a v2 line naming no symbol: the stream-day keeps it
                stream_wide.pop(q.object_index, None)  # so the object is kept in raw/ too
                self.unattributed.append(
                    {
                        "object_key": okey,
                        "line_no": q.line_no,
                        "receive_ns": q.receive_ns,
                        "reason": q.reason,
                        "text": q.text,
                    }
                )
        notes: dict[int, list[tuple[int, bytes]]] = {i: [] for i in stream_wide}
        for o, ns, text, sid in chunk.meta:
            if o in notes:
                notes[o].append((ns, text))
            for s in (
                [sid] if sid >= 0 else sorted(held[o])
            ):  # a stream-wide note: every symbol of that object
                if s in builders:
                    builders[s].add_meta(ns, text)
        for i, info in stream_wide.items():
            self.stream_wide_only.append((info, notes[i]))

    def _number(
        self,
        head: pl.DataFrame,
        levels: pl.DataFrame,
        col: str,
        day_ms: pl.Expr,
        builders: dict[int, _SymbolDay],
        omap: np.ndarray,
        wanted: np.ndarray,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Events (or snapshots) of day D of the wanted symbols, numbered per symbol after what each already
        holds, ``obj`` pointing into each symbol's object list; their level rows renumbered alike (with the
        symbol id column only when the batch has more than one symbol). Also records, per object, the event
        dates and event counts of every symbol it holds."""
        if not head.height:
            empty_head = head.clear().drop(SYM_COLUMN).with_columns(pl.lit(0, pl.Int64).alias(col))
            return empty_head.with_columns(
                pl.lit(0, pl.Int32).alias(SYM_COLUMN)
            ), levels.clear().with_columns(pl.lit(0, pl.Int32).alias(SYM_COLUMN))
        sym = head[SYM_COLUMN].to_numpy().astype(np.int64)
        obj = head["obj"].to_numpy().astype(np.int64)
        days = head.select(_day_of(day_ms).alias("d"))["d"].to_numpy()
        # dates and counts per (object, symbol), for the stream-day report and the symbols' object lists
        n_sym = omap.shape[0] - 1
        d0 = int(days.min())
        width = int(days.max()) - d0 + 1
        # (object, symbol, day) and its rows
        code, code_rows = _unique_counts((obj * (n_sym + 1) + sym) * width + (days - d0))
        triples = np.stack([code // width // (n_sym + 1), code // width % (n_sym + 1), code % width + d0])
        batch_keys = list(self._batch_keys)
        for (o, s, d), rows in zip(triples.T.tolist(), code_rows.tolist(), strict=True):
            date = date_of_day_index(d)
            so = self.objects[batch_keys[o]]
            dates = so.symbol_event_dates.setdefault(self._names[s], [])
            if date not in dates:
                dates.append(date)
            if date not in so.event_dates:
                so.event_dates.append(date)
                so.event_dates.sort()
            if s in builders:
                ro = builders[s].report.objects[omap[s, o]]
                if date not in ro.event_dates:
                    ro.event_dates.append(date)
                    ro.event_dates.sort()
                if col == "ev":
                    ro.events += rows  # the object's events of this symbol, all days
        keep = wanted[sym]
        for s, n in enumerate(np.bincount(sym[keep], minlength=n_sym).tolist()):
            if n:
                builders[s].report.lines_read += n
        if col == "ev":
            other = keep & (days != self.day)
            for s, n in enumerate(np.bincount(sym[other], minlength=n_sym).tolist()):
                if n:
                    builders[s].report.other_day_events += n
        sel = np.flatnonzero(keep & (days == self.day))
        gmap = np.full(head.height, -1, np.int64)
        if len(sel):
            s_sel = sym[sel]
            base = np.array(
                [
                    (builders[s].n_events if col == "ev" else builders[s].n_snaps) if s in builders else 0
                    for s in range(n_sym)
                ],
                np.int64,
            )
            if n_sym == 1:  # one symbol: a row's rank among its symbol's rows is its rank among all
                gmap[sel] = base[0] + np.arange(len(sel))
            else:
                order = np.argsort(s_sel, kind="stable")
                counts_s = np.bincount(s_sel, minlength=n_sym)
                starts = np.concatenate([[0], np.cumsum(counts_s)[:-1]])
                rank = np.empty(len(sel), np.int64)
                rank[order] = np.arange(len(sel)) - starts[s_sel[order]]
                gmap[sel] = base[s_sel] + rank
        every_row = len(sel) == head.height
        out = (head if every_row else head[sel]).with_columns(
            pl.Series(col, gmap[sel], pl.Int64), pl.Series("obj", omap[sym[sel], obj[sel]], pl.Int32)
        )
        if every_row and n_sym == 1:
            # the usual batch (one symbol, every row of day D): a row's number is its position plus what the
            # symbol held before, so is its level rows' (an add, no gather). numpy's add, into an array of the
            # C heap that the next batch reuses: polars' took one from its own allocator, which hands pages
            # back over time and faulted them in again (~35 k page faults a bench day)
            lv = levels.with_columns(
                pl.Series(col, np.add(levels[col].to_numpy(), int(gmap[0]), dtype=np.int64))
            )
        else:
            lv_ev = levels[col].to_numpy()
            lg = gmap[lv_ev] if len(lv_ev) else np.zeros(0, np.int64)
            lmask = lg >= 0
            if lmask.all():  # every level row is of day D and of a wanted symbol (no copy)
                lv = levels.with_columns(pl.Series(col, lg, pl.Int64))
                if n_sym > 1:
                    lv = lv.with_columns(pl.Series(SYM_COLUMN, sym[lv_ev], pl.Int32))
            else:
                lv = levels.filter(pl.Series(lmask)).with_columns(
                    pl.Series(col, lg[lmask], pl.Int64), pl.Series(SYM_COLUMN, sym[lv_ev[lmask]], pl.Int32)
                )
        extra = ["price_dec", "qty_dec"] if col == "ev" else []  # decimals are counted, then dropped
        # one symbol: its id (0) is not written out per level row (1.4 M rows a batch), only to be dropped
        sym_col = [SYM_COLUMN] if n_sym > 1 else []
        return out, lv.select(col, "is_bid", "price", "qty", *sym_col, *extra)

    def _bound_memory(self, writer: _Writer, buffer_bytes: int, part_rows: int) -> None:
        for b in self.builders.values():
            if b.level_rows >= part_rows:
                b.flush(writer, spill=False)
                self.stats["part_flushes"] += 1
        total = sum(b.buffered for b in self.builders.values())
        self.stats["peak_buffered_bytes"] = max(self.stats["peak_buffered_bytes"], total)
        if total > buffer_bytes:
            for b in sorted(self.builders.values(), key=lambda x: x.buffered, reverse=True):
                total -= b.buffered
                b.flush(writer, spill=True)
                self.stats["spills"] += 1
                if total <= buffer_bytes // 2:
                    break

    # -------------------------------------------------------------------- commit

    def _finish(self, writer: _Writer) -> None:
        """Build each symbol's files (this thread) while earlier symbols' files are written and their reports
        committed (helper threads): the writes are many small requests, the building is CPU."""
        t0 = time.perf_counter()
        writer.drain()  # every level part submitted during the pass is written before any report names it
        self._attribute_stream_wide_only()
        with cf.ThreadPoolExecutor(
            max_workers=COMMIT_THREADS, thread_name_prefix="depth-validate-commit"
        ) as pool:
            inflight: list[tuple[_SymbolDay, cf.Future[None], int]] = []
            try:
                for sym in sorted(self.builders):
                    b = self.builders[sym]
                    files = b.finish(self.store, writer)
                    size = sum(f.nbytes for f in files)
                    inflight.append((b, pool.submit(self._write_and_commit, b, files, writer), size))
                    del files
                    # bounded: a few symbols' frames in memory (by count and by bytes)
                    while len(inflight) > 2 * COMMIT_THREADS or (
                        len(inflight) > 1 and sum(x[2] for x in inflight) > self.finish_bytes
                    ):
                        done, fut, _size = inflight.pop(0)
                        fut.result()
                        self.result.reports[done.symbol] = done.report
                for done, fut, _size in inflight:
                    fut.result()
                    self.result.reports[done.symbol] = done.report
            except BaseException:
                for _b, fut, _size in inflight:
                    fut.cancel()
                cf.wait([f for _b, f, _size in inflight])
                raise
        self.stats["finish_ms"] = int((time.perf_counter() - t0) * 1000)
        self._write_stream_report(writer)

    def _attribute_stream_wide_only(self) -> None:
        """Objects that hold only stream-wide notes belong to every symbol-day of the stream-day: each lists
        them (so the merge's manifest does, and the cleanup can delete them once every symbol-day is
        verified) and keeps their notes in its ``meta``. Left unlisted they stayed in raw/ for ever."""
        for info, notes in self.stream_wide_only:
            for symbol in sorted(self.builders):
                b = self.builders[symbol]
                b.report.objects.append(RawObjectRead(info.key, info.size, info.etag, []))
                for ns, text in notes:
                    b.add_meta(ns, text)
        self.stream_wide_only = []

    def _write_and_commit(self, b: _SymbolDay, files: list[_PendingFile], writer: _Writer) -> None:
        names = {v: k for k, v in b.report.keys.items()}
        for f in files:
            if f.level_part:
                writer.level_part(f.key, f.frame)
                continue
            info = writer.parquet(f.key, f.frame, fast=f.fast)
            assert info is not None
            if f.key in names:
                b.report.files[names[f.key]] = info.etag
        self._commit(b, writer)

    def _commit(self, b: _SymbolDay, writer: _Writer) -> None:
        """Write report.json last (compare-and-swap against the report read at the start), then delete the
        files of the report it replaced and this run's spill files."""
        import orjson

        key = b.prefix + REPORT_FILE
        data = orjson.dumps(b.report.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        try:
            if b.prev is None:
                ok = self.store.put_bytes_if_absent(key, data)
            else:
                ok = self.store.put_bytes_if_match(key, data, b.prev_etag or "")
        except StoreError as exc:
            if "does not support conditional" not in str(exc):
                raise
            ok = self.store.put_bytes(key, data)  # a store without conditional writes: last writer wins
        mine = set(b.report.level_parts) | set(b.report.keys.values())
        if ok is None:
            writer.discard(mine | set(b.spill_keys()))
            raise ConcurrentValidationError(
                f"another validation of {self.stream} {b.symbol} {self.date} committed its report while this "
                f"one (run {self.run_id}) ran; this run's files were removed and the other's output stands"
            )
        writer.forget(mine)  # committed: no longer this run's to remove on a later failure
        doomed = [k for k in _report_files(b.prev) if k not in mine] + b.spill_keys()
        doomed += _orphans(self.store, b.prefix, mine | set(doomed), self.run_id)
        if doomed:
            self.store.delete_many(doomed)

    def _write_stream_report(self, writer: _Writer) -> None:
        """Write ``_stream_day.json``: compare-and-swap against the latest report, rebuilt and retried if
        another validation of the stream-day wrote one meanwhile (its entries are kept, this run's
        override)."""
        import orjson

        key = stream_day_report_key(self.market, self.stream, self.date)
        for _attempt in range(5):
            latest, etag = _read_json_version(self.store, key)
            q_key = self._build_stream_report(latest or {}, writer)
            data = orjson.dumps(
                self.result.to_dict(), option=orjson.OPT_SORT_KEYS
            )  # not indented: ~40 % smaller
            try:
                ok = (
                    self.store.put_bytes_if_absent(key, data)
                    if latest is None
                    else self.store.put_bytes_if_match(key, data, etag or "")
                )
            except StoreError as exc:
                if "does not support conditional" not in str(exc):
                    raise
                ok = self.store.put_bytes(key, data)
            if ok is not None:
                prev_q = (latest or {}).get("quarantine_key")
                if prev_q and prev_q != q_key:
                    self.store.delete(prev_q)
                writer.forget({q_key} if q_key else set())
                return
            if q_key:  # lost the race: rebuild from the report that won
                self.store.delete(q_key)
        raise ConcurrentValidationError(
            f"{key} kept changing while this validation (run {self.run_id}) wrote it"
        )

    def _build_stream_report(self, prev: dict[str, Any], writer: _Writer) -> str | None:
        res = self.result
        seen_before = {
            o["key"] for o in self.prev_stream.get("objects", [])
        }  # listed before this run's listing
        objects = dict(self.objects)
        prev_version = stream_day_report_version(prev)
        prev_entries = {o["key"]: o for o in prev.get("objects", [])}
        for key, obj in objects.items():
            if obj.undated:
                _keep_dates_of_skipped_symbols(obj, prev_entries.get(key), prev_version)
        for key, o in prev_entries.items():
            if key in objects:
                continue
            # gone since a report listed it before this run's listing: deleted after a merge (carried); else
            # another run's entry (a filtered run's v1 objects, or an object newer than this run's listing)
            carried = (key not in self.present and key in seen_before) or bool(o.get("carried"))
            objects[key] = StreamObject(
                o["key"],
                int(o["size"]),
                o.get("etag"),
                int(o.get("layout", 1)),
                list(o.get("symbols", [])),
                list(o.get("event_dates", [])),
                object_symbol_dates(o, prev_version),
                carried=carried,
                undated=list(o.get("undated", [])),
            )
        res.objects = sorted(objects.values(), key=lambda o: o.key)
        res.symbols = {s: v for s, v in prev.get("symbols", {}).items() if s not in self.builders}
        for sym, b in self.builders.items():
            r = b.report
            res.symbols[sym] = {
                "events": r.events,
                "levels": r.levels,
                "snapshots": r.snapshots,
                "quarantined": r.quarantined,
                "duplicates": r.duplicates,
                "gaps": len(r.gaps),
                "objects": len(r.objects),
                "report": b.prefix + REPORT_FILE,
                "run_id": r.run_id,
            }
        # quarantine lines that name no symbol: this run's, plus those of deleted objects from the previous
        # run
        rows = list(self.unattributed)
        prev_q = prev.get("quarantine_key")
        if prev_q:
            try:
                old = read_parquet(self.store, prev_q)
                rows += old.filter(~pl.col("object_key").is_in(list(self.present))).to_dicts()
            except ObjectNotFoundError as exc:
                raise MissingStateError(
                    f"the stream-day quarantine {prev_q} named by "
                    f"{stream_day_report_key(self.market, self.stream, self.date)} is missing"
                ) from exc
        res.unattributed_quarantined = len(rows)
        res.quarantine_key = None
        if rows:
            res.quarantine_key = (
                validated_stream_day_prefix(self.market, self.stream, self.date)
                + f"{self.run_id}-{secrets.token_hex(2)}-{QUARANTINE_FILE}"
            )
            writer.parquet(res.quarantine_key, pl.DataFrame(rows, schema=QUARANTINE_SCHEMA))
        res.stats = dict(self.stats)
        return res.quarantine_key


def _keep_dates_of_skipped_symbols(obj: StreamObject, prev: dict[str, Any] | None, prev_version: int) -> None:
    """A run of chosen symbols did not date the other symbols' lines in ``obj``: keep the dates an earlier
    report of the object (``prev``) recorded for them; the ones no report dated stay ``undated``."""
    obj.undated = [s for s in obj.undated if s not in obj.symbol_event_dates]
    known = object_symbol_dates(prev, prev_version) if prev else {}
    before = set(prev.get("undated", [])) if prev else set()
    still: list[str] = []
    for symbol in obj.undated:
        if symbol in known and symbol not in before:
            obj.symbol_event_dates[symbol] = list(known[symbol])
            obj.event_dates = sorted(set(obj.event_dates) | set(known[symbol]))
        else:
            still.append(symbol)
    obj.undated = still


def _read_json_version(store: ObjectStore, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object and the etag of the version read (head, get, head agree), or (None, None) if absent."""
    for _ in range(5):
        before = store.head(key)
        if before is None:
            return None, None
        try:
            data: dict[str, Any] = get_json(store, key)
        except ObjectNotFoundError:
            continue
        after = store.head(key)
        if after is not None and after.etag == before.etag:
            return data, before.etag
    raise ConcurrentValidationError(
        f"{key} keeps changing while it is read (another validation is writing it)"
    )


def _report_files(report: dict[str, Any] | None) -> list[str]:
    """Every data file a symbol-day report names (old reports: the fixed names and the carry copy)."""
    if not report:
        return []
    out = list(report.get("level_parts", []))
    keys = report.get("keys") or {}
    prefix = str(report.get("prefix", ""))
    if keys:
        out += [str(k) for k in keys.values()]
    elif prefix:
        out += [prefix + name for name in DATA_FILES]
        out += [prefix + "_carry_source/" + name for name in (*DATA_FILES, REPORT_FILE)]
    return out


def _orphans(store: ObjectStore, prefix: str, keep: set[str], run_id: str) -> list[str]:
    """Files under the symbol-day no report names, left by a run that crashed more than ORPHAN_AGE ago."""
    cutoff = dt.datetime.now(dt.UTC) - ORPHAN_AGE
    return [
        i.key
        for i in store.list(prefix)
        if i.key not in keep
        and not i.key.endswith("/" + REPORT_FILE)
        and not i.key[len(prefix) :].startswith(run_id)
        and i.last_modified < cutoff
    ]


def validate_stream_day(
    store: ObjectStore,
    market: Market,
    stream: str,
    date: str,
    symbols: Collection[str] | None = None,
    *,
    batch_bytes: int | None = None,
    buffer_bytes: int | None = None,
    part_rows: int | None = None,
) -> StreamDayValidation:
    """Validate every symbol of one stream-day in one pass over its raw objects (v2 and v1).

    Writes each symbol's ``validated/market=/stream=/symbol=/date=/`` (run-unique files committed by its
    ``report.json``) and the stream-day report (:func:`stream_day_report_key`). ``symbols`` only filters which
    symbols are written (a v2 object is read whole either way; v1 objects are listed for those symbols only);
    a symbol named there is written even without data. A symbol of the day with no raw object left (all
    merged and cleaned up) and no new one keeps its previous output untouched.

    Raises :class:`MissingStateError` when validated state that is the only copy of deleted raw objects is
    missing (nothing is deleted), :class:`ConcurrentValidationError` when another run committed a
    symbol-day first.
    """
    run = _StreamDayRun(
        store, validate_market(market), validate_collector_id(stream), validate_date(date), symbols
    )
    try:
        with pass_settings():
            return run.run(batch_bytes or BATCH_BYTES, buffer_bytes or BUFFER_BYTES, part_rows or PART_ROWS)
    finally:
        # what the pass freed (its parse's and the day's tables) goes back now: glibc and pyarrow keep it,
        # in proportion to the day's length, and the process's next phase (a merge) would start on top of it
        # (a bench day's merge peak: ~60 MiB lower; benchmarks/NOTES.md, tenth session)
        release_tick_arrays()
        release_free_memory()


def validate_symbol_day(
    store: ObjectStore, market: Market, stream: str, symbol: str, date: str
) -> SymbolDayReport:
    """Validate one stream-symbol-day (the stream-day pass restricted to one symbol)."""
    symbol = validate_symbol(symbol)
    return validate_stream_day(store, market, stream, date, [symbol]).reports[symbol]
