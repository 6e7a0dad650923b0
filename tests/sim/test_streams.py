"""Websocket routes, event shapes and id chains, subscriptions, and the truth API."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal
from typing import Any

from exchange_sim.runner import SimulatorThread
from tests.sim.helpers import DictBook, collect, depth_events, http_get


def test_combined_stream_spot_events_are_contiguous_and_well_formed(simulator: SimulatorThread) -> None:
    url = simulator.ws_url + "/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
    frames = asyncio.run(collect(url, lambda f: len(depth_events(f, "btcusdt@depth@100ms")) >= 20))
    assert {f["stream"] for f in frames} <= {"btcusdt@depth@100ms", "ethusdt@depth@100ms"}
    events = depth_events(frames, "btcusdt@depth@100ms")
    for ev in events:
        assert list(ev) == ["e", "E", "s", "U", "u", "b", "a"]
        assert ev["s"] == "BTCUSDT" and ev["U"] <= ev["u"]
        for price, qty in ev["b"] + ev["a"]:
            assert len(price.split(".")[1]) == 8 and len(qty.split(".")[1]) == 8
        prices = [Decimal(p) for p, _ in ev["b"]]
        assert prices == sorted(prices, reverse=True)
    for prev, nxt in itertools.pairwise(events):
        assert nxt["U"] == prev["u"] + 1
        assert nxt["E"] > prev["E"]


def test_raw_stream_route_sends_bare_events(simulator: SimulatorThread) -> None:
    frames = asyncio.run(collect(simulator.ws_url + "/ws/btcusdt@depth@100ms", lambda f: len(f) >= 3))
    assert all(f["e"] == "depthUpdate" and f["s"] == "BTCUSDT" for f in frames)


def test_subscribe_unsubscribe_list(simulator: SimulatorThread) -> None:
    def done(frames: list[dict[str, Any]]) -> bool:
        return any(f.get("id") == 3 for f in frames)

    frames = asyncio.run(
        collect(
            simulator.ws_url + "/stream",
            done,
            send=[
                {"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms", "ethusdt@bookTicker"], "id": 1},
                {"method": "UNSUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 2},
                {"method": "LIST_SUBSCRIPTIONS", "id": 3},
            ],
        )
    )
    replies = {f["id"]: f for f in frames if "id" in f}
    assert replies[1] == {"result": None, "id": 1}
    assert replies[2] == {"result": None, "id": 2}
    assert replies[3] == {"result": ["btcusdt@depth@100ms"], "id": 3}


def test_one_second_stream_groups_ten_events(simulator: SimulatorThread) -> None:
    url = simulator.ws_url + "/stream?streams=btcusdt@depth/btcusdt@depth@100ms"

    def done(f: list[dict[str, Any]]) -> bool:
        slow, fast = depth_events(f, "btcusdt@depth"), depth_events(f, "btcusdt@depth@100ms")
        return len(slow) >= 3 and bool(fast) and fast[-1]["u"] >= slow[-1]["u"]

    frames = asyncio.run(collect(url, done))
    slow = depth_events(frames, "btcusdt@depth")
    fast = depth_events(frames, "btcusdt@depth@100ms")
    for prev, nxt in itertools.pairwise(slow):
        assert nxt["U"] == prev["u"] + 1
    # the last complete 1 s event spans exactly ten 100 ms events, which end at the same id
    ev = slow[-1]
    inside = [e for e in fast if ev["U"] <= e["U"] and e["u"] <= ev["u"]]
    assert len(inside) == 10 and inside[-1]["u"] == ev["u"] and inside[0]["U"] == ev["U"]


def test_snapshot_plus_events_equals_truth_book(simulator: SimulatorThread) -> None:
    """Sync like a client (Binance's spot rule) and compare with the ground-truth book."""

    async def run() -> tuple[DictBook, int]:
        url = simulator.ws_url + "/stream?streams=btcusdt@depth@100ms"
        import json

        import websockets

        async with websockets.connect(url, max_size=None) as ws:
            buffered = [json.loads(await ws.recv())["data"] for _ in range(3)]
            _, _, snap = http_get(simulator.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=5000")
            book = DictBook(snap)
            applied = 0
            while applied < 30:
                buffered.append(json.loads(await ws.recv())["data"])
                for ev in buffered:
                    if ev["u"] <= book.last_update_id:
                        continue
                    if applied == 0:
                        assert ev["U"] <= book.last_update_id + 1 <= ev["u"]
                    else:
                        assert ev["U"] == book.last_update_id + 1
                    book.apply(ev)
                    applied += 1
                buffered.clear()
            return book, book.last_update_id

    book, last_id = asyncio.run(run())
    truth = simulator.control.book("BTCUSDT", last_id)
    # the 5000-level snapshot holds the whole simulated book, so every level must match
    assert truth["bids"] == book.levels("bids", 10**6)
    assert truth["asks"] == book.levels("asks", 10**6)
    assert len(truth["bids"]) > 300 and len(truth["asks"]) > 300


def test_truth_events_match_what_a_canonical_connection_received(simulator: SimulatorThread) -> None:
    frames = asyncio.run(collect(simulator.ws_url + "/ws/btcusdt@depth@100ms", lambda f: len(f) >= 10))
    truth = simulator.control.truth("BTCUSDT", frames[0]["U"], frames[-1]["u"])
    assert truth == frames


def test_usdm_events_chain_on_pu(make_simulator: Any) -> None:
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"])
    url = sim.ws_url + "/public/stream?streams=btcusdt@depth@100ms"
    events = depth_events(asyncio.run(collect(url, lambda f: len(f) >= 20)))
    for ev in events:
        assert list(ev) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"]
        assert ev["T"] <= ev["E"]
    assert all(n["pu"] == p["u"] for p, n in itertools.pairwise(events))
    assert sum(n["U"] != p["u"] + 1 for p, n in itertools.pairwise(events)) > 10
    truth = sim.control.truth("BTCUSDT", events[0]["U"], events[-1]["u"])
    assert truth == events  # canonical connections get exactly the truth, pu included
    status, _, snap = http_get(sim.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
    assert status == 200 and list(snap) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert len(snap["bids"]) == 1000 and len(snap["bids"][0][0].split(".")[1]) == 2
