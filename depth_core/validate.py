"""Validate one stream-symbol-day: raw objects -> typed Parquet under ``validated/`` + a report.

Why a per-stream step: each stream (collector region) is checked on its own first — what it received, what
was malformed, where its own id chain broke — so the merge works on clean typed columns and the report
tells an operator which region had trouble.

Day boundary: an event belongs to the UTC day of its exchange time ``E``; raw objects are filed by the day of
their first *receive* time. So besides the objects of day D this reads the objects of D-1 that started in
its last hour and the objects of D+1 that started in its first hour (``EDGE_NS``) and keeps exactly the
events whose ``E`` falls on D. Each raw object read is listed with the set of event dates it holds, so the
gated cleanup deletes an object only once every one of those days was merged.

Memory: objects are processed in batches (``BATCH_BYTES`` of compressed input); levels go to one Parquet
part per batch, so only the per-event table (a few tens of bytes per event) grows with the day.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from depth_core.events import SYM_COLUMN, QuarantineEntry, join_objects, parse_objects
from depth_core.idline import gaps_between, lo_expr, union_ranges
from depth_core.names import Market, validate_collector_id, validate_date, validate_market, validate_symbol
from depth_core.raw_format import (
    RawFormatError,
    RawObjectKey,
    decompress,
    stream_date_prefix,
    stream_day_prefix,
)
from depth_core.storeio import put_json, put_parquet, replace_prefix
from depth_store.base import ObjectInfo, ObjectStore

VALIDATED_ROOT = "validated"
EDGE_NS = 3600 * 10**9
BATCH_BYTES = 8 << 20
PREFETCH = 2
DAY_MS = 86_400_000

EVENTS_FILE = "events.parquet"
SNAPSHOTS_FILE = "snapshots.parquet"
SNAPSHOT_LEVELS_FILE = "snapshot_levels.parquet"
BOOK_TICKERS_FILE = "book_tickers.parquet"
QUARANTINE_FILE = "quarantine.parquet"
META_FILE = "meta.parquet"
REPORT_FILE = "report.json"

QUARANTINE_SCHEMA = {"object_key": pl.String(), "line_no": pl.Int64(), "receive_ns": pl.Int64(),
                     "reason": pl.String(), "text": pl.Binary()}


def validated_day_prefix(market: Market, stream: str, symbol: str, date: str) -> str:
    return (f"{VALIDATED_ROOT}/market={validate_market(market)}/stream={validate_collector_id(stream)}/"
            f"symbol={validate_symbol(symbol)}/date={validate_date(date)}/")


def levels_part_key(market: Market, stream: str, symbol: str, date: str, part: int) -> str:
    return f"{validated_day_prefix(market, stream, symbol, date)}levels-{part:05d}.parquet"


def day_index(date: str) -> int:
    return (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days


def date_of_day_index(idx: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(idx))).isoformat()


@dataclass
class RawObjectRead:
    """One raw object read by validation (the cleanup deletes exactly the ones a merge consumed)."""

    key: str
    size: int
    etag: str | None
    event_dates: list[str]
    events: int = 0  # depth events in the object (all days)
    quarantined: int = 0  # its lines in the quarantine
    carried: bool = False  # deleted from raw/ after a merge: its rows were carried over (depth_core/carryover.py)


@dataclass
class StreamDayReport:
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
    level_parts: list[str] = field(default_factory=list)
    files: dict[str, str | None] = field(default_factory=dict)  # etag of each file written (carry-over trust)
    prefix: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["segments"] = [list(s) for s in self.segments]
        out["gaps"] = [list(g) for g in self.gaps]
        return out

    @property
    def has_data(self) -> bool:
        return self.events > 0


def _list_objects(store: ObjectStore, market: Market, stream: str, symbol: str,
                  date: str) -> list[tuple[ObjectInfo, RawObjectKey]]:
    """Objects of day D plus D-1's last hour and D+1's first hour (by first receive time): the symbol's v1
    objects and the stream's v2 objects, in order of first receive time."""
    start_ns = day_index(date) * DAY_MS * 10**6
    end_ns = start_ns + DAY_MS * 10**6
    before = date_of_day_index(day_index(date) - 1)
    after = date_of_day_index(day_index(date) + 1)
    out: list[tuple[ObjectInfo, RawObjectKey]] = []
    for day, lo, hi in ((before, start_ns - EDGE_NS, start_ns), (date, 0, 1 << 63),
                        (after, end_ns, end_ns + EDGE_NS)):
        for prefix in (stream_day_prefix(market, stream, symbol, day), stream_date_prefix(market, stream, day)):
            for info in store.list(prefix):
                try:
                    key = RawObjectKey.parse(info.key)
                except RawFormatError:
                    continue  # foreign object: not ours to read (nor to delete)
                if lo <= key.first_receive_ns < hi:
                    out.append((info, key))
    out.sort(key=lambda x: (x[1].first_receive_ns, x[0].key))
    return out


def _fetch_batch(store: ObjectStore,
                 batch: list[tuple[ObjectInfo, RawObjectKey]]) -> tuple[tuple[bytes, np.ndarray], list[str | None]]:
    """Get, gunzip and join one batch of objects (runs on the helper thread)."""
    texts = [decompress(store.get_bytes(info.key)) for info, _key in batch]
    return join_objects([t for t, _p in texts]), [p for _t, p in texts]


def _batches(infos: list[tuple[ObjectInfo, RawObjectKey]]) -> list[list[tuple[ObjectInfo, RawObjectKey]]]:
    out: list[list[tuple[ObjectInfo, RawObjectKey]]] = []
    cur: list[tuple[ObjectInfo, RawObjectKey]] = []
    size = 0
    for info in infos:
        if cur and size + info[0].size > BATCH_BYTES:
            out.append(cur)
            cur, size = [], 0
        cur.append(info)
        size += info[0].size
    if cur:
        out.append(cur)
    return out


def _day_of(ms: pl.Expr) -> pl.Expr:
    return ms.floordiv(DAY_MS)


def validate_stream_day(store: ObjectStore, market: Market, stream: str, symbol: str, date: str) -> StreamDayReport:
    """Read, check and type one stream-symbol-day; writes ``validated/...`` and returns the report."""
    market = validate_market(market)
    symbol = validate_symbol(symbol)
    date = validate_date(date)
    stream = validate_collector_id(stream)
    prefix = validated_day_prefix(market, stream, symbol, date)
    report = StreamDayReport(market, stream, symbol, date, prefix=prefix)
    day = day_index(date)
    infos = _list_objects(store, market, stream, symbol, date)

    events_parts: list[pl.DataFrame] = []
    snaps_parts: list[pl.DataFrame] = []
    snap_lv_parts: list[pl.DataFrame] = []
    bt_parts: list[pl.DataFrame] = []
    quarantine: list[dict[str, Any]] = []
    meta_rows: list[tuple[int, bytes]] = []
    written: set[str] = set()
    n_events = 0
    n_snaps = 0
    part = 0
    price_dec: Counter[int] = Counter()
    qty_dec: Counter[int] = Counter()
    # raw objects the cleanup deleted since the last validation: their validated rows are carried over
    from depth_core.carryover import load_carryover

    carry = load_carryover(store, market, stream, symbol, date, [i for i, _k in infos])
    n_events, n_snaps, part = carry.seed(report, events_parts, snaps_parts, snap_lv_parts, quarantine, written,
                                         price_dec, qty_dec)
    # helper threads: fetching + gunzip (zlib releases the GIL) and Parquet writes overlap the parsing
    with cf.ThreadPoolExecutor(max_workers=PREFETCH + 1, thread_name_prefix="depth-validate") as pool:
        writes: list[cf.Future[ObjectInfo]] = []
        batches = _batches(infos)
        # up to PREFETCH batches fetched ahead: gunzip is as costly as parsing, so two fetchers keep up
        ahead = [pool.submit(_fetch_batch, store, b) for b in batches[:PREFETCH]]
        for bi, batch in enumerate(batches):
            fetched = ahead.pop(0).result()
            if bi + PREFETCH < len(batches):
                ahead.append(pool.submit(_fetch_batch, store, batches[bi + PREFETCH]))
            joined, problems = fetched
            del fetched
            chunk = parse_objects(joined, [key.symbol for _i, key in batch])
            del joined
            # this symbol's lines only (a v2 object holds every symbol of the stream; stream-wide notes and v2
            # lines whose header did not parse go to every symbol of the object)
            tid = chunk.symbols.index(symbol) if symbol in chunk.symbols else -2
            mine_q = [q for q in chunk.quarantine if q.sym in (tid, -1)]
            mine_meta = [(o, ns, text) for o, ns, text, sid in chunk.meta if sid in (tid, -1)]
            holds = np.array([key.symbol is not None or tid in chunk.object_symbols[i]
                              for i, (_info, key) in enumerate(batch)], dtype=np.bool_)
            sym_ev = chunk.events.with_row_index("local").with_columns(pl.col("local").cast(pl.Int64)).filter(
                pl.col(SYM_COLUMN) == tid).drop(SYM_COLUMN)
            sym_sn = chunk.snapshots.with_row_index("local").with_columns(pl.col("local").cast(pl.Int64)).filter(
                pl.col(SYM_COLUMN) == tid).drop(SYM_COLUMN)
            sym_bt = chunk.book_tickers.filter(pl.col(SYM_COLUMN) == tid).drop(SYM_COLUMN)
            obj_map = np.full(len(batch), -1, np.int32)
            for i in np.flatnonzero(holds).tolist():
                info = batch[i][0]
                obj_map[i] = len(report.objects)
                report.objects.append(RawObjectRead(info.key, info.size, info.etag, []))
                if problems[i]:
                    quarantine.append({"object_key": info.key, "line_no": 0, "receive_ns": None,
                                       "reason": problems[i], "text": b""})
            sym_ev = sym_ev.with_columns(pl.Series("obj", obj_map[sym_ev["obj"].to_numpy()], pl.Int32))
            sym_sn = sym_sn.with_columns(pl.Series("obj", obj_map[sym_sn["obj"].to_numpy()], pl.Int32))
            _record_object_dates(report, sym_ev, sym_sn)
            for q in mine_q:
                if obj_map[q.object_index] >= 0:
                    quarantine.append(_q_row(q, batch))
                    report.objects[obj_map[q.object_index]].quarantined += 1
            meta_rows.extend((ns, text) for o, ns, text in mine_meta if obj_map[o] >= 0)
            report.lines_read += (sym_ev.height + sym_sn.height + sym_bt.height
                                  + sum(1 for q in mine_q if obj_map[q.object_index] >= 0)
                                  + sum(1 for o, _n, _t in mine_meta if obj_map[o] >= 0))

            # events of this day only; renumber globally
            ev = sym_ev
            in_day = ev.filter(_day_of(pl.col("E")) == day)
            report.other_day_events += ev.height - in_day.height
            in_day = in_day.with_columns(
                (pl.int_range(pl.len(), dtype=pl.Int64) + n_events).alias("ev"),
                pl.lit(part, pl.Int32).alias("part"),
            )
            if in_day.height:
                if in_day.height == chunk.events.height:  # the usual batch, all of day D: renumbering is a shift
                    lv = chunk.levels.with_columns((pl.col("ev") + n_events).alias("gev"))
                else:
                    lv = chunk.levels.join(in_day.select(pl.col("local").alias("ev"), pl.col("ev").alias("gev")),
                                           on="ev", how="inner", maintain_order="left")
                _count_small(price_dec, lv["price_dec"])
                _count_small(qty_dec, lv["qty_dec"])
                lv = lv.select(pl.col("gev").alias("ev"), "is_bid", "price", "qty")
                key = levels_part_key(market, stream, symbol, date, part)
                writes.append(pool.submit(put_parquet, store, key, lv, 131_072, True))
                if len(writes) > 2:
                    writes.pop(0).result()  # at most two parts in flight (bounded memory)
                written.add(key)
                report.level_parts.append(key)
                report.levels += lv.height
                events_parts.append(in_day.drop("local"))
                n_events += in_day.height
                part += 1

            # snapshots and book tickers of this day (by E where given, else receive time)
            sn = sym_sn.filter(_day_of(pl.coalesce(pl.col("E"), pl.col("receive_ns") // 10**6)) == day)
            if sn.height:
                sn = sn.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) + n_snaps).alias("snap"))
                slv = chunk.snapshot_levels.join(sn.select(pl.col("local").alias("snap"), pl.col("snap").alias("g")),
                                                 on="snap", how="inner", maintain_order="left")
                snap_lv_parts.append(slv.select(pl.col("g").alias("snap"), "is_bid", "price", "qty"))
                snaps_parts.append(sn.drop("local"))
                n_snaps += sn.height
            # every bookTicker read (edge windows too): the check joins them on u, which only the day's events
            # match, and a ticker received before midnight may belong to an event of this day
            bt = sym_bt
            if bt.height:
                bt_parts.append(bt)

        for w in writes:
            w.result()
    events = pl.concat(events_parts) if events_parts else _empty_events()
    # exact duplicates (same ids, time and levels; e.g. a segment uploaded twice or a reconnect overlap):
    # keep the earliest receive
    dup_keys = ["U", "u", "pu", "E", "n_levels", "levels_hash"]
    order = events.select("ev", "receive_ns", *dup_keys).sort("receive_ns", "ev")
    first = order.select("ev", pl.struct(dup_keys).is_first_distinct().alias("first"))
    events = events.join(first, on="ev", how="left").with_columns((~pl.col("first")).alias("dup")).drop("first")
    events = events.sort("ev")
    report.duplicates = int(events["dup"].sum())
    live = events.filter(~pl.col("dup"))
    report.events = live.height
    if live.height:
        lo = live.select(lo_expr(market))["lo"].to_numpy()
        hi = live["u"].to_numpy()
        report.segments = union_ranges(lo, hi)
        report.gaps = gaps_between(report.segments)
        report.covered_ids = sum(h - lo_ for lo_, h in report.segments)
        report.first_update_id = int(live["U"].min())  # type: ignore[arg-type]
        report.last_update_id = int(live["u"].max())  # type: ignore[arg-type]
        report.first_exchange_ms = int(live["E"].min())  # type: ignore[arg-type]
        report.last_exchange_ms = int(live["E"].max())  # type: ignore[arg-type]
        lat = ((live["receive_ns"] - live["E"] * 10**6) / 1e6).to_numpy()
        report.latency_p50_ms = float(np.percentile(lat, 50))
        report.latency_p99_ms = float(np.percentile(lat, 99))
        report.clock_offset_ms = float(lat.min())
    if price_dec:
        report.price_decimals = max(price_dec)
        report.qty_decimals = max(qty_dec)
        report.mixed_decimals_levels = (sum(price_dec.values()) - price_dec[report.price_decimals]) + (
            sum(qty_dec.values()) - qty_dec[report.qty_decimals])

    snapshots = pl.concat(snaps_parts) if snaps_parts else _empty_snapshots()
    snapshot_levels = pl.concat(snap_lv_parts) if snap_lv_parts else pl.DataFrame(
        schema={"snap": pl.Int64, "is_bid": pl.Boolean, "price": pl.Float64, "qty": pl.Float64})
    book_tickers = carry.union_book_tickers(pl.concat(bt_parts) if bt_parts else pl.DataFrame(schema=_bt_schema()))
    meta_rows = carry.union_meta(meta_rows)
    report.snapshots = snapshots.height
    report.book_tickers = book_tickers.height
    report.meta_lines = len(meta_rows)
    report.quarantined = len(quarantine)
    report.quarantine_reasons = dict(Counter(_reason_class(q["reason"]) for q in quarantine))

    for name, frame in (
        (EVENTS_FILE, events), (SNAPSHOTS_FILE, snapshots), (SNAPSHOT_LEVELS_FILE, snapshot_levels),
        (BOOK_TICKERS_FILE, book_tickers),
        (QUARANTINE_FILE, pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA)),
        (META_FILE, pl.DataFrame(meta_rows, schema={"receive_ns": pl.Int64, "text": pl.Binary}, orient="row")),
    ):
        report.files[name] = put_parquet(store, prefix + name, frame).etag
        written.add(prefix + name)
    put_json(store, prefix + REPORT_FILE, report.to_dict())
    written.add(prefix + REPORT_FILE)
    replace_prefix(store, prefix, written)
    return report


def _count_small(counter: Counter[int], values: pl.Series) -> None:
    """Add the counts of small non-negative ints (decimals) to ``counter``: one bincount pass, no hashing."""
    if not len(values):
        return
    arr = values.to_numpy()
    if values.null_count() == 0 and int(arr.min()) >= 0:
        for v, n in enumerate(np.bincount(arr.astype(np.int64)).tolist()):
            if n:
                counter[v] += n
    else:
        counter.update(dict(values.value_counts().iter_rows()))


def _reason_class(reason: str) -> str:
    """Group quarantine reasons for counting (drop the variable tail)."""
    return reason.split(":")[0][:60]


def _q_row(q: QuarantineEntry, batch: list[tuple[ObjectInfo, RawObjectKey]]) -> dict[str, Any]:
    return {"object_key": batch[q.object_index][0].key, "line_no": q.line_no, "receive_ns": q.receive_ns,
            "reason": q.reason, "text": q.text}


def _record_object_dates(report: StreamDayReport, events: pl.DataFrame, snapshots: pl.DataFrame) -> None:
    """The set of event dates (E's UTC day; receive day where E is absent) each object holds (``obj``: the
    index into ``report.objects``)."""
    frames = [
        events.select("obj", _day_of(pl.col("E")).alias("d")),
        snapshots.select("obj", _day_of(pl.coalesce(pl.col("E"), pl.col("receive_ns") // 10**6)).alias("d")),
    ]
    days = pl.concat(frames).unique().sort("obj", "d")
    for obj, d in days.iter_rows():
        report.objects[obj].event_dates.append(date_of_day_index(d))
    objs = events["obj"].to_numpy()
    if len(objs):
        for obj in np.flatnonzero(counts := np.bincount(objs.astype(np.int64))).tolist():
            report.objects[obj].events += int(counts[obj])


def _empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema={
        "obj": pl.Int32, "line_no": pl.Int64, "receive_ns": pl.Int64, "E": pl.Int64, "T": pl.Int64, "U": pl.Int64,
        "u": pl.Int64, "pu": pl.Int64, "n_levels": pl.Int32, "levels_hash": pl.Int64, "ev": pl.Int64,
        "part": pl.Int32})


def _empty_snapshots() -> pl.DataFrame:
    return pl.DataFrame(schema={"obj": pl.Int32, "line_no": pl.Int64, "receive_ns": pl.Int64, "E": pl.Int64,
                                "T": pl.Int64, "last_update_id": pl.Int64, "n_levels": pl.Int32, "snap": pl.Int64})


def _bt_schema() -> dict[str, pl.DataType]:
    from depth_core.events import BOOK_TICKER_SCHEMA

    return BOOK_TICKER_SCHEMA
