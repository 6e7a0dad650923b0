"""Ground truth: the canonical event log of one symbol and the exact book at any update id."""

from __future__ import annotations

import bisect
import heapq

from exchange_sim.generator import BID, CanonicalEvent

CHECKPOINT_EVERY = 500


class TruthLog:
    """Keeps the published canonical events after a base book; answers the book at any id.

    When more than ``max_events`` are kept, the oldest are folded into the base book, so memory stays
    bounded and ids before the new base are answered with ``LookupError``.
    """

    def __init__(
        self,
        symbol: str,
        base_bids: dict[int, int],
        base_asks: dict[int, int],
        base_id: int,
        max_events: int = 500_000,
    ) -> None:
        self.symbol = symbol
        self.base_bids = dict(base_bids)
        self.base_asks = dict(base_asks)
        self.base_id = base_id
        self.max_events = max(10, max_events)
        self.events: list[CanonicalEvent] = []
        self._last_ids: list[int] = []
        self.cur_bids = dict(base_bids)  # the book after the last published event (fast snapshots)
        self.cur_asks = dict(base_asks)
        self._folded = 0  # events folded into the base so far (absolute index of events[0])
        # (absolute event count, bids, asks): the book after that many events, every CHECKPOINT_EVERY
        self._checkpoints: list[tuple[int, dict[int, int], dict[int, int]]] = []

    @property
    def last_id(self) -> int:
        return self._last_ids[-1] if self._last_ids else self.base_id

    def append(self, ev: CanonicalEvent) -> None:
        if ev.first_id <= self.last_id:
            raise ValueError(f"event [{ev.first_id};{ev.last_id}] does not follow id {self.last_id}")
        self.events.append(ev)
        self._last_ids.append(ev.last_id)
        apply_event(self.cur_bids, self.cur_asks, ev)
        count = self._folded + len(self.events)
        if count % CHECKPOINT_EVERY == 0:
            self._checkpoints.append((count, dict(self.cur_bids), dict(self.cur_asks)))
        if len(self.events) > self.max_events:
            self._fold(len(self.events) - self.max_events + self.max_events // 10)

    def _fold(self, count: int) -> None:
        for ev in self.events[:count]:
            apply_event(self.base_bids, self.base_asks, ev)
        self.base_id = self._last_ids[count - 1]
        del self.events[:count]
        del self._last_ids[:count]
        self._folded += count
        self._checkpoints = [c for c in self._checkpoints if c[0] > self._folded]

    def events_between(self, from_id: int, to_id: int, max_count: int = 100_000) -> list[CanonicalEvent]:
        """Events whose id range overlaps ``[from_id; to_id]``, at most ``max_count``."""
        start = bisect.bisect_left(self._last_ids, from_id)
        out: list[CanonicalEvent] = []
        for ev in self.events[start:]:
            if ev.first_id > to_id or len(out) >= max_count:
                break
            out.append(ev)
        return out

    def prev_last_id(self, ev: CanonicalEvent) -> int:
        """The u of the canonical event before ``ev`` (its ``pu`` on a canonical USD-M 100 ms stream)."""
        i = bisect.bisect_left(self._last_ids, ev.last_id)
        return self._last_ids[i - 1] if i > 0 else self.base_id

    def book_at(
        self, update_id: int, extra: CanonicalEvent | None = None
    ) -> tuple[dict[int, int], dict[int, int]]:
        """The book after every change with id <= ``update_id`` (``extra``: a not yet published event)."""
        if update_id < self.base_id:
            raise LookupError(f"update id {update_id} is before the oldest kept id {self.base_id}")
        top = extra.last_id if extra is not None else self.last_id
        if update_id > top:
            raise LookupError(f"update id {update_id} is beyond the last generated id {top}")
        if update_id >= self.last_id:
            bids, asks = dict(self.cur_bids), dict(self.cur_asks)
            if extra is not None and extra.first_id <= update_id:
                apply_event(bids, asks, extra, update_id)
            return bids, asks
        whole = bisect.bisect_right(self._last_ids, update_id)  # events entirely <= update_id
        start = 0
        bids, asks = self.base_bids, self.base_asks
        i = bisect.bisect_right(self._checkpoints, self._folded + whole, key=lambda c: c[0]) - 1
        if i >= 0:
            start = self._checkpoints[i][0] - self._folded
            bids, asks = self._checkpoints[i][1], self._checkpoints[i][2]
        bids, asks = dict(bids), dict(asks)
        for ev in self.events[start:]:
            if ev.first_id > update_id:
                break
            apply_event(bids, asks, ev, update_id)
        if extra is not None and extra.first_id <= update_id:
            apply_event(bids, asks, extra, update_id)
        return bids, asks


def apply_event(
    bids: dict[int, int], asks: dict[int, int], ev: CanonicalEvent, upto_id: int | None = None
) -> None:
    """Apply ``ev``'s changes (only those with id <= ``upto_id`` if given) to the book in place."""
    for i, uid in enumerate(ev.ids):
        if upto_id is not None and uid > upto_id:
            break
        book = bids if ev.sides[i] == BID else asks
        q = ev.qtys[i]
        if q:
            book[ev.prices[i]] = q
        else:
            book.pop(ev.prices[i], None)


def top_levels(book: dict[int, int], limit: int, descending: bool) -> list[tuple[int, int]]:
    """The best ``limit`` levels of one side, best first."""
    keys = heapq.nlargest(limit, book) if descending else heapq.nsmallest(limit, book)
    return [(k, book[k]) for k in keys]
