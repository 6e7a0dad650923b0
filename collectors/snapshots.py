"""The REST snapshot scheduler: which symbol's snapshot goes out next, and when.

A collector of hundreds of symbols cannot snapshot them all at once: Binance allows a request weight of
6,000 a minute per IP on spot (2,400 on USD-M), a depth snapshot of limit 1000 weighs 50, and an IP that
keeps going after a 429 is banned (418). So snapshots wait in one queue and leave it as the weight
budget (:class:`collectors.rest.WeightBudget`: our own rolling budget and the exchange's
``X-MBX-USED-WEIGHT-1M``) allows:

- **urgent first**: a symbol that is not anchored (start-up, a reconnect, a gap, a spool overflow, a
  failed attempt) goes before any periodic snapshot, in the order asked; a periodic request that is
  still waiting when the symbol turns urgent is promoted, never duplicated;
- **periodic snapshots spread over the interval**: symbol number k is due at phase
  ``frac((k + 1) * 0.618...) * interval`` of every interval (a golden-ratio sequence: even for any symbol
  count, also as symbols come and go), skipped when the symbol had a snapshot in the last half
  interval; and they may only use half of the budget, so gap snapshots always find room;
- at most ``max_in_flight`` requests at a time.

Every snapshot request is one line of the queue, so a symbol waiting for one gets one snapshot that
serves every reason it was asked for (``"reason":"start,gap"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from collectors import logs
from collectors.rest import WeightBudget
from collectors.state import SymbolState

PERIODIC = "interval"
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass
class _Request:
    state: SymbolState
    reasons: list[str]
    urgent: bool
    seq: int
    queued_monotonic: float = field(default_factory=time.monotonic)


class SnapshotScheduler:
    """One queue of snapshot requests, dispatched by priority within the weight budget."""

    def __init__(
        self,
        budget: WeightBudget,
        weight: int,
        take: Callable[[SymbolState, str], Awaitable[None]],
        symbols: Callable[[], Iterable[SymbolState]],
        *,
        interval: float,
        max_in_flight: int = 4,
        periodic_budget_fraction: float = 0.5,
    ) -> None:
        self.budget = budget
        self.weight = weight
        self.take = take
        self.symbols = symbols
        self.interval = interval
        self.max_in_flight = max_in_flight
        self.periodic_budget_fraction = periodic_budget_fraction
        self._heap: list[
            tuple[int, int, str]
        ] = []  # (0 urgent / 1 periodic, seq, symbol); stale entries skipped
        self._pending: dict[str, _Request] = {}
        self._in_flight: dict[str, str] = {}  # symbol -> reasons
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._phase_index = itertools.count()
        self._wake = asyncio.Event()
        self.started_monotonic = time.monotonic()
        self.requested = 0
        self.dispatched_urgent = 0
        self.dispatched_periodic = 0
        self.periodic_skipped_recent = 0

    # ---- asking -----------------------------------------------------------------------------------

    def add_symbol(self, st: SymbolState) -> None:
        """Give a symbol its periodic phase (call once per symbol, in the order they were configured)."""
        st.added_monotonic = time.monotonic()
        if self.interval > 0:
            phase = ((next(self._phase_index) + 1) * _GOLDEN) % 1.0 * self.interval
            st.next_periodic = st.added_monotonic + phase

    def request(self, st: SymbolState, reason: str) -> None:
        """Queue a snapshot of ``st``; one already waiting takes this reason too (and turns urgent if
        it is)."""
        urgent = reason != PERIODIC
        self.requested += 1
        req = self._pending.get(st.symbol)
        if req is not None:
            if reason not in req.reasons:
                req.reasons.append(reason)
            if urgent and not req.urgent:
                req.urgent = True
                req.seq = next(self._seq)
                heapq.heappush(self._heap, (0, req.seq, st.symbol))
                self._wake.set()
            return
        req = _Request(st, [reason], urgent, next(self._seq))
        self._pending[st.symbol] = req
        heapq.heappush(self._heap, (0 if urgent else 1, req.seq, st.symbol))
        self._wake.set()

    def request_many(self, states: Iterable[SymbolState], reason: str) -> None:
        for st in states:
            self.request(st, reason)

    def forget(self, symbol: str) -> None:
        """Drop a waiting request (the symbol left the stream); one in flight completes."""
        self._pending.pop(symbol, None)

    def is_waiting(self, symbol: str) -> bool:
        return symbol in self._pending or symbol in self._in_flight

    # ---- state for metrics and tests ---------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        return len(self._pending)

    @property
    def urgent_waiting(self) -> int:
        return sum(1 for r in self._pending.values() if r.urgent)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def pending(self) -> dict[str, list[str]]:
        """Symbol -> reasons, of every request waiting or in flight."""
        out = {s: list(r.reasons) for s, r in self._pending.items()}
        for s, reasons in self._in_flight.items():
            out.setdefault(s, reasons.split(","))
        return out

    # ---- running ----------------------------------------------------------------------------------

    def _head(self) -> _Request | None:
        while self._heap:
            prio, seq, symbol = self._heap[0]
            req = self._pending.get(symbol)
            if req is None or req.seq != seq or (prio == 1 and req.urgent):
                heapq.heappop(self._heap)  # stale: taken, forgotten or promoted
                continue
            return req
        return None

    async def _wait(self, timeout: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` (or cancellation); snapshots still in flight then are cancelled."""
        periodic = asyncio.create_task(self._periodic(stop), name="snapshot-periodic")
        try:
            while not stop.is_set():
                req = self._head()
                if req is None or len(self._in_flight) >= self.max_in_flight:
                    await self._wait(1.0)
                    continue
                reserve = (
                    0 if req.urgent else int(self.budget.per_minute * (1 - self.periodic_budget_fraction))
                )
                delay = self.budget.delay(self.weight, reserve=reserve)
                if delay > 0:
                    await self._wait(min(delay, 1.0))  # a new urgent request may overtake this one
                    continue
                heapq.heappop(self._heap)
                del self._pending[req.state.symbol]
                self.budget.charge(self.weight)
                if req.urgent:
                    self.dispatched_urgent += 1
                else:
                    self.dispatched_periodic += 1
                reason = ",".join(req.reasons)
                self._in_flight[req.state.symbol] = reason
                task = asyncio.create_task(self._take(req.state, reason), name=f"snapshot-{req.state.symbol}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await periodic
            for task in list(self._tasks):  # stopping: a snapshot still in flight is not waited for
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _take(self, st: SymbolState, reason: str) -> None:
        try:
            await self.take(st, reason)
        except Exception as exc:  # a bug in one snapshot must not stop the others
            logs.error("snapshot_task_failed", symbol=st.symbol, reason=reason, error=repr(exc))
        finally:
            self._in_flight.pop(st.symbol, None)
            self._wake.set()

    async def _periodic(self, stop: asyncio.Event) -> None:
        """Ask for the periodic snapshots that are due, each at its own phase of the interval."""
        if self.interval <= 0:
            return
        while not stop.is_set():
            self.periodic_tick(time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(1.0, self.interval / 4))

    def periodic_tick(self, now: float) -> None:
        for st in self.symbols():
            due = st.next_periodic
            if due is None or now < due:
                continue
            st.next_periodic = due + self.interval * (math.floor((now - due) / self.interval) + 1)
            if not st.first_snapshot_done:
                continue  # not anchored yet: its urgent first snapshot is on its way
            if st.last_snapshot_ok and now - st.last_snapshot_ok < self.interval / 2:
                self.periodic_skipped_recent += 1
                continue
            if self.is_waiting(st.symbol):
                continue
            self.request(st, PERIODIC)
