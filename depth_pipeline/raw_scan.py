"""Find raw objects that are new since the last sensor tick, with a cost per tick that is O(streams).

Two listings per stream and tick, both resumable JSON state kept in the sensor cursor:

- **head**: ``ListObjectsV2`` of the stream's layout-2 keys (``raw/market=M/stream=S/date=``) with
  ``StartAfter`` = the key position ``LAG`` seconds before the newest key seen. Objects are named by the
  receive time of their first line, so everything a live collector uploads sorts after that point: one
  request lists only the new keys plus the lag window (``LAG / flush`` keys). The keys of the lag window
  are remembered (``seen``), so an object uploaded out of order by up to ``LAG`` (parallel upload
  threads, a retried upload after a store blip) is still found, once.
- **sweep**: a slow pass over *every* raw key of the stream (both layouts, every retained date), at most
  ``sweep_keys`` keys a tick, resuming where the last tick stopped. It reports an object when it was
  uploaded (``LastModified``) after the previous pass began and is not in ``seen``. That catches what the
  head cannot: a restarted (or moved) collector uploading spool leftovers whose keys sort long before the
  newest key, and layout-1 objects (one symbol per object, sorted by symbol first). Any object is found
  within two sweep passes; a pass takes ``retained keys / sweep_keys`` ticks.

Cost per stream and tick: one LIST (head) + ``ceil(sweep_keys / 1000)`` LISTs (sweep), whatever the
number of symbols or retained days; the state holds the lag window and the keys uploaded since the
previous pass began. Why not a full listing (the old sensors) or per-date cursors: a listing of
everything retained grows with days x symbols (v1) every tick; a per-date cursor still misses leftovers
that sort before its position. ``seen`` pruning keeps every key that either listing could meet again,
so nothing is reported twice.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from depth_core.days import previous_day
from depth_core.names import Market
from depth_core.raw_format import RawFormatError, RawObjectKey, stream_date_prefix, stream_prefix
from depth_store import ObjectInfo, ObjectStore

LAG_SECONDS = 900.0
"""How far before the newest key the head listing starts: uploads out of order by less are found at once."""
SWEEP_KEYS_PER_TICK = 1000
"""Keys the sweep lists per stream and tick (one S3 page)."""
CLOCK_MARGIN_SECONDS = 300.0
"""Allowed disagreement between this host's clock and the store's ``LastModified``."""


def _epoch(info: ObjectInfo) -> float:
    return info.last_modified.timestamp()


def _midnight_of(date: str) -> float:
    return dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()


def _lag_key(market: Market, stream: str, ns: int) -> str:
    """The position (not a real key) just before every v2 key whose first receive time is ``>= ns``."""
    date = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).date().isoformat()
    return f"{stream_date_prefix(market, stream, date)}{max(ns, 0):019d}"


@dataclass
class StreamScan:
    """One stream's scan position (JSON round-trips through the sensor cursor)."""

    head: str | None = None  # newest layout-2 key listed
    since: float = 0.0  # nothing uploaded before this was ever to be reported (the first tick's look-back)
    seen: dict[str, float] = field(default_factory=dict)  # key (after the stream prefix) -> LastModified
    sweep_after: str | None = None  # sweep position in the running pass (None: the pass starts over)
    pass_started: float = 0.0
    prev_pass_started: float = 0.0
    passes: int = 0  # completed sweep passes
    pass_dates: list[str] = field(default_factory=list)  # raw date folders met in the running pass
    dates: list[str] = field(default_factory=list)  # raw date folders of the last complete pass
    pass_v1_dates: list[str] = field(default_factory=list)  # dates with layout-1 objects, running pass
    v1_dates: list[str] = field(default_factory=list)  # dates with layout-1 objects, last complete pass
    retry: list[list[Any]] = field(default_factory=list)  # [key, size, etag, LastModified] handed back

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "since": self.since,
            "seen": self.seen,
            "sweep_after": self.sweep_after,
            "pass_started": self.pass_started,
            "prev_pass_started": self.prev_pass_started,
            "passes": self.passes,
            "pass_dates": self.pass_dates,
            "dates": self.dates,
            "pass_v1_dates": self.pass_v1_dates,
            "v1_dates": self.v1_dates,
            "retry": self.retry,
        }

    @classmethod
    def from_json(cls, value: object) -> StreamScan | None:
        if not isinstance(value, dict) or "seen" not in value:
            return None  # an older cursor format: start afresh
        try:
            return cls(
                head=value.get("head"),
                since=float(value.get("since", 0.0)),
                seen={str(k): float(v) for k, v in dict(value["seen"]).items()},
                sweep_after=value.get("sweep_after"),
                pass_started=float(value.get("pass_started", 0.0)),
                prev_pass_started=float(value.get("prev_pass_started", 0.0)),
                passes=int(value.get("passes", 0)),
                pass_dates=[str(d) for d in value.get("pass_dates", [])],
                dates=[str(d) for d in value.get("dates", [])],
                pass_v1_dates=[str(d) for d in value.get("pass_v1_dates", [])],
                v1_dates=[str(d) for d in value.get("v1_dates", [])],
                retry=[list(e) for e in value.get("retry", [])],
            )
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class NewObject:
    """A raw object reported once: its listing entry and parsed key; ``found_by`` head or sweep."""

    info: ObjectInfo
    key: RawObjectKey
    found_by: str


class Deadline:
    """A tick's time budget: stop early, save progress, continue next tick (Dagster kills a tick at 60 s)."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self.ends


def scan_stream(
    store: ObjectStore,
    market: Market,
    stream: str,
    state: StreamScan | None,
    *,
    now: float,
    initial_lookback_seconds: float,
    deadline: Deadline,
    lag_seconds: float = LAG_SECONDS,
    sweep_keys: int = SWEEP_KEYS_PER_TICK,
    head: bool = True,
    edge_seconds: float = 0.0,
) -> tuple[list[NewObject], StreamScan]:
    """New raw objects of one stream since ``state`` (in key order per listing) and the state to save.

    The head listing stops when ``deadline`` passes (progress is kept: the rest comes next tick); the
    caller may also stop consuming early and call :func:`rewind` for what it did not handle.
    ``head=False`` runs the sweep only (a reconcile pass that wants the date folders). With
    ``edge_seconds`` an object received that soon after midnight also puts the previous date in the pass's
    dates (it may hold that day's last events).
    """
    base = stream_prefix(market, stream)
    if state is None:
        since = now - initial_lookback_seconds
        state = StreamScan(since=since, pass_started=now, prev_pass_started=since)
    found: list[NewObject] = []
    floor = state.prev_pass_started - CLOCK_MARGIN_SECONDS

    def report(info: ObjectInfo, by: str) -> None:
        try:
            key = RawObjectKey.parse(info.key)
        except RawFormatError:
            return
        state.seen[info.key[len(base) :]] = _epoch(info)
        found.append(NewObject(info, key, by))

    retry, state.retry = state.retry, []
    for entry in retry:  # handed back by the caller last tick (out of time): first in line now
        key_text, size, etag, modified = entry
        info = ObjectInfo(
            str(key_text), int(size), etag, dt.datetime.fromtimestamp(float(modified), tz=dt.UTC)
        )
        found.append(NewObject(info, RawObjectKey.parse(info.key), "retry"))

    if head:
        if state.head is not None:
            start_ns = RawObjectKey.parse(state.head).first_receive_ns - int(lag_seconds * 1e9)
        else:
            start_ns = int(state.since * 1e9)
        start_after = _lag_key(market, stream, start_ns)
        for info in store.list(base + "date=", start_after=start_after):
            if deadline.passed():
                break
            if info.key[len(base) :] not in state.seen:
                report(info, "head")
            if state.head is None or info.key > state.head:
                state.head = info.key

    # the sweep: every raw key of the stream, a bounded slice per tick
    listed = 0
    stopped = False
    listing: Iterator[ObjectInfo] = store.list(base, start_after=state.sweep_after)
    for info in itertools.islice(listing, sweep_keys):
        if deadline.passed():
            stopped = True  # out of time: the position is saved, the pass goes on next tick
            break
        listed += 1
        state.sweep_after = info.key
        try:
            key = RawObjectKey.parse(info.key)
        except RawFormatError:
            continue
        if key.date not in state.pass_dates:
            state.pass_dates.append(key.date)
        if key.layout == 1 and key.date not in state.pass_v1_dates:
            state.pass_v1_dates.append(key.date)
        if edge_seconds and key.first_receive_ns / 1e9 - _midnight_of(key.date) < edge_seconds:
            before = previous_day(key.date)
            if before not in state.pass_dates:
                state.pass_dates.append(before)
        if info.key[len(base) :] not in state.seen and _epoch(info) >= floor:
            report(info, "sweep")
    if listed < sweep_keys and not stopped:  # the listing reached the end: the pass is complete
        state.passes += 1
        state.prev_pass_started = state.pass_started
        state.pass_started = now
        state.sweep_after = None
        state.dates = sorted(state.pass_dates)
        state.pass_dates = []
        state.v1_dates = sorted(state.pass_v1_dates)
        state.pass_v1_dates = []
    _prune(state, market, stream, lag_seconds)
    return found, state


def _prune(state: StreamScan, market: Market, stream: str, lag_seconds: float) -> None:
    """Forget keys neither listing can meet again: below the head's lag point and uploaded before the
    previous sweep pass began (minus the clock margin)."""
    base = stream_prefix(market, stream)
    if state.head is None:
        return
    lag_point = _lag_key(
        market, stream, RawObjectKey.parse(state.head).first_receive_ns - int(lag_seconds * 1e9)
    )
    floor = state.prev_pass_started - CLOCK_MARGIN_SECONDS
    state.seen = {rel: when for rel, when in state.seen.items() if base + rel > lag_point or when >= floor}


def rewind(state: StreamScan, unhandled: list[NewObject]) -> None:
    """Hand back objects the caller could not handle this tick (out of time): reported first next tick."""
    state.retry.extend([o.info.key, o.info.size, o.info.etag, _epoch(o.info)] for o in unhandled)
