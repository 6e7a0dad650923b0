"""USD-M ``pu`` follows the exchange's own per-symbol sequence, not the subscribers: a client that reconnects
after events passed with nobody subscribed sees ``pu`` != its last ``u`` (the gap is visible)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from exchange_sim.runner import SimulatorThread
from tests.sim.helpers import collect, depth_events

STREAMS = ("btcusdt@depth@100ms", "btcusdt@depth@500ms", "btcusdt@depth")
GROUP = {"btcusdt@depth@100ms": 1, "btcusdt@depth@500ms": 5, "btcusdt@depth": 10}  # 100 ms events per event


def _wait_for_events_after(sim: SimulatorThread, last_u: int, count: int, timeout: float = 15.0) -> None:
    """Poll the simulator until it has published ``count`` canonical events after id ``last_u``."""
    deadline = time.monotonic() + timeout
    while len(sim.control.truth("BTCUSDT", last_u + 1)) < count:
        assert time.monotonic() < deadline, f"{count} events after {last_u} not published in {timeout} s"
        time.sleep(0.02)


def _session(sim: SimulatorThread, stream: str, n: int) -> list[dict[str, Any]]:
    url = f"{sim.ws_url}/public/stream?streams={stream}"
    return depth_events(asyncio.run(collect(url, lambda f: len(depth_events(f)) >= n, timeout=20)))


def _wait_unsubscribed(sim: SimulatorThread, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sim.control.connections():
        assert time.monotonic() < deadline, "the closed connection is still listed"
        time.sleep(0.02)


def test_usdm_pu_after_reconnect_shows_the_events_missed(make_simulator: Any) -> None:
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"])
    for stream in STREAMS:
        first = _session(sim, stream, 3)
        _wait_unsubscribed(sim)  # nobody is subscribed to the symbol now
        last_u = first[-1]["u"]
        _wait_for_events_after(sim, last_u, GROUP[stream] + 1)  # a whole event of this speed passes unseen
        second = _session(sim, stream, 3)
        assert second[0]["pu"] != last_u, f"{stream}: pu hides the events missed while disconnected"
        assert second[0]["U"] > last_u + 1
        for prev, nxt in itertools.pairwise(second):
            assert nxt["pu"] == prev["u"], stream
        # every event, the first after subscribing included, is a whole group of the exchange's own chain
        # for that speed, and its pu is the u of the group before it
        for events in (first, second):
            for ev in events:
                covered = sim.control.truth("BTCUSDT", ev["pu"] + 1, ev["u"])
                assert len(covered) == GROUP[stream], (stream, ev["U"], ev["u"])
                assert covered[0]["pu"] == ev["pu"] and covered[0]["U"] == ev["U"], stream


def test_usdm_batched_connection_chains_pu_on_what_it_was_sent(make_simulator: Any) -> None:
    """A connection with its own batching keeps pu = previous u *it* was sent, also after others reconnect."""
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"])
    first = _session(sim, STREAMS[0], 3)
    _wait_unsubscribed(sim)
    _wait_for_events_after(sim, first[-1]["u"], 2)
    sim.control.fault("batching", target="next", mode="random", seed=7)
    second = _session(sim, STREAMS[0], 20)
    assert second[0]["pu"] != first[-1]["u"]
    assert all(n["pu"] == p["u"] for p, n in itertools.pairwise(second))
