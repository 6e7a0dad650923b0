"""Replay of the real recordings: the replayed stream, synced to the recording's snapshot, is the exchange's
book."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from exchange_sim.replay import load_recording
from exchange_sim.runner import SimulatorThread
from tests.sim.helpers import DictBook, http_get

pytestmark = pytest.mark.realdata


def replay_all(sim: SimulatorThread, path: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Subscribe, then read every frame the replay sends (until the server says it is done and all
    arrived)."""

    async def run() -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        async with websockets.connect(sim.ws_url + path, max_size=None, max_queue=None) as ws:
            while time.monotonic() < deadline:
                try:
                    async with asyncio.timeout(0.3):  # (cheaper than wait_for: no task per frame)
                        frames.append(orjson.loads(await ws.recv(decode=False)))
                    if len(frames) % 5000:
                        continue
                except TimeoutError:
                    pass
                if sim.control.status()["replay_done"]:
                    conns = sim.control.connections()
                    if conns and conns[0]["queued"] == 0 and conns[0]["sent"] == len(frames):
                        return frames
        raise TimeoutError(f"replay not finished after {timeout} s ({len(frames)} frames)")

    return asyncio.run(run())


def sync_and_compare(
    frames: list[dict[str, Any]], snapshot: dict[str, Any], usdm: bool, depth_stream: str, ticker_stream: str
) -> tuple[int, int, int]:
    """Binance's sync rules on a plain dict book; returns (events applied, bookTicker matches, compared)."""
    book = DictBook(snapshot)
    lid = book.last_update_id
    tops: dict[int, tuple[str, str, str, str]] = {}
    applied = 0
    prev_u = None
    for f in frames:
        if f["stream"] != depth_stream:
            continue
        ev = f["data"]
        if (ev["u"] < lid) if usdm else (ev["u"] <= lid):
            continue
        if prev_u is None:
            assert (ev["U"] <= lid <= ev["u"]) if usdm else (ev["U"] <= lid + 1 <= ev["u"])
        elif usdm:
            assert ev["pu"] == prev_u
        else:
            assert ev["U"] == prev_u + 1
        book.apply(ev)
        prev_u = ev["u"]
        applied += 1
        tops[ev["u"]] = book.best()
    matches = compared = 0
    for f in frames:
        if f["stream"] == ticker_stream and f["data"]["u"] in tops:
            t = f["data"]
            compared += 1
            matches += tops[t["u"]] == (t["b"], t["B"], t["a"], t["A"])
    return applied, matches, compared


def test_replayed_spot_btcusdt_reproduces_bookticker_564_of_564(make_simulator: Any, real_data: Path) -> None:
    path = real_data / "hftbacktest_spot_btcusdt_20240808.gz"
    sim = make_simulator(symbols=["BTCUSDT"], replay_path=str(path), speed=1000.0)
    frames = replay_all(sim, "/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker")
    assert len(frames) == 3451 + 28040
    status, _, snap = http_get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=1000")
    assert status == 200 and snap["lastUpdateId"] == 50093239218 and len(snap["bids"]) == 1000
    applied, matches, compared = sync_and_compare(
        frames, snap, False, "btcusdt@depth@100ms", "btcusdt@bookTicker"
    )
    assert (matches, compared) == (564, 564)
    assert applied > 3000
    # timestamps are shifted to now (the recording is from 2024)
    first_e = next(f["data"]["E"] for f in frames if "E" in f["data"])
    assert abs(first_e - time.time() * 1000) < 3_600_000
    # the ground truth of a replay is the recording
    truth = sim.control.truth("BTCUSDT", 50093239208, 50093239224)
    assert truth and truth[0]["U"] <= 50093239218 <= truth[-1]["u"]


def test_replayed_usdm_btcusdt_reproduces_bookticker(make_simulator: Any, real_data: Path) -> None:
    path = real_data / "hftbacktest_usdm_btcusdt_20240808.gz"
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"], replay_path=str(path), speed=1000.0)
    frames = replay_all(sim, "/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker")
    status, _, snap = http_get(sim.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
    assert status == 200 and {"E", "T"} <= set(snap)
    _, matches, compared = sync_and_compare(frames, snap, True, "btcusdt@depth@0ms", "btcusdt@bookTicker")
    assert (matches, compared) == (629, 629)


@pytest.mark.parametrize(
    ("name", "market", "symbol"),
    [
        ("cryptofeed_BINANCE.ws.1.0", "spot", "NKNUSDT"),
        ("cryptofeed_BINANCE_FUTURES.ws.1.0", "usdm", "SUSHIUSDT"),
    ],
)
def test_replayed_cryptofeed_recording_syncs_to_its_http_snapshot(
    make_simulator: Any, real_data: Path, name: str, market: str, symbol: str
) -> None:
    sim = make_simulator(market=market, symbols=[symbol], replay_path=str(real_data / name), speed=50.0)
    sym = symbol.lower()
    frames = replay_all(sim, f"/stream?streams={sym}@depth@100ms/{sym}@bookTicker")
    route = "/fapi/v1/depth" if market == "usdm" else "/api/v3/depth"
    status, _, snap = http_get(f"{sim.rest_url}{route}?symbol={symbol}&limit=1000")
    assert status == 200
    applied, matches, compared = sync_and_compare(
        frames, snap, market == "usdm", f"{sym}@depth@100ms", f"{sym}@bookTicker"
    )
    assert applied > 10
    assert matches == compared


def test_loader_reads_both_formats(real_data: Path) -> None:
    msgs, snaps = load_recording(real_data / "hftbacktest_spot_btcusdt_20240808.gz")
    kinds = {k: sum(m.kind == k for m in msgs) for k in ("depth", "bookTicker", "other")}
    assert kinds == {"depth": 3451, "bookTicker": 28040, "other": 9757}
    assert [(s.symbol, s.body["lastUpdateId"]) for s in snaps] == [("BTCUSDT", 50093239218)]
    msgs, snaps = load_recording(real_data / "cryptofeed_BINANCE.ws.1.0")
    assert {s.symbol for s in snaps} == {"NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"}
    assert all(a.recv_ns <= b.recv_ns for a, b in itertools.pairwise(msgs))
