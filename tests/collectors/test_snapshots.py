"""The snapshot scheduler: urgent before periodic, one request per symbol, periodic spread, weight pacing."""

from __future__ import annotations

import asyncio
import time

from collectors.rest import WeightBudget
from collectors.snapshots import SnapshotScheduler
from collectors.state import SymbolState


def run_until_taken(sched: SnapshotScheduler, taken: list[tuple[str, str]], n: int) -> None:
    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop))
        while len(taken) < n:
            await asyncio.sleep(0.005)
        stop.set()
        sched._wake.set()
        await task

    asyncio.run(asyncio.wait_for(go(), 10))


def make(
    per_minute: int = 100_000, weight: int = 50, interval: float = 0.0, **kw: object
) -> tuple[SnapshotScheduler, list[tuple[str, str]], dict[str, SymbolState]]:
    taken: list[tuple[str, str]] = []
    states: dict[str, SymbolState] = {}

    async def take(st: SymbolState, reason: str) -> None:
        taken.append((st.symbol, reason))

    sched = SnapshotScheduler(
        WeightBudget(per_minute, 6000), weight, take, lambda: states.values(), interval=interval, **kw
    )  # type: ignore[arg-type]
    return sched, taken, states


def test_urgent_requests_go_before_periodic_ones_in_the_order_asked() -> None:
    sched, taken, _ = make(max_in_flight=1)
    a, b, c, d = (SymbolState(s) for s in ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"))
    sched.request(a, "interval")
    sched.request(b, "gap")
    sched.request(c, "start")
    sched.request(d, "interval")
    run_until_taken(sched, taken, 4)
    assert taken == [
        ("BBBUSDT", "gap"),
        ("CCCUSDT", "start"),
        ("AAAUSDT", "interval"),
        ("DDDUSDT", "interval"),
    ]


def test_a_waiting_periodic_request_turns_urgent_and_serves_both_reasons_once() -> None:
    sched, taken, _ = make(max_in_flight=1)
    a, b = SymbolState("AAAUSDT"), SymbolState("BBBUSDT")
    sched.request(b, "interval")
    sched.request(a, "interval")
    sched.request(a, "gap")
    sched.request(a, "gap")
    assert sched.queue_length == 2 and sched.urgent_waiting == 1
    run_until_taken(sched, taken, 2)
    assert taken == [("AAAUSDT", "interval,gap"), ("BBBUSDT", "interval")]


def test_own_budget_paces_and_periodic_requests_leave_half_of_it_for_urgent_ones() -> None:
    budget = WeightBudget(100, 6000)
    assert budget.delay(50) == 0
    budget.charge(50)
    assert budget.delay(50) == 0
    assert budget.delay(50, reserve=50) > 59  # a periodic request would wait: half the budget is kept free
    budget.charge(50)
    assert 59 < budget.delay(50) <= 60
    assert budget.used() == 100
    big = WeightBudget(10, 6000)
    assert big.delay(250) == 0  # heavier than the whole budget: goes when the window is empty


def test_the_exchange_count_of_this_minute_holds_requests_that_would_exceed_its_limit() -> None:
    budget = WeightBudget(100_000, 6000)
    budget.note_headers({"x-mbx-used-weight-1m": "5960"})
    wait = budget.delay(50)
    assert 0 < wait <= 60.25 and budget.exchange_waits == 1
    assert budget.delay(40) == 0  # still fits
    budget.note_headers({"x-mbx-used-weight-1m": "100"})
    assert budget.delay(50) == 0
    budget.exchange_minute -= 1  # a count of an earlier minute says nothing about this one
    budget.note_headers({"x-mbx-used-weight-1m": "bogus"})
    budget.exchange_used = 6000
    assert budget.delay(50) == 0


def test_periodic_snapshots_are_spread_over_the_interval_not_a_storm() -> None:
    interval = 3600.0
    sched, _, states = make(interval=interval)
    t0 = time.monotonic()
    for i in range(400):
        st = SymbolState(f"S{i:03d}USDT")
        st.first_snapshot_done = True
        states[st.symbol] = st
        sched.add_symbol(st)
    phases = sorted((st.next_periodic or 0) - st.added_monotonic for st in states.values())
    gaps = [b - a for a, b in zip([0.0, *phases], [*phases, interval], strict=True)]
    assert max(gaps) < 3 * interval / 400  # evenly spread, whatever the count
    # a minute of ticks asks for about 400 * 60 / 3600 = 7 snapshots, never all at once
    for s in range(0, 61):
        sched.periodic_tick(t0 + s)
    assert 3 <= sched.queue_length <= 12
    # a symbol snapshotted recently skips its periodic turn
    sched2, _, states2 = make(interval=interval)
    st = SymbolState("ABCUSDT")
    st.first_snapshot_done = True
    states2[st.symbol] = st
    sched2.add_symbol(st)
    st.next_periodic = t0
    st.last_snapshot_ok = t0 - 10
    sched2.periodic_tick(t0 + 1)
    assert sched2.queue_length == 0 and sched2.periodic_skipped_recent == 1
    assert st.next_periodic == t0 + interval
