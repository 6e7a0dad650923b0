"""Per-connection faults: different batching (partials), dropped ids, stall, malformed, duplicate, close."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from exchange_sim.control import SimControl
from exchange_sim.runner import SimulatorThread
from tests.sim.helpers import DictBook

STREAM = "btcusdt@depth@100ms"


async def _read_until(ws: Any, pred: Any, timeout: float = 15.0) -> list[str]:
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    while not pred(texts):
        texts.append(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
    return texts


def _events(texts: list[str]) -> list[dict[str, Any]]:
    return [json.loads(t)["data"] for t in texts]


def _two_connections(
    sim: SimulatorThread, min_events: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Connection A opened with a 'random' batching fault, connection B canonical; read both."""

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        url = f"{sim.ws_url}/stream?streams={STREAM}"
        async with (
            websockets.connect(url, max_size=None, max_queue=None) as a,
            websockets.connect(url, max_size=None, max_queue=None) as b,
        ):
            ta, tb = await asyncio.gather(
                _read_until(a, lambda t: len(t) >= min_events), _read_until(b, lambda t: len(t) >= min_events)
            )
            ea, eb = _events(ta), _events(tb)
            # read on until both reached the same id, so their ranges overlap fully at the end
            target = max(ea[-1]["u"], eb[-1]["u"])
            ta += (
                await _read_until(a, lambda t: bool(t) and json.loads(t[-1])["data"]["u"] >= target)
                if ea[-1]["u"] < target
                else []
            )
            tb += (
                await _read_until(b, lambda t: bool(t) and json.loads(t[-1])["data"]["u"] >= target)
                if eb[-1]["u"] < target
                else []
            )
            return _events(ta), _events(tb)

    sim.control.fault("batching", target="next", mode="random", seed=7)
    return asyncio.run(run())


def _book_from_truth(control: SimControl, symbol: str, update_id: int) -> DictBook:
    truth = control.book(symbol, update_id)
    return DictBook({"lastUpdateId": update_id, "bids": truth["bids"], "asks": truth["asks"]})


def test_two_connections_get_different_partials_of_one_id_sequence(simulator: SimulatorThread) -> None:
    a, b = _two_connections(simulator, 60)
    for events in (a, b):
        for prev, nxt in itertools.pairwise(events):
            assert nxt["U"] == prev["u"] + 1  # each chain is gap-free on its own
    lo = max(a[0]["U"], b[0]["U"])
    hi = min(a[-1]["u"], b[-1]["u"])
    ranges_a = {(e["U"], e["u"]) for e in a if lo <= e["U"] and e["u"] <= hi}
    ranges_b = {(e["U"], e["u"]) for e in b if lo <= e["U"] and e["u"] <= hi}
    assert ranges_a != ranges_b and ranges_a - ranges_b and ranges_b - ranges_a
    assert max(u - first for first, u in ranges_a) > 0

    # the same ids give the same book: replay both from the truth book at a shared boundary
    common_u = sorted({e["u"] for e in a} & {e["u"] for e in b} & set(range(lo, hi + 1)))
    assert len(common_u) >= 5
    start = common_u[0]
    book_a = _book_from_truth(simulator.control, "BTCUSDT", start)
    book_b = _book_from_truth(simulator.control, "BTCUSDT", start)
    checks = 0
    ia = iter(e for e in a if e["U"] > start)
    ib = iter(e for e in b if e["U"] > start)
    for u in common_u[1:]:
        for book, it in ((book_a, ia), (book_b, ib)):
            while book.last_update_id < u:
                book.apply(next(it))
        assert book_a.bids == book_b.bids and book_a.asks == book_b.asks
        checks += 1
    truth = simulator.control.book("BTCUSDT", common_u[-1])
    assert truth["bids"] == book_a.levels("bids", 10**6) and truth["asks"] == book_a.levels("asks", 10**6)
    assert checks >= 4


def test_usdm_partials_chain_on_their_own_pu(make_simulator: Any) -> None:
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"])
    a, b = _two_connections(sim, 40)
    for events in (a, b):
        for prev, nxt in itertools.pairwise(events):
            assert nxt["pu"] == prev["u"]  # pu is the previous u *as this connection saw it*
    assert {(e["U"], e["u"]) for e in a} != {(e["U"], e["u"]) for e in b}
    assert {(e["u"], e["pu"]) for e in a} != {(e["u"], e["pu"]) for e in b}


def _connect_and_fault(
    sim: SimulatorThread, kind: str, params: dict[str, Any], pred: Any, timeout: float = 15.0
) -> list[str]:
    async def run() -> list[str]:
        async with websockets.connect(
            f"{sim.ws_url}/stream?streams={STREAM}", max_size=None, max_queue=None
        ) as ws:
            first = await _read_until(ws, lambda t: len(t) >= 2)
            conn_id = max(c["id"] for c in sim.control.connections())
            assert sim.control.fault(kind, target=conn_id, **params) == [conn_id]
            return first + await _read_until(ws, pred, timeout)

    return asyncio.run(run())


def test_drop_ids_silently_skips_overlapping_events(simulator: SimulatorThread) -> None:
    start = simulator.control.last_update_id("BTCUSDT")
    lo, hi = start + 300, start + 700

    def past(texts: list[str]) -> bool:
        return bool(texts) and texts[-1].startswith("{") and json.loads(texts[-1])["data"]["u"] > hi + 200

    events = _events(
        _connect_and_fault(simulator, "drop_ids", {"from_id": lo, "to_id": hi, "symbol": "BTCUSDT"}, past)
    )
    assert not [e for e in events if e["U"] <= hi and e["u"] >= lo]
    gaps = [(p["u"], n["U"]) for p, n in itertools.pairwise(events) if n["U"] != p["u"] + 1]
    assert len(gaps) == 1 and gaps[0][0] < lo and gaps[0][1] > hi
    truth = simulator.control.truth("BTCUSDT", lo, hi)
    assert truth and all(e["U"] <= hi and e["u"] >= lo for e in truth)  # the ids existed


def test_drop_next_skips_exactly_the_next_messages_whatever_their_ids(simulator: SimulatorThread) -> None:
    def enough(texts: list[str]) -> bool:
        return len(texts) >= 12

    events = _events(_connect_and_fault(simulator, "drop_next", {"count": 3, "symbol": "BTCUSDT"}, enough))
    gaps = [(p["u"], n["U"]) for p, n in itertools.pairwise(events) if n["U"] != p["u"] + 1]
    assert len(gaps) == 1, gaps
    lo, hi = gaps[0][0] + 1, gaps[0][1] - 1
    assert len(simulator.control.truth("BTCUSDT", lo, hi)) == 3  # three whole events, no more, no less


def test_stall_keeps_the_connection_and_loses_nothing(simulator: SimulatorThread) -> None:
    async def run() -> list[str]:
        async with websockets.connect(
            f"{simulator.ws_url}/stream?streams={STREAM}", max_size=None, max_queue=None
        ) as ws:
            texts = await _read_until(ws, lambda t: len(t) >= 2)
            conn_id = max(c["id"] for c in simulator.control.connections())
            simulator.control.fault("stall", target=conn_id, seconds=0.8)
            deadline = time.monotonic() + 10
            while True:  # frames pile up on the server while the connection is stalled
                info = next(c for c in simulator.control.connections() if c["id"] == conn_id)
                if info["stalled"] and info["queued"] >= 5:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            return texts + await _read_until(ws, lambda t: len(t) >= 30)

    events = _events(asyncio.run(run()))
    for prev, nxt in itertools.pairwise(events):
        assert nxt["U"] == prev["u"] + 1


def test_malformed_frame_then_normal_frames(simulator: SimulatorThread) -> None:
    texts = _connect_and_fault(simulator, "malformed", {"count": 1}, lambda t: len(t) >= 12)
    bad = []
    for i, text in enumerate(texts):
        try:
            json.loads(text)
        except json.JSONDecodeError:
            bad.append(i)
    assert len(bad) == 1 and bad[0] < len(texts) - 1
    good = _events([t for i, t in enumerate(texts) if i not in bad])
    for prev, nxt in itertools.pairwise(good):
        assert nxt["U"] == prev["u"] + 1


def test_duplicate_frames(simulator: SimulatorThread) -> None:
    texts = _connect_and_fault(simulator, "duplicate", {"count": 3}, lambda t: len(t) >= 15)
    doubled = [i for i in range(1, len(texts)) if texts[i] == texts[i - 1]]
    assert len(doubled) == 3


def test_abrupt_close_sends_no_close_frame(simulator: SimulatorThread) -> None:
    with pytest.raises(ConnectionClosed) as info:
        _connect_and_fault(simulator, "close", {}, lambda t: False)
    assert info.value.rcvd is None


def test_close_with_code(simulator: SimulatorThread) -> None:
    with pytest.raises(ConnectionClosed) as info:
        _connect_and_fault(simulator, "close", {"code": 1001, "reason": "maintenance"}, lambda t: False)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001


def test_shutdown_notice_fault_then_close(simulator: SimulatorThread) -> None:
    seen: list[str] = []

    def record(texts: list[str]) -> bool:
        seen[:] = texts
        return False

    with pytest.raises(ConnectionClosed):
        _connect_and_fault(simulator, "shutdown_notice", {"close_after_s": 0.3}, record)
    notices = [t for t in seen if json.loads(t).get("e") == "serverShutdown"]
    assert len(notices) == 1


def test_unknown_fault_kind_is_refused(simulator: SimulatorThread) -> None:
    from exchange_sim.control import SimControlError

    with pytest.raises(SimControlError) as info:
        simulator.control.fault("explode")
    assert info.value.status == 400


def test_pause_and_resume(simulator: SimulatorThread) -> None:
    async def run() -> None:
        async with websockets.connect(
            f"{simulator.ws_url}/stream?streams={STREAM}", max_size=None, max_queue=None
        ) as ws:
            texts = await _read_until(ws, lambda t: len(t) >= 2)
            data = json.loads(texts[-1])["data"]
            simulator.control.pause()
            paused_at = simulator.control.last_update_id("BTCUSDT")
            with pytest.raises(TimeoutError):  # drain what was queued, then nothing more comes
                while True:
                    data = json.loads(await asyncio.wait_for(ws.recv(), 0.5))["data"]
            assert data["u"] == paused_at == simulator.control.last_update_id("BTCUSDT")
            simulator.control.resume()
            nxt = json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]
            assert nxt["U"] == paused_at + 1
            # exchange time ran on during the pause (>= 0.5 s of wall time at speed 10)
            assert nxt["E"] - data["E"] >= 5000

    asyncio.run(run())
