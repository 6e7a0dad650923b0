"""Per-symbol state of one collector: counters for metrics and live continuity of update ids.

Plain attributes with ``__slots__``, updated on the hot path without locks (the event loop is the only
writer; the metrics thread only reads, and a slightly stale read is fine for a gauge).
"""

from __future__ import annotations

import bisect

# receive time minus exchange time E, seconds
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_LATENCY_BUCKETS_MS = tuple(int(b * 1000) for b in LATENCY_BUCKETS)


def latency_bucket(lat_ms: int) -> int:
    """Index into ``SymbolState.latency_buckets`` of a latency in ms (upper bounds inclusive)."""
    return bisect.bisect_left(_LATENCY_BUCKETS_MS, lat_ms)


# the hot path looks the bucket up in this table for 0 <= latency < LATENCY_TABLE_MS (one index, no call)
LATENCY_TABLE_MS = _LATENCY_BUCKETS_MS[-1] + 1
LATENCY_BUCKET_OF_MS: tuple[int, ...] = tuple(latency_bucket(ms) for ms in range(LATENCY_TABLE_MS))


class Continuity:
    """Live update-id continuity of one symbol across every connection's primary feed.

    ``observe(start, last)`` takes the first id an event covers (spot ``U``; usdm ``pu + 1``, since the
    usdm chain is ``pu == previous u``) and its last id ``u``. It never resets: after a gap it carries
    on from the new event, and the gap is reported to the caller (who logs it and takes a snapshot).
    """

    __slots__ = ("duplicates", "gaps", "last_id", "missing_ids")

    def __init__(self) -> None:
        self.last_id: int | None = None
        self.gaps = 0
        self.missing_ids = 0
        self.duplicates = 0

    def observe(self, start: int, last: int) -> tuple[int, int] | None:
        """Returns the missing id range ``(first, last)`` when this event does not chain on."""
        prev = self.last_id
        if prev is None:
            self.last_id = last
            return None
        if last <= prev:
            self.duplicates += 1
            return None
        self.last_id = last
        if start > prev + 1:
            self.gaps += 1
            self.missing_ids += start - prev - 1
            return (prev + 1, start - 1)
        return None


class SymbolState:
    """Everything the collector tracks for one symbol."""

    __slots__ = (
        "added_monotonic",
        "book_ticker_bytes",
        "book_ticker_messages",
        "bytes",
        "continuity",
        "d_prefix",
        "d_prefix_ns",
        "dropped_lines",
        "first_snapshot_done",
        "first_snapshot_s",
        "head",
        "last_receive_ns",
        "last_snapshot_ok",
        "latency_buckets",
        "latency_min_ms",
        "latency_sum_ms",
        "malformed",
        "messages",
        "next_periodic",
        "snapshot_errors",
        "snapshots",
        "symbol",
        "tag_b",
        "tag_d",
        "tag_m",
        "tag_s",
        "unknown",
        "unknown_errors",
    )

    def __init__(self, symbol: str, layout: int = 2) -> None:
        self.symbol = symbol
        # a journal line is head + receive_ns + tag + text: layout 2 "<ns> D SYM <text>" (the raw line
        # itself), layout 1 "SYM <ns> D <text>" (split into one object per symbol when converted)
        sym = symbol.encode()
        head, mid = (b"", b" " + sym) if layout == 2 else (sym + b" ", b"")
        self.head = head
        self.tag_d = b" D" + mid + b" "
        self.tag_b = b" B" + mid + b" "
        self.tag_s = b" S" + mid + b" "
        self.tag_m = b" M" + mid + b" "
        # the start of a depth line of one socket read (head + its receive time + tag), made once per read
        self.d_prefix = b""
        self.d_prefix_ns = -1
        self.messages = 0
        self.bytes = 0
        self.book_ticker_messages = 0
        self.book_ticker_bytes = 0
        self.last_receive_ns = 0
        self.continuity = Continuity()
        self.snapshots = 0
        self.snapshot_errors = 0
        self.first_snapshot_done = False
        self.added_monotonic = 0.0  # when the collector started capturing it
        self.first_snapshot_s: float | None = None  # seconds from added to its first snapshot
        self.last_snapshot_ok = 0.0  # monotonic time of the last snapshot stored
        self.next_periodic: float | None = None  # monotonic; None = no periodic snapshots
        self.unknown = False  # the exchange answered -1121 (unknown or delisted) to its last snapshot
        self.unknown_errors = 0
        self.malformed = 0
        self.dropped_lines = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum_ms = 0
        self.latency_min_ms: int | None = None

    def observe_latency(self, receive_ms: int, event_ms: int) -> None:
        """One depth event's latency (``Collector.on_frame`` inlines the same for Binance's layout)."""
        lat = receive_ms - event_ms
        self.latency_buckets[latency_bucket(lat)] += 1
        self.latency_sum_ms += lat
        if self.latency_min_ms is None or lat < self.latency_min_ms:
            self.latency_min_ms = lat
