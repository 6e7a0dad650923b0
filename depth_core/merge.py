"""A/B merge of the validated streams of one symbol-day into the merged dataset (docs/analysts.md, "Columns").

The rule (docs/merge.md has the reasoning): walk the update-id line. The book is "at" id ``last``; any event
(of any stream) with ``lo <= last < hi`` (see ``idline``) brings it exactly to ``hi``, because each level in
an event carries the absolute quantity after the event's last id and holds every level changed in its
range, so re-applying the part already applied is harmless. Among those, the earliest received wins and is
recorded as the supplier. Streams that batch differently are handled by this tiling of id ranges, never by
matching messages. When no event applies, the ids up to the next event are a real gap: the events after it
are still written, with ``book_exact`` false, until the earliest snapshot (any stream) from which the chain
resumes, emitted as image rows (no received id is dropped). The version is written under ``staging/`` and
published only if verified and not smaller than the published one (``depth_core.publish``).

Memory: the streams' per-event tables serve the plan and the checks before the output; then the plan's
per-item columns and a few of the chosen events' (``_ItemColumns``) wait in a temporary file
(``_ParkedItems``), each output file reading back its own items, and only the other-batching candidates
(``_Candidates``) stay in memory; level rows are streamed: the output is written in files of
``ROWS_PER_FILE`` rows, each gathered from the level parts of the streams by event number (row-group
statistics prune the reads). So the peak does not grow with the day's length.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numba
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from depth_core.checks import MergeChecker
from depth_core.days import DAY_MS, day_index, previous_day
from depth_core.idline import intersect_length
from depth_core.layout import (
    STATE_BOOK,
    STATE_JSON,
    merged_manifest_key,
    published_file_key,
    staging_prefix,
    state_book_key,
    state_day_prefix,
)
from depth_core.level_parts import read_level_rows
from depth_core.memory import pass_settings, release_free_memory, size_classed_empty
from depth_core.merge_types import (
    CarryState,
    GapRecord,
    MergeReport,
    Plan,
    StreamInput,
    StreamStats,
)
from depth_core.names import Market, validate_collector_id, validate_date, validate_market, validate_symbol
from depth_core.publish import (
    PublishedDay,
    PublishError,
    ShrinkFinding,
    new_version_id,
    publish_version,
    read_published,
    shrink_against,
)
from depth_core.schema import (
    MERGED_SCHEMA,
    SIDE_ASK,
    SIDE_BID,
    merged_frame,
    merged_parquet_bytes,
    string_codes,
)
from depth_core.storeio import get_json, put_parquet, read_arrow, read_parquet, scan_parquet
from depth_core.validate import read_symbol_day_report
from depth_core.validated_layout import (
    BOOK_TICKERS_FILE,
    EVENTS_FILE,
    SNAPSHOT_LEVELS_FILE,
    SNAPSHOTS_FILE,
    MissingStateError,
    level_part_keys,
    validated_file_key,
)
from depth_store.base import ObjectInfo, ObjectNotFoundError, ObjectStore, StoreError

ROWS_PER_FILE = 1_000_000
MANIFEST_VERSION = 2

KIND_EVENT, KIND_SNAPSHOT, KIND_CARRY = 0, 1, 2
_NO_TARGET = np.iinfo(np.int64).max  # an inexact stretch with no snapshot after it runs to the day's end


# ------------------------------------------------------------------------------------------------ inputs


def _load_stream(
    store: ObjectStore, market: Market, stream: str, symbol: str, date: str
) -> StreamInput | None:
    """The validated stream-symbol-day: exactly the files its committed ``report.json`` names.

    None when there is no report (never validated). A file the report names that is missing is an error
    (``MissingStateError``), never an empty stream: validated data may be the only copy after a cleanup.
    """
    committed = read_symbol_day_report(store, market, stream, symbol, date)
    if committed is None:
        return None
    report = committed[0]

    def missing(key: str) -> MissingStateError:
        return MissingStateError(
            f"validated {stream} {symbol} {date}: {key}, named by its report, is missing "
            "(re-validate the stream-day; nothing was merged)"
        )

    def read(name: str, columns: list[str] | None = None) -> pl.DataFrame:
        key = validated_file_key(report, name)
        try:
            return read_parquet(store, key, columns)
        except ObjectNotFoundError as exc:
            raise missing(key) from exc

    # only the columns the merge and its checks use: the per-event tables are held for the whole merge
    key = validated_file_key(report, EVENTS_FILE)
    # read only those columns (and the duplicate flag): a whole-table read would peak at twice the memory
    try:
        names = scan_parquet(store, key).collect_schema().names()
    except Exception as exc:
        if store.exists(key):
            raise
        raise missing(key) from exc
    wanted = [c for c in _event_columns(market) if c in names]
    try:
        table = read_arrow(store, key, wanted + (["dup"] if "dup" in names else []))
    except ObjectNotFoundError as exc:
        raise missing(key) from exc
    return StreamInput(
        stream,
        report,
        _held_events(market, table),
        read(SNAPSHOTS_FILE),
        read(SNAPSHOT_LEVELS_FILE),
        read(BOOK_TICKERS_FILE),
    )


def _held_events(market: Market, table: pa.Table) -> pl.DataFrame:
    """The per-event table the merge holds, with ``lo`` and without exact duplicates, in pyarrow's memory
    (``depth_core.storeio.read_arrow``): polars wraps it without a copy, and its memory is returned when the
    merge drops it, before the output loop (read by polars, ~130 MiB of a bench day's were still held by
    polars' allocator as the loop began, returned only over its decay time). Duplicates are filtered only
    when there are some (no copy of the table otherwise)."""
    if "dup" in table.column_names:
        dup = table["dup"]
        if pc.any(dup).as_py():
            table = table.filter(pc.invert(dup))
        table = table.drop_columns("dup")
    first = table["U"]
    lo = pc.subtract(first, pa.scalar(1, first.type))
    if market == "usdm" and "pu" in table.column_names:
        lo = pc.coalesce(table["pu"], lo)  # the rule of ``depth_core.idline.lo_expr``
    frame = pl.from_arrow(table.append_column("lo", lo).combine_chunks())
    assert isinstance(frame, pl.DataFrame)
    return frame


def _event_columns(market: Market) -> list[str]:
    """The event columns the merge uses (spot events have no transaction time nor previous update id);
    ``levels_hash`` for the checks before the output."""
    cols = ["ev", "part", "receive_ns", "E", "U", "u", "n_levels"]
    if market == "usdm":
        cols += ["T", "pu"]
    return [*cols, "levels_hash"]


def _load_carry(
    store: ObjectStore, market: Market, symbol: str, date: str
) -> tuple[CarryState | None, str | None]:
    """The previous day's end book, only from its *published* (verified) version; else None and why.

    The published manifest names the end state (``end_state``: book key and etag); an unpublished or
    failed merge of D-1 never reaches D. A manifest naming a book that is gone or changed is an error,
    never a silent "no carry". Manifests of the layout before versions (no ``end_state``) are honoured
    only when they passed their blocking checks.
    """
    prev = previous_day(date)
    published = read_published(store, market, symbol, prev)
    manifest = published.manifest
    if manifest is None:
        return None, f"{prev} has no published merge: the day opens from its first snapshot"
    if not manifest.get("blocking_passed", False):
        return None, f"the merge of {prev} did not pass its blocking checks: its end state is not carried"
    end_state = manifest.get("end_state")
    if end_state is None:  # the layout before published versions
        prefix = state_day_prefix(market, symbol, prev)
        if not store.exists(prefix + STATE_JSON):
            return None, f"{prev} has no recorded end state"
        meta = get_json(store, prefix + STATE_JSON)
        if not meta.get("blocking_passed") or meta.get("last_update_id") is None:
            return None, f"the end state of {prev} is not verified"
        end_state = {**meta, "book_key": prefix + STATE_BOOK, "book_etag": None, "book_exact": True}
    if end_state.get("last_update_id") is None:
        return None, f"{prev} has no events to carry"
    if not end_state.get("book_exact", True):
        return (
            None,
            f"the book at the end of {prev} is not exact (its last rows follow a gap no image resolved)",
        )
    book_key = str(end_state["book_key"])
    info = store.head(book_key)
    if info is None or (end_state.get("book_etag") and info.etag != end_state["book_etag"]):
        raise PublishError(
            f"the published merge of {symbol} {prev} names its end book {book_key} "
            f"(etag {end_state.get('book_etag')}), but it is {'missing' if info is None else 'changed'}: "
            f"re-merge {prev} before {date}"
        )
    book = read_parquet(store, book_key)
    band = end_state.get("anchor_band")
    anchor_band: tuple[float, float] | None = None
    if isinstance(band, list) and len(band) == 2:
        # null = an empty side: nothing of it is known (+inf lowest bid, -inf highest ask)
        anchor_band = (
            np.inf if band[0] is None else float(band[0]),
            -np.inf if band[1] is None else float(band[1]),
        )
    return CarryState(prev, int(end_state["last_update_id"]), book, anchor_band), None


# ------------------------------------------------------------------------------------------------ the walk


@numba.njit(cache=True, nogil=True)
def _grown(a: np.ndarray) -> np.ndarray:
    out = np.empty(2 * a.shape[0], a.dtype)
    out[: a.shape[0]] = a
    return out


@numba.njit(cache=True, nogil=True)
def _heap_push(heap_r: np.ndarray, heap_i: np.ndarray, size: int, r: int, i: int) -> None:
    """Push (r, i) onto the binary min-heap of ``size`` entries (by r, then i); the caller grows size."""
    j = size
    while j > 0:
        parent = (j - 1) >> 1
        if heap_r[parent] < r or (heap_r[parent] == r and heap_i[parent] < i):
            break
        heap_r[j] = heap_r[parent]
        heap_i[j] = heap_i[parent]
        j = parent
    heap_r[j] = r
    heap_i[j] = i


@numba.njit(cache=True, nogil=True)
def _walk(
    lo: np.ndarray,
    hi: np.ndarray,
    recv: np.ndarray,
    start: int,
    snap_ids: np.ndarray,
    exact_start: bool,
    first_target: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The walk along the id line (events sorted by lo; usable snapshot ids ascending).

    Exact mode (the book is known at ``last``): take the earliest-received applicable event. When none
    applies, ids ``last+1..next_lo`` are a gap: record it and go inexact. Inexact mode (after a gap, or
    before the first image of a day without a carried book): keep tiling the id line with the received
    events that end at or before the target snapshot (the earliest usable one after the gap; none: the
    rest of the day), flagged inexact; ids no event has are recorded as gaps too; then emit the target
    image and go exact. ``first_target``: index of the target snapshot when starting inexact (-1: none).

    Output rows (kind, ref, exact): (KIND_EVENT, event index, exact flag); (KIND_SNAPSHOT, snapshot index, 1)
    for an image; and apart, in walk order, the gaps (target snapshot index or -1, first missing id, last
    missing id). A binary heap keyed by receive time holds the applicable events.
    """
    n = lo.shape[0]
    m = n + snap_ids.shape[0] + 2  # each event is chosen once at most, each snapshot is an image once at most
    out_kind = np.empty(m, np.int8)
    out_ref = np.empty(m, np.int64)
    out_exact = np.zeros(m, np.bool_)
    gap_ref = np.empty(16, np.int64)  # gap rows apart (few): they grow by doubling
    gap_a = np.empty(16, np.int64)
    gap_b = np.empty(16, np.int64)
    g = 0
    heap_r = np.empty(n + 1, np.int64)
    heap_i = np.empty(n + 1, np.int64)
    stash = np.empty(n + 1, np.int64)
    size = 0
    k = 0
    p = 0
    last = start
    exact = exact_start
    tj = first_target
    target = snap_ids[tj] if tj >= 0 else _NO_TARGET
    while True:
        while p < n and lo[p] <= last:
            if hi[p] > last:
                _heap_push(heap_r, heap_i, size, recv[p], p)
                size += 1
            p += 1
        # pop until the top is applicable (stale ones have hi <= last); inexact: set aside those ending past
        # the target (they apply after its image)
        chosen = -1
        n_stash = 0
        while size > 0:
            top = heap_i[0]
            # remove the root
            size -= 1
            r_last = heap_r[size]
            i_last = heap_i[size]
            j = 0
            while True:
                c = 2 * j + 1
                if c >= size:
                    break
                if c + 1 < size and (
                    heap_r[c + 1] < heap_r[c] or (heap_r[c + 1] == heap_r[c] and heap_i[c + 1] < heap_i[c])
                ):
                    c += 1
                if r_last < heap_r[c] or (r_last == heap_r[c] and i_last <= heap_i[c]):
                    break
                heap_r[j] = heap_r[c]
                heap_i[j] = heap_i[c]
                j = c
            if size > 0:
                heap_r[j] = r_last
                heap_i[j] = i_last
            if hi[top] <= last:
                continue
            if not exact and hi[top] > target:
                stash[n_stash] = top
                n_stash += 1
                continue
            chosen = top
            break
        for t in range(n_stash):
            q = stash[t]
            _heap_push(heap_r, heap_i, size, recv[q], q)
            size += 1
        if chosen >= 0:
            out_kind[k] = KIND_EVENT
            out_ref[k] = chosen
            out_exact[k] = exact
            k += 1
            last = hi[chosen]
            continue
        if exact:
            if p >= n:
                break
            # a gap: ids last+1..next_lo no stream received; the book is unknown until the next usable
            # snapshot
            tj = int(np.searchsorted(snap_ids, last, side="right"))
            if tj >= snap_ids.shape[0]:
                tj = -1
            target = snap_ids[tj] if tj >= 0 else _NO_TARGET
            if g == gap_ref.shape[0]:
                gap_ref, gap_a, gap_b = _grown(gap_ref), _grown(gap_a), _grown(gap_b)
            gap_ref[g] = tj
            gap_a[g] = last + 1
            gap_b[g] = lo[p]
            g += 1
            last = lo[p]
            exact = False
            continue
        if p < n and lo[p] < target:
            if size == 0:  # no event has ids last+1..lo[p]: another hole inside the inexact stretch
                if g == gap_ref.shape[0]:
                    gap_ref, gap_a, gap_b = _grown(gap_ref), _grown(gap_a), _grown(gap_b)
                gap_ref[g] = tj
                gap_a[g] = last + 1
                gap_b[g] = lo[p]
                g += 1
            last = lo[p]
            continue
        if tj < 0:
            break
        out_kind[k] = KIND_SNAPSHOT
        out_ref[k] = tj
        out_exact[k] = True
        k += 1
        last = target
        exact = True
    return out_kind[:k], out_ref[:k], out_exact[:k], gap_ref[:g], gap_a[:g], gap_b[:g]


def plan_merge(market: Market, streams: Sequence[StreamInput], carry: CarryState | None) -> Plan:
    """Choose, along the id line, which stream's event supplies each step, and where images go."""
    sn_parts = []
    for i, s in enumerate(streams):
        sn_parts.append(
            s.snapshots.select(pl.lit(i, pl.Int32).alias("s"), "snap", "last_update_id", "receive_ns")
        )
    # every stream's events ordered by (lo, receive time, stream, ev): one numpy sort (no frame copies). The
    # day's events are held meanwhile: one column at a time, at most one unsorted copy is alive, and the
    # stream and ev of a row are one int64 (``source``), so the planning's peak is a few day-long columns
    lo = _day_column(streams, "lo")
    recv = _day_column(streams, "receive_ns")
    source = _day_column(streams, "ev")
    per_stream = int(source.max()) + 1 if len(source) else 1  # more than any stream's ev
    offset = 0
    for i, s in enumerate(streams):  # source = stream * per_stream + ev: sorts as (stream, ev)
        source[offset : offset + s.events.height] += i * per_stream
        offset += s.events.height
    order = np.lexsort((source, recv, lo))
    lo = lo[order]
    recv = recv[order]
    source = source[order]
    hi = _day_column(streams, "u")[order]
    del order
    run_hi = np.maximum.accumulate(hi) if len(hi) else hi

    sn = pl.concat(sn_parts).sort("last_update_id", "receive_ns", "s") if sn_parts else pl.DataFrame()
    sn_L = sn["last_update_id"].to_numpy() if sn.height else np.zeros(0, np.int64)
    # a snapshot lets the chain resume if some event has lo <= L < hi
    if len(sn_L) and len(lo):
        idx = np.searchsorted(lo, sn_L, side="right") - 1
        usable = (idx >= 0) & (run_hi[np.maximum(idx, 0)] > sn_L)
    else:
        usable = np.zeros(len(sn_L), dtype=bool)
    u_L = np.ascontiguousarray(sn_L[usable], dtype=np.int64)
    u_s = sn["s"].to_numpy()[usable] if sn.height else np.zeros(0, np.int32)
    u_ref = sn["snap"].to_numpy()[usable] if sn.height else np.zeros(0, np.int64)

    kinds: list[int] = []
    srcs: list[int] = []
    refs: list[int] = []
    uids: list[int] = []
    los: list[int] = []
    gaps: list[GapRecord] = []
    opening: dict[str, Any] = {}

    carried = False
    if carry is not None and len(lo):
        j = int(np.searchsorted(lo, carry.last_update_id, side="right")) - 1
        if j >= 0 and run_hi[j] > carry.last_update_id:
            carried = True
            kinds.append(KIND_CARRY)
            srcs.append(-1)
            refs.append(-1)
            uids.append(carry.last_update_id)
            los.append(carry.last_update_id)
            opening = {"kind": "carry", "source": f"carry:{carry.date}", "update_id": carry.last_update_id}
    if carried:
        assert carry is not None
        w = _walk(lo, hi, recv, carry.last_update_id, u_L, True, -1)
    elif len(lo):
        # no carried book: events before the first usable snapshot are kept, inexact, then its image
        w = _walk(lo, hi, recv, int(lo[0]), u_L, False, 0 if len(u_L) else -1)
    else:
        w = _walk(lo, hi, recv, 0, u_L, True, -1)
    w_kind, w_ref, w_exact, g_ref, g_a, g_b = w
    del recv, run_hi, w  # the walk's own; the rows' values are picked from the other columns
    for ref, a, b in zip(g_ref.tolist(), g_a.tolist(), g_b.tolist(), strict=True):
        if ref >= 0:
            gaps.append(GapRecord(a, b, int(u_L[ref]), f"snapshot:{streams[int(u_s[ref])].stream}"))
        else:  # no snapshot after it: the rest of the day stays inexact
            gaps.append(GapRecord(a, b, None, None))
    is_ev = w_kind == KIND_EVENT
    images = np.flatnonzero(~is_ev)
    unanchored = 0
    if not carried:
        first_image = int(images[0]) if len(images) else len(w_kind)
        unanchored = first_image  # the inexact events before the first image
        if len(images):
            ref = int(w_ref[first_image])
            opening = {
                "kind": "snapshot",
                "source": f"snapshot:{streams[int(u_s[ref])].stream}",
                "update_id": int(u_L[ref]),
            }
        else:
            opening = {
                "kind": "none",
                "source": None,
                "update_id": None,
                "reason": "no snapshot from which the id chain can start: every row is book_exact false",
            }
    # each plan column is written in place: the head's rows (a carried book), then per walk row the chosen
    # event's value, then the images' (few) over theirs; no day-long temporaries beyond the event indices
    head = len(kinds)
    ev_i = np.where(is_ev, w_ref, 0) if len(lo) else np.zeros(0, np.int64)
    sn_i = w_ref[images]
    del is_ev

    def column(head_values: list[int], ev_col: np.ndarray, sn_col: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.empty(head + len(w_kind), np.int64)
        out[:head] = head_values
        if len(ev_i):
            np.take(ev_col, ev_i, out=out[head:])
        else:
            out[head:] = 0
        out[head + images] = sn_col[sn_i]
        return out

    src = np.take(source, ev_i) if len(ev_i) else np.zeros(len(w_kind), np.int64)
    del source
    stream = np.empty(head + len(w_kind), np.int32)
    stream[:head] = srcs
    np.floor_divide(src, per_stream, out=stream[head:], casting="unsafe")
    stream[head + images] = u_s[sn_i]
    ref_col = np.empty(head + len(w_kind), np.int64)
    ref_col[:head] = refs
    np.remainder(src, per_stream, out=ref_col[head:])
    ref_col[head + images] = u_ref[sn_i]
    del src
    return Plan(
        np.concatenate([np.array(kinds, np.int8), w_kind.astype(np.int8)]),
        stream,
        ref_col,
        column(uids, hi, u_L),
        column(los, lo, u_L),
        gaps,
        opening,
        unanchored,
        np.concatenate([np.ones(head, dtype=bool), w_exact.astype(bool)]),
    )


def _day_column(streams: Sequence[StreamInput], name: str) -> np.ndarray:
    """One int64 column of every stream's events, end to end (a new array: the planning sorts it)."""
    parts = [s.events[name].to_numpy() for s in streams]
    return np.concatenate(parts, dtype=np.int64) if parts else np.zeros(0, np.int64)


# ------------------------------------------------------------------------------------------------ output


_NULL = np.iinfo(np.int64).min  # a null transaction time / previous update id while rows are assembled


def _levels_of(
    store: ObjectStore, symbol: str, date: str, s: StreamInput, ev: np.ndarray, part: np.ndarray
) -> _Levels:
    """Level rows of the events ``ev`` (held in level parts ``part``), ordered by ``ev`` (rows of one event in
    their order in the event)."""
    parts = np.unique(part).tolist()
    lo_ev, hi_ev = int(ev.min()), int(ev.max())
    part_keys = level_part_keys(s.report)  # exactly the parts the committed report names
    keys = []
    for p in parts:
        key = part_keys.get(p)
        if key is None:
            raise MissingStateError(
                f"validated {s.stream} {symbol} {date}: level part {p} of its events is "
                "not named by its report"
            )
        keys.append(key)
    try:
        out = _Levels(*read_level_rows(store, keys, (lo_ev, hi_ev), np.sort(ev)))
    except ObjectNotFoundError as exc:
        raise MissingStateError(
            f"validated {s.stream} {symbol} {date}: level part {exc.args[0]} named by its report is missing"
        ) from exc
    if len(out.ev) > 1 and not bool((out.ev[1:] >= out.ev[:-1]).all()):
        order = np.argsort(out.ev, kind="stable")  # stable: an event's rows keep their order
        out = _Levels(out.ev[order], out.is_bid[order], out.price[order], out.qty[order])
    return out


class _Levels:
    """Level rows of one stream's events, sorted by event number (numpy columns)."""

    def __init__(self, ev: np.ndarray, is_bid: np.ndarray, price: np.ndarray, qty: np.ndarray) -> None:
        self.ev, self.is_bid, self.price, self.qty = ev, is_bid, price, qty

    def spans(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For events (event numbers): the first of their level rows here and how many there are."""
        start, count = np.empty(len(events), np.int64), np.empty(len(events), np.int64)
        if not _spans_of_sorted(self.ev, events, start, count):  # events out of order: binary search
            start = np.searchsorted(self.ev, events, side="left")
            count = np.searchsorted(self.ev, events, side="right") - start
        return start, count

    def rows_of(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For events (event numbers): the level rows of each, in event order then level order, as
        (row index into these levels, index into ``events`` of each row, position of the row in its event)."""
        start, count = self.spans(events)
        total = int(count.sum())
        which = np.repeat(np.arange(len(events), dtype=np.int64), count)
        first = np.cumsum(count) - count  # output row of each event's first level
        k = np.arange(total, dtype=np.int64) - first[which]
        return start[which] + k, which, k


@numba.njit(cache=True, nogil=True)
def _spans_of_sorted(ev: np.ndarray, events: np.ndarray, start: np.ndarray, count: np.ndarray) -> bool:
    """:meth:`_Levels.spans` in one pass over both (``ev`` sorted): False, with the outputs unfinished, when
    ``events`` are not in order. A file's chosen events usually are (events are numbered as they arrive),
    and one pass costs a fraction of two binary searches per event over a million rows."""
    j = 0
    n = len(ev)
    for i in range(len(events)):
        x = events[i]
        if i and x < events[i - 1]:
            return False
        while j < n and ev[j] < x:
            j += 1
        k = j
        while k < n and ev[k] == x:
            k += 1
        start[i] = j
        count[i] = k - j
    return True


class _ItemColumns:
    """Per plan item, the columns of its chosen event that the output rows need beyond the plan (``ev`` is
    ``plan.ref``, ``u`` is ``plan.update_id``; images hold fillers) and its level-row count: numpy, taken
    from the streams' per-event tables once, so that the tables can go before the output loop."""

    def __init__(self, market: Market, inputs: Sequence[StreamInput], plan: Plan) -> None:
        n = len(plan.kind)
        self.counts = np.zeros(n, np.int64)  # level rows per plan item (images: filled by the caller)
        self.part = np.full(n, -1, np.int32)  # the level part holding the event's levels
        names = ["receive_ns", "E", "U"] + (["T", "pu"] if market == "usdm" else [])
        self.cols = {name: np.full(n, _NULL, np.int64) for name in names}  # _NULL: null
        is_event = plan.kind == KIND_EVENT
        for i, s in enumerate(inputs):
            # the stream's chosen events, found by event number (binary search, no hash join)
            pos = np.flatnonzero(is_event & (plan.stream == i))
            ev_col = s.events["ev"].to_numpy()
            ref = plan.ref[pos]
            if s.events["ev"].is_sorted():  # read in event order: no sort needed
                rows = np.minimum(np.searchsorted(ev_col, ref), max(len(ev_col) - 1, 0))
            else:
                by_ev = np.argsort(ev_col, kind="stable")
                rows = by_ev[np.minimum(np.searchsorted(ev_col, ref, sorter=by_ev), max(len(ev_col) - 1, 0))]
            if len(rows) and not bool((ev_col[rows] == ref).all()):
                raise AssertionError(
                    f"the plan names events of {s.stream} that its validated events do not hold"
                )
            self.counts[pos] = s.events["n_levels"].to_numpy()[rows]
            self.part[pos] = s.events["part"].to_numpy()[rows]
            for name, dest in self.cols.items():
                col = s.events[name]
                dest[pos] = (col.fill_null(_NULL) if col.null_count() else col).to_numpy()[rows]


_PLAN_COLUMNS = ("kind", "stream", "ref", "update_id", "lo", "exact")


class _Items:
    """Plan items ``a``..``a + len(kind)`` (one output file) as numpy columns indexed from 0 (= item ``a``):
    the plan's and their chosen events' (``_ItemColumns``)."""

    def __init__(self, parked: _ParkedItems, a: int, b: int) -> None:
        self.a = a
        self.kind = parked.read("kind", a, b)
        self.stream = parked.read("stream", a, b)
        self.ref = parked.read("ref", a, b)
        self.update_id = parked.read("update_id", a, b)
        self.exact = parked.read("exact", a, b)
        self.counts = parked.read("counts", a, b)
        self.part = parked.read("part", a, b)
        self.cols = {name: parked.read(f"col:{name}", a, b) for name in parked.event_columns}


class _ParkedItems:
    """The plan's per-item columns and the chosen events' (``_ItemColumns``) in a temporary file while the
    output loop runs: each output file reads back only its own items (``items(a, b)``), so what the loop
    holds does not grow with the day's length (≈ 70 bytes per chosen event otherwise). The plan's arrays are
    empty meanwhile; ``restore`` puts them back for the checks' outcomes and the manifest."""

    def __init__(self, plan: Plan, items: _ItemColumns) -> None:
        self.plan = plan
        self.event_columns = list(items.cols)
        columns = {
            **{name: getattr(plan, name) for name in _PLAN_COLUMNS},
            "counts": items.counts,
            "part": items.part,
            **{f"col:{name}": values for name, values in items.cols.items()},
        }
        # closed (and so removed) by restore(), after the output loop
        self.file = tempfile.TemporaryFile(prefix="depth-merge-items-")  # noqa: SIM115
        self.where: dict[str, tuple[int, np.dtype[Any], int]] = {}
        offset = 0
        for name, values in columns.items():
            values = np.ascontiguousarray(values)
            self.file.write(values.data.cast("B"))
            self.where[name] = (offset, values.dtype, len(values))
            offset += values.nbytes
        self.file.flush()
        for name in _PLAN_COLUMNS:
            setattr(plan, name, getattr(plan, name)[:0].copy())

    def read(self, name: str, a: int, b: int) -> np.ndarray:
        offset, dtype, n = self.where[name]
        b = min(b, n)
        a = min(a, b)
        out = np.empty(b - a, dtype)
        self.file.seek(offset + a * dtype.itemsize)
        if self.file.readinto(out.data.cast("B")) != out.nbytes:
            raise OSError(f"the merge's temporary item file is short at {name} {a}..{b}")
        return out

    def items(self, a: int, b: int) -> _Items:
        return _Items(self, a, b)

    def restore(self) -> None:
        """The plan's arrays back in memory; the file is removed."""
        try:
            for name in _PLAN_COLUMNS:
                setattr(self.plan, name, self.read(name, 0, self.where[name][2]))
        finally:
            self.file.close()


class _Candidates:
    """One stream's events of another batching: not chosen, ending at the end ``u`` of an exact chosen event
    (plan position ``pos``) but starting elsewhere; ordered by ``pos`` (then event number)."""

    def __init__(self, pos: np.ndarray, ev: np.ndarray, part: np.ndarray, first_id: np.ndarray) -> None:
        self.pos, self.ev, self.part, self.first_id = pos, ev, part, first_id

    def between(self, a: int, b: int) -> _Candidates | None:
        """The candidates whose event end is one of plan items a..b (None: none)."""
        i, j = np.searchsorted(self.pos, [a, b])
        if j <= i:
            return None
        return _Candidates(self.pos[i:j], self.ev[i:j], self.part[i:j], self.first_id[i:j])


def _other_candidates(inputs: Sequence[StreamInput], plan: Plan) -> list[_Candidates | None]:
    """Per stream: its events not chosen whose ``u`` ends an exact chosen event but whose range differs.

    Each carries the absolute quantities after its ``u``, so the replayed book after that event end must
    hold exactly them (``streams_agree`` for different batchings; identical ranges are compared by hash).
    Found once for the day (a binary search of every event's ``u`` in the plan's event ends, which strictly
    increase), so the per-event tables need not be held while the files are written.
    """
    if len(inputs) < 2:
        return [None] * len(inputs)
    ends = np.flatnonzero((plan.kind == KIND_EVENT) & plan.exact)  # an inexact event's book is unknown
    ends_u = plan.update_id[ends]
    if len(ends_u) > 1 and not bool((ends_u[1:] > ends_u[:-1]).all()):
        raise AssertionError("the plan's event ends do not strictly increase")
    out: list[_Candidates | None] = []
    for s in inputs:
        if not len(ends) or not s.events.height:
            out.append(None)
            continue
        u = s.events["u"].to_numpy()
        j = np.minimum(np.searchsorted(ends_u, u), len(ends_u) - 1)
        hit = np.flatnonzero((ends_u[j] == u) & (s.events["lo"].to_numpy() != plan.lo[ends[j]]))
        if not len(hit):
            out.append(None)
            continue
        pos = ends[j[hit]]
        order = np.argsort(pos, kind="stable")  # stable: by event number within one event end
        hit, pos = hit[order], pos[order]
        out.append(
            _Candidates(
                pos,
                s.events["ev"].to_numpy()[hit],
                s.events["part"].to_numpy()[hit],
                s.events["U"].to_numpy()[hit],
            )
        )
    return out


def _other_rows(si: int, lv: _Levels, cand: _Candidates, it: _Items) -> pl.DataFrame:
    """Levels (b, is_bid, price, qty, U, s, s_c) of the candidate events ``cand`` of stream ``si``."""
    idx, which, _k = lv.rows_of(cand.ev)
    at = cand.pos[which] - it.a  # item (in this file) whose end each row is compared at
    return pl.DataFrame(
        {
            "b": it.update_id[at],
            "is_bid": lv.is_bid[idx],
            "price": lv.price[idx],
            "qty": lv.qty[idx],
            "U": cand.first_id[which],
            "s": np.full(len(idx), si, np.int32),
            "s_c": it.stream[at].astype(np.int32),
        }
    )


class _Rows:
    """The merged rows of one output file as numpy columns, filled item by item (any order), placed in plan
    order: an item's rows start at ``start[item]``; within an item in level order."""

    INT_COLUMNS = (
        "exchange_ms",
        "transaction_ms",
        "receive_ns",
        "first_update_id",
        "last_update_id",
        "prev_update_id",
    )

    def __init__(self, rows_per_item: np.ndarray, all_null: frozenset[str] = frozenset()) -> None:
        """``all_null``: integer columns known to be null in every row (spot has no transaction time and no
        previous update id): not filled, written as null columns."""
        self.start = np.cumsum(rows_per_item) - rows_per_item
        n = int(rows_per_item.sum())
        self.n, self.all_null = n, all_null
        # one array per column (8 MB a million rows: glibc reuses such blocks file after file, where one
        # 48 MB block of all six went to a fresh mmap, page-faulted in again for every file)
        # (size-classed: a file's row count differs a little from file to file)
        self.cols: dict[str, np.ndarray] = {
            c: size_classed_empty(0 if c in all_null else n, np.int64) for c in self.INT_COLUMNS
        }
        self.cols.update(
            is_snapshot=size_classed_empty(n, np.bool_),
            is_bid=size_classed_empty(n, np.bool_),
            price=size_classed_empty(n, np.float64),
            qty=size_classed_empty(n, np.float64),
            source=size_classed_empty(n, np.int32),
            book_exact=size_classed_empty(n, np.bool_),
        )
        self.sources: list[str] = []

    def source_code(self, source: str) -> int:
        if source not in self.sources:
            self.sources.append(source)
        return self.sources.index(source)

    def put(self, item: np.ndarray, k: np.ndarray, source: str, **cols: np.ndarray | int | bool) -> None:
        dest = self.start[item] + k
        self.cols["source"][dest] = self.source_code(source)
        for name, values in cols.items():
            if name in self.all_null:
                assert values is _NULL, f"{name} was taken to be null in every row"
                continue
            self.cols[name][dest] = values

    def table(self, symbol: str) -> pa.Table:
        """The merged rows in the merged columns, as written (:func:`merged_parquet_bytes`): ``symbol``,
        ``side`` and ``source`` are dictionaries over the codes already held (no string is built or hashed
        here; readers and checks get plain strings back: :func:`merged_frame`)."""
        c = self.cols
        n = self.n

        def nullable(name: str, kind: pa.DataType) -> pa.Array:
            if name in self.all_null:
                return pa.nulls(n, kind)
            nulls = c[name] == _NULL
            if not nulls.any():
                return pa.array(c[name], kind)
            if nulls.all():  # spot: no transaction time, no previous update id
                return pa.nulls(n, kind)
            return pa.array(c[name], kind, mask=nulls)

        ms = pa.timestamp("ms", "UTC")
        columns = {
            "symbol": string_codes(np.zeros(n, np.int8), [symbol]),
            "exchange_time": nullable("exchange_ms", ms),
            "transaction_time": nullable("transaction_ms", ms),
            "receive_time": pa.array(c["receive_ns"], pa.timestamp("ns", "UTC")),
            "first_update_id": pa.array(c["first_update_id"]),
            "last_update_id": pa.array(c["last_update_id"]),
            "prev_update_id": nullable("prev_update_id", pa.int64()),
            "is_snapshot": pa.array(c["is_snapshot"]),
            "side": string_codes(c["is_bid"].view(np.int8), [SIDE_ASK, SIDE_BID]),
            "price": pa.array(c["price"]),
            "qty": pa.array(c["qty"]),
            "source": string_codes(c["source"], self.sources or [""]),
            "book_exact": pa.array(c["book_exact"]),
        }
        return pa.table(columns)


@numba.njit(cache=True, nogil=True)
def _scatter_event_rows(
    dest_start: np.ndarray,
    lv_start: np.ndarray,
    lv_count: np.ndarray,
    ev_cols: np.ndarray,
    exact: np.ndarray,
    lv_is_bid: np.ndarray,
    lv_price: np.ndarray,
    lv_qty: np.ndarray,
    source: int,
    out_e_ms: np.ndarray,
    out_t_ms: np.ndarray,
    out_recv: np.ndarray,
    out_first: np.ndarray,
    out_last: np.ndarray,
    out_prev: np.ndarray,
    out_is_snapshot: np.ndarray,
    out_is_bid: np.ndarray,
    out_price: np.ndarray,
    out_qty: np.ndarray,
    out_source: np.ndarray,
    out_exact: np.ndarray,
    with_t_ms: bool,
    with_prev: bool,
) -> None:
    """Event i's level rows ``lv_start[i] .. + lv_count[i]`` to output rows ``dest_start[i] ..``, each with
    the event's integer columns (``ev_cols[:, i]``, in ``_Rows.INT_COLUMNS`` order): one pass, no index
    arrays (a numpy gather and scatter per column cost ≈ 3 CPU-s of a benchmark day). ``with_t_ms``,
    ``with_prev``: False where that column is null in every row (not filled)."""
    for i in range(dest_start.shape[0]):
        d0 = dest_start[i]
        r0 = lv_start[i]
        e_ms, t_ms, recv, first, last, prev = (
            ev_cols[0, i],
            ev_cols[1, i],
            ev_cols[2, i],
            ev_cols[3, i],
            ev_cols[4, i],
            ev_cols[5, i],
        )
        for k in range(lv_count[i]):
            d = d0 + k
            r = r0 + k
            out_e_ms[d] = e_ms
            if with_t_ms:
                out_t_ms[d] = t_ms
            out_recv[d] = recv
            out_first[d] = first
            out_last[d] = last
            if with_prev:
                out_prev[d] = prev
            out_is_snapshot[d] = False
            out_is_bid[d] = lv_is_bid[r]
            out_price[d] = lv_price[r]
            out_qty[d] = lv_qty[r]
            out_source[d] = source
            out_exact[d] = exact[i]


def _put_events(
    rows: _Rows,
    s: StreamInput,
    it: _Items,
    mine: np.ndarray,
    lv: _Levels,
    lv_start: np.ndarray,
    lv_count: np.ndarray,
) -> None:
    """The level rows of one stream's chosen events, items ``mine`` of the file (their level rows in ``lv``:
    ``lv_start``, ``lv_count``)."""
    null = np.full(len(mine), _NULL, np.int64)
    by_name = {
        "exchange_ms": it.cols["E"][mine],
        "transaction_ms": it.cols["T"][mine] if "T" in it.cols else null,
        "receive_ns": it.cols["receive_ns"][mine],
        "first_update_id": it.cols["U"][mine],
        "last_update_id": it.update_id[mine],
        "prev_update_id": it.cols["pu"][mine] if "pu" in it.cols else null,
    }
    ev_cols = np.ascontiguousarray(np.stack([by_name[c].astype(np.int64) for c in _Rows.INT_COLUMNS]))
    c = rows.cols
    _scatter_event_rows(
        rows.start[mine],
        lv_start,
        lv_count,
        ev_cols,
        it.exact[mine],
        lv.is_bid,
        lv.price,
        lv.qty,
        rows.source_code(s.stream),
        c["exchange_ms"],
        c["transaction_ms"],
        c["receive_ns"],
        c["first_update_id"],
        c["last_update_id"],
        c["prev_update_id"],
        c["is_snapshot"],
        c["is_bid"],
        c["price"],
        c["qty"],
        c["source"],
        c["book_exact"],
        "transaction_ms" not in rows.all_null,
        "prev_update_id" not in rows.all_null,
    )


def _image_levels(levels: pl.DataFrame) -> pl.DataFrame:
    """An image's levels in output order: bids best first, then asks best first."""
    return pl.concat(
        [
            levels.filter(pl.col("is_bid")).sort("price", descending=True),
            levels.filter(~pl.col("is_bid")).sort("price"),
        ]
    )


def _put_image(
    rows: _Rows,
    item: int,
    levels: pl.DataFrame,
    update_id: int,
    exchange_ms: int,
    transaction_ms: int | None,
    receive_ns: int,
    source: str,
) -> None:
    lv = _image_levels(levels)
    n = lv.height
    rows.put(
        np.full(n, item, np.int64),
        np.arange(n, dtype=np.int64),
        source,
        exchange_ms=exchange_ms,
        transaction_ms=_NULL if transaction_ms is None else transaction_ms,
        receive_ns=receive_ns,
        first_update_id=update_id,
        last_update_id=update_id,
        prev_update_id=_NULL,
        is_snapshot=True,
        is_bid=lv["is_bid"].to_numpy(),
        price=lv["price"].to_numpy(),
        qty=lv["qty"].to_numpy(),
        book_exact=True,
    )


def merge_symbol_day(
    store: ObjectStore,
    market: Market,
    symbol: str,
    date: str,
    streams: Sequence[str],
    *,
    allow_shrink: str | None = None,
) -> MergeReport:
    """Merge the validated streams of one symbol-day into a new version and publish it if it is verified.

    The version is written under ``staging/`` with its end book, checked while written, then published
    (``depth_core/publish.py``) only if every blocking check passed and it is not smaller than the published
    version: it must cover every update id and keep every stream the published one has. ``allow_shrink``
    (an operator's reason, recorded in the manifest) lifts the size rule, never the checks. A version not
    published leaves the published day byte-identical; ``report.published`` and ``report.refused_reason``
    say what happened.
    """
    try:
        with pass_settings():
            return _merge_symbol_day(store, market, symbol, date, streams, allow_shrink)
    finally:
        release_free_memory()  # what the pass kept for reuse goes back (depth_core.memory)


def _merge_symbol_day(
    store: ObjectStore,
    market: Market,
    symbol: str,
    date: str,
    streams: Sequence[str],
    allow_shrink: str | None,
) -> MergeReport:
    market = validate_market(market)
    symbol = validate_symbol(symbol)
    date = validate_date(date)
    stream_ids = [validate_collector_id(s) for s in streams]
    if allow_shrink is not None and not allow_shrink.strip():
        raise ValueError("allow_shrink needs a reason (it is recorded in the manifest)")
    started_at = dt.datetime.now(dt.UTC)
    report = MergeReport(
        market, symbol, date, stream_ids, version=new_version_id(started_at), allow_shrink=allow_shrink
    )
    previous = read_published(store, market, symbol, date)
    if previous.manifest is not None:
        report.previous_version = previous.manifest.get("version_id")
    inputs: list[StreamInput] = []
    for sid in stream_ids:
        s = _load_stream(store, market, sid, symbol, date)
        if s is None:
            report.problems.append(f"stream {sid}: no validated output for this day (validation not run)")
            continue
        inputs.append(s)
    carry, report.carry_note = _load_carry(store, market, symbol, date)
    release_free_memory()  # what reading the inputs freed (decoded pages) would stay under the planning
    report.events_received = sum(s.events.height for s in inputs)
    if report.events_received == 0:
        # no data is not an empty day: write nothing, so no reader or cleanup mistakes it for a verified day
        report.problems.append("no stream delivered a diff-depth event for this symbol-day: nothing written")
        report.refused_reason = "no raw data: no stream delivered a diff-depth event for this symbol-day"
        return report
    plan = plan_merge(market, inputs, carry)
    report.opening = plan.opening
    report.gaps = plan.gaps
    report.unanchored_events = plan.unanchored_events
    if plan.unanchored_events and plan.opening.get("kind") == "snapshot":
        report.problems.append(
            f"{plan.unanchored_events} events precede the first usable snapshot and the day has "
            "no carried state: kept as rows with book_exact false"
        )
    if plan.opening.get("kind") == "none":
        report.problems.append(
            f"{plan.unanchored_events} events, not anchored: no usable snapshot and no carried "
            "state, every row has book_exact false"
        )

    decimals = [(s.report.get("price_decimals"), s.report.get("qty_decimals")) for s in inputs]
    pdec = [d[0] for d in decimals if d[0] is not None]
    qdec = [d[1] for d in decimals if d[1] is not None]
    report.price_decimals = max(pdec) if pdec else None
    report.qty_decimals = max(qdec) if qdec else None

    day_start_ms = day_index(date) * DAY_MS
    stage = staging_prefix(market, symbol, date, report.version)
    checker = MergeChecker(market, [s.stream for s in inputs], report.price_decimals, report.qty_decimals)
    checker.set_inputs(inputs, plan)
    if carry is not None:
        checker.carried_anchor_band = carry.anchor_band

    # what the output loop needs of the per-event tables, taken once: the chosen events' columns per plan item
    # and the other-batching candidates; then the tables go, and the per-item columns wait in a temporary
    # file, read back file by file (memory through the loop: one file's items, whatever the day's length)
    items = _ItemColumns(market, inputs, plan)
    others = _other_candidates(inputs, plan)
    events_per_stream = [s.events.height for s in inputs]
    for i, s in enumerate(inputs):
        s.events = s.events.clear()
        s.snapshot_levels = s.snapshot_levels.clear()  # the checker holds them by snapshot
        pos = np.flatnonzero((plan.kind == KIND_SNAPSHOT) & (plan.stream == i))
        n_levels = dict(s.snapshots.select("snap", "n_levels").iter_rows())
        items.counts[pos] = [n_levels[int(r)] for r in plan.ref[pos]]
    if carry is not None:
        items.counts[plan.kind == KIND_CARRY] = carry.book.height
    bounds = _chunk_bounds(items.counts, ROWS_PER_FILE)
    parked = _ParkedItems(plan, items)
    del items
    release_free_memory()  # the planning's temporaries (and an earlier phase's) are freed: return them

    staged: list[tuple[str, str]] = []  # (staging key, published key)
    state_keys: list[str] = []
    try:
        try:
            last_e_ms, last_recv = _write_version(
                store,
                market,
                symbol,
                date,
                report,
                inputs,
                carry,
                parked,
                others,
                checker,
                day_start_ms,
                bounds,
                stage,
                staged,
            )
        finally:
            parked.restore()
        report.files = [dst for _, dst in staged]
        report.events = int(np.count_nonzero(plan.kind == KIND_EVENT))
        if len(plan.update_id):
            report.first_update_id = int(plan.update_id[0])
            report.last_update_id = int(plan.update_id[-1])

        _fill_stream_stats(report, inputs, plan, events_per_stream)
        report.checks = checker.finish(report)

        # this version's end book (the next day's opening, once published)
        book_key = state_book_key(market, symbol, date, report.version)
        book = checker.end_book()
        book_info = put_parquet(store, book_key, book)
        state_keys.append(book_key)
        end_state = {
            "version": report.version,
            "book_key": book_key,
            "book_etag": book_info.etag,
            "last_update_id": report.last_update_id,
            "last_exchange_ms": last_e_ms,
            "last_receive_ns": last_recv,
            "levels": book.height,
            "anchor_band": _json_band(checker.anchor_band),
            "book_exact": bool(plan.exact[-1]) if len(plan.exact) else True,
        }
        manifest = build_manifest(report, inputs, plan, report.files)
        manifest["end_state"] = end_state
        report.refused_reason = _refusal(report, previous, manifest, allow_shrink)
        if report.refused_reason is None:
            # from here a failure may leave the manifest moved (a lost response): keep the version's end book,
            # which such a manifest names; an unneeded one under state/ is harmless
            state_keys = []
            outcome = publish_version(
                store,
                market,
                symbol,
                date,
                staged=staged,
                manifest=manifest,
                previous=previous,
                version_state_keys=[book_key],
                started_at=started_at,
            )
            report.published = outcome.published
            report.refused_reason = outcome.refused_reason
            report.manifest_etag = outcome.manifest_etag
            if outcome.published:
                _drop_legacy_state(store, market, symbol, date, previous)
            else:
                state_keys = [book_key]  # refused at the compare-and-swap: nothing names it
    finally:
        # the staged copies are never needed again; a version not published leaves nothing behind
        for key in [src for src, _ in staged] + state_keys:
            with contextlib.suppress(StoreError):  # a leftover under staging/ or state/ is harmless
                store.delete(key)
    report.manifest_key = merged_manifest_key(market, symbol, date)
    if not report.published:
        report.files = []  # nothing of this version is visible
        report.problems.append(f"version {report.version} not published: {report.refused_reason}")
    return report


def _refusal(
    report: MergeReport, previous: PublishedDay, manifest: dict[str, Any], allow_shrink: str | None
) -> str | None:
    """Why this version must not be published (None: publish it)."""
    failed = [c.name for c in report.checks if c.blocking and not c.passed]
    if failed:
        return f"blocking check(s) failed: {', '.join(failed)}"
    if previous.manifest is None:
        return None
    finding: ShrinkFinding = shrink_against(previous.manifest, manifest)
    if not finding:
        return None
    report.shrink = finding.to_dict()
    prev = previous.manifest.get("version_id") or "(before versions)"
    if allow_shrink is None:
        return (
            f"the new version is smaller than the published version {prev}: {finding.describe()}; "
            "nothing was published (an operator can allow it with --allow-shrink REASON)"
        )
    manifest["allow_shrink"] = {"reason": allow_shrink, "previous_version": prev, **finding.to_dict()}
    report.problems.append(
        f"published although smaller than version {prev} (allowed: {allow_shrink}): {finding.describe()}"
    )
    return None


def _drop_legacy_state(
    store: ObjectStore, market: Market, symbol: str, date: str, previous: PublishedDay
) -> None:
    """The end state of the layout before versions (fixed names), once a version replaced it."""
    if previous.manifest is not None and previous.manifest.get("end_state") is None:
        prefix = state_day_prefix(market, symbol, date)
        for name in (STATE_BOOK, STATE_JSON):
            store.delete(prefix + name)


def _write_version(
    store: ObjectStore,
    market: Market,
    symbol: str,
    date: str,
    report: MergeReport,
    inputs: Sequence[StreamInput],
    carry: CarryState | None,
    parked: _ParkedItems,
    others: Sequence[_Candidates | None],
    checker: MergeChecker,
    day_start_ms: int,
    bounds: list[tuple[int, int]],
    stage: str,
    staged: list[tuple[str, str]],
) -> tuple[int | None, int | None]:
    """Build, check and stage the version's files (appended to ``staged`` as they are written)."""
    last_e_ms: int | None = None
    last_recv: int | None = None
    preview: pl.DataFrame | None = None
    # Each file is written before the next is built, on this thread. Overlapping the write (pyarrow's encode
    # and zstd release the GIL) with building the next file saved ≈ 2 s of wall a busy day but cost
    # ≈ 0.4 CPU-s (two threads contending for the caches, hand-offs): at exchange scale the executor runs
    # as many merges as there are cores, so the overlap bought no throughput (docs/merge.md §6, "Threads").
    for fi, (a, b) in enumerate(bounds):
        table = _build_file(
            store, symbol, date, inputs, carry, parked.items(a, b), others, checker, day_start_ms
        )
        key = f"{stage}part-{fi:05d}.parquet"
        _put_merged_file(store, key, table)
        staged.append((key, published_file_key(market, symbol, date, report.version, fi)))
        report.rows += table.num_rows
        report.image_rows += int(pc.sum(table["is_snapshot"]).as_py() or 0)
        if preview is None:
            preview = merged_frame(table.slice(0, 20)).cast(MERGED_SCHEMA)  # type: ignore[arg-type]
        if table.num_rows:
            last = table.slice(table.num_rows - 1)
            last_e_ms = last["exchange_time"].cast(pa.int64())[0].as_py()
            last_recv = last["receive_time"].cast(pa.int64())[0].as_py()
        del table
    report.preview = preview
    return last_e_ms, last_recv


def _json_band(band: tuple[float, float] | None) -> list[float | None] | None:
    """JSON has no infinities: an empty side's unbounded limit is written as null."""
    if band is None:
        return None
    return [b if np.isfinite(b) else None for b in band]


def _build_file(
    store: ObjectStore,
    symbol: str,
    date: str,
    inputs: Sequence[StreamInput],
    carry: CarryState | None,
    it: _Items,
    others: Sequence[_Candidates | None],
    checker: MergeChecker,
    day_start_ms: int,
) -> pa.Table:
    """The merged rows of the plan items ``it`` (one output file), checked: the table the caller writes
    (the checks read it as readers get it back: its dictionary columns through their values)."""
    a, b = it.a, it.a + len(it.kind)
    is_event = it.kind == KIND_EVENT
    other_frames: list[pl.DataFrame] = []
    chosen_here: list[tuple[StreamInput, np.ndarray, _Levels, np.ndarray, np.ndarray]] = []
    for si, s in enumerate(inputs):
        mine = np.flatnonzero(is_event & (it.stream == si))  # items of its chosen events
        stream_others = others[si]
        cand = stream_others.between(a, b) if stream_others is not None else None
        if not len(mine) and cand is None:
            continue
        wanted_ev = [it.ref[mine]] + ([cand.ev] if cand is not None else [])
        wanted_part = [it.part[mine]] + ([cand.part] if cand is not None else [])
        # one read of the stream's level parts serves its chosen events and its other-batching candidates
        lv = _levels_of(store, symbol, date, s, np.concatenate(wanted_ev), np.concatenate(wanted_part))
        if len(mine):
            chosen_here.append((s, mine, lv, *lv.spans(it.ref[mine])))
        if cand is not None:
            other_frames.append(_other_rows(si, lv, cand, it))
    # rows are placed straight into plan order (an item's rows after the previous item's): no join, no sort
    images: list[tuple[int, pl.DataFrame, int, int, int | None, int, str]] = []
    item_rows = np.zeros(b - a, np.int64)
    for _s, mine, _lv, _start, count in chosen_here:
        item_rows[mine] = count
    for k in np.flatnonzero(~is_event).tolist():
        if it.kind[k] == KIND_CARRY:
            assert carry is not None
            images.append(
                (
                    k,
                    carry.book.select("is_bid", "price", "qty"),
                    int(it.update_id[k]),
                    day_start_ms,
                    None,
                    day_start_ms * 10**6,
                    f"carry:{carry.date}",
                )
            )
        else:
            si = int(it.stream[k])
            s = inputs[si]
            snap = int(it.ref[k])
            head = s.snapshots.filter(pl.col("snap") == snap).row(0, named=True)
            lvs = checker.snapshot_levels_of(si, snap)
            e_ms = head["E"] if head["E"] is not None else head["receive_ns"] // 10**6
            images.append(
                (
                    k,
                    lvs,
                    int(it.update_id[k]),
                    int(e_ms),
                    head["T"],
                    int(head["receive_ns"]),
                    f"snapshot:{s.stream}",
                )
            )
        item_rows[k] = images[-1][1].height
    # spot: no event has a transaction time or a previous update id, nor does any image here
    all_null = {"prev_update_id"} if "pu" not in it.cols else set()
    if "T" not in it.cols and all(t_ms is None for _k, _l, _u, _e, t_ms, _r, _s in images):
        all_null.add("transaction_ms")
    rows = _Rows(item_rows, frozenset(all_null))
    for s, mine, lv, start, count in chosen_here:
        _put_events(rows, s, it, mine, lv, start, count)
    for k, lvs, update_id, e_ms, t_ms, recv_ns, source in images:
        _put_image(rows, k, lvs, update_id, e_ms, t_ms, recv_ns, source)
    table = rows.table(symbol)
    checker.on_chunk(table, a, it.counts, pl.concat(other_frames) if other_frames else None)
    return table


def _put_merged_file(store: ObjectStore, key: str, table: pa.Table) -> ObjectInfo:
    return store.put_bytes(key, memoryview(merged_parquet_bytes(table)))


def _chunk_bounds(counts: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Split plan items into runs of about ``target`` rows (never splitting an item)."""
    if len(counts) == 0:
        return [(0, 0)]
    cum = np.cumsum(counts)
    bounds = []
    a = 0
    while a < len(counts):
        base = cum[a - 1] if a else 0
        b = int(np.searchsorted(cum, base + target, side="right"))
        b = max(b, a + 1)
        bounds.append((a, b))
        a = b
    return bounds


def _fill_stream_stats(
    report: MergeReport, inputs: Sequence[StreamInput], plan: Plan, events_per_stream: Sequence[int]
) -> None:
    anchor = int(plan.update_id[0]) if len(plan.update_id) else None
    end = report.last_update_id
    span = (end - anchor) if (anchor is not None and end is not None) else 0
    missing = sum(g.length for g in plan.gaps)
    report.coverage = (span - missing) / span if span > 0 else (1.0 if anchor is not None else 0.0)
    ev_mask = plan.kind == KIND_EVENT
    # ids supplied by each chosen event: from the previous point of the line to its hi
    prev = (
        np.concatenate([[plan.update_id[0]], plan.update_id[:-1]]) if len(plan.update_id) else plan.update_id
    )
    supplied = np.where(ev_mask, plan.update_id - prev, 0)
    total_supplied = int(supplied.sum())
    for i, s in enumerate(inputs):
        st = StreamStats(s.stream)
        rep = s.report
        st.events = events_per_stream[i]
        segs = [tuple(x) for x in rep.get("segments", [])]
        if anchor is not None and end is not None:
            st.covered_ids = sum(intersect_length([seg], anchor, end) for seg in segs)
            st.coverage = st.covered_ids / span if span > 0 else 0.0
        m = ev_mask & (plan.stream == i)
        st.events_supplied = int(np.count_nonzero(m))
        st.ids_supplied = int(supplied[m].sum())
        st.share = st.ids_supplied / total_supplied if total_supplied else 0.0
        st.latency_p50_ms = rep.get("latency_p50_ms")
        st.latency_p99_ms = rep.get("latency_p99_ms")
        st.clock_offset_ms = rep.get("clock_offset_ms")
        st.quarantined = int(rep.get("quarantined", 0))
        st.snapshots = int(rep.get("snapshots", 0))
        report.per_stream[s.stream] = st


def build_manifest(
    report: MergeReport, inputs: Sequence[StreamInput], plan: Plan, files: list[str]
) -> dict[str, Any]:
    """The coverage manifest (docs/merge.md documents every field)."""
    covered = []
    names = [s.stream for s in inputs]
    # runs of consecutive chosen events from one stream, all exact or all not -> one covered range
    n = len(plan.kind)
    is_ev = plan.kind == KIND_EVENT
    # cont[j]: event j+1 continues the run of event j (same stream, same exactness, no hole between them)
    cont = (
        (
            is_ev[:-1]
            & is_ev[1:]
            & (plan.stream[:-1] == plan.stream[1:])
            & (plan.exact[:-1] == plan.exact[1:])
            & (plan.lo[1:] <= plan.update_id[:-1])
        )
        if n
        else np.zeros(0, np.bool_)
    )
    starts = np.flatnonzero(is_ev & ~np.concatenate([[False], cont]))
    ends = np.flatnonzero(is_ev & ~np.concatenate([cont, [False]]))
    for k, j in zip(starts.tolist(), ends.tolist(), strict=True):
        if k == 0:
            start_from = int(plan.lo[k])
        elif plan.kind[k - 1] != KIND_EVENT:
            start_from = min(
                int(plan.update_id[k - 1]), int(plan.lo[k])
            )  # after an image: the event's own ids
        else:
            start_from = max(int(plan.update_id[k - 1]), int(plan.lo[k]))  # after a hole: from its own lo
        covered.append(
            {
                "first_id": start_from + 1,
                "last_id": int(plan.update_id[j]),
                "stream": names[int(plan.stream[k])],
                "events": j - k + 1,
                "book_exact": bool(plan.exact[k]),
            }
        )
    images = [
        {
            "update_id": int(plan.update_id[k]),
            "source": (
                f"carry:{plan.opening.get('source', '')[6:]}"
                if plan.kind[k] == KIND_CARRY
                else f"snapshot:{names[int(plan.stream[k])]}"
            ),
        }
        for k in np.flatnonzero(~is_ev).tolist()
    ]
    raw_objects = []
    for inp in inputs:
        for obj in inp.report.get("objects", []):
            raw_objects.append(
                {
                    "stream": inp.stream,
                    "key": obj["key"],
                    "size": obj["size"],
                    "etag": obj["etag"],
                    "event_dates": obj["event_dates"],
                }
            )
    return {
        "version": MANIFEST_VERSION,
        "version_id": report.version,
        "market": report.market,
        "symbol": report.symbol,
        "date": report.date,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "streams": report.streams,
        "id_rule": "spot: an event covers ids U..u; usdm: ids pu+1..u (ids of other symbols included)",
        "first_update_id": report.first_update_id,
        "last_update_id": report.last_update_id,
        "price_decimals": report.price_decimals,
        "qty_decimals": report.qty_decimals,
        "rows": report.rows,
        "events": report.events,
        "unanchored_events": report.unanchored_events,
        "inexact_events": int(np.count_nonzero((plan.kind == KIND_EVENT) & ~plan.exact)),
        "opening": report.opening,
        "images": images,
        "covered": covered,
        "gaps": [asdict(g) for g in report.gaps],
        "per_stream": {k: asdict(v) for k, v in report.per_stream.items()},
        "coverage": report.coverage,
        "files": files,
        "raw_objects": raw_objects,
        "checks": [c.to_dict() for c in report.checks],
        "blocking_passed": report.blocking_passed,
        "problems": report.problems,
    }
