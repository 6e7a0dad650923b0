"""exchangeInfo, listing and delisting at runtime, per-symbol rates."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.fixtures.collector import wait_until


def get_json(url: str) -> tuple[dict[str, str], Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(resp.headers), json.loads(resp.read())


def test_exchange_info_lists_symbols_and_follows_listings_and_delistings(make_simulator: Any) -> None:
    sim = make_simulator(symbols=["BTCUSDT", "ETHBTC"])
    headers, info = get_json(sim.rest_url + "/api/v3/exchangeInfo")
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 20
    by = {s["symbol"]: s for s in info["symbols"]}
    assert by["BTCUSDT"] == {
        "symbol": "BTCUSDT",
        "status": "TRADING",
        "baseAsset": "BTC",
        "quoteAsset": "USDT",
    }
    assert by["ETHBTC"]["quoteAsset"] == "BTC"
    assert sim.control.list_symbol("NEWUSDT") is True
    assert sim.control.list_symbol("NEWUSDT") is False  # already trading
    assert sim.control.delist_symbol("BTCUSDT") is True
    _, info = get_json(sim.rest_url + "/api/v3/exchangeInfo")
    by = {s["symbol"]: s["status"] for s in info["symbols"]}
    assert by == {"BTCUSDT": "BREAK", "ETHBTC": "TRADING", "NEWUSDT": "TRADING"}
    # the delisted symbol has no book any more; the new one has
    try:
        urllib.request.urlopen(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=5", timeout=10)
        raise AssertionError("a delisted symbol must answer -1121")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and json.loads(exc.read())["code"] == -1121
    _, book = get_json(sim.rest_url + "/api/v3/depth?symbol=NEWUSDT&limit=5")
    assert book["lastUpdateId"] > 0 and len(book["bids"]) == 5
    wait_until(
        "events of the new symbol", lambda: sim.control.last_update_id("NEWUSDT") > book["lastUpdateId"], 10
    )
    last = sim.control.last_update_id("BTCUSDT")
    eth = sim.control.last_update_id("ETHBTC")
    wait_until("more events of the others", lambda: sim.control.last_update_id("ETHBTC") > eth + 20, 10)
    assert sim.control.last_update_id("BTCUSDT") == last  # delisted: no more events


def test_usdm_exchange_info(make_simulator: Any) -> None:
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"])
    _, info = get_json(sim.rest_url + "/fapi/v1/exchangeInfo")
    assert info["symbols"] == [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "contractType": "PERPETUAL",
        }
    ]


def test_per_symbol_rates(make_simulator: Any) -> None:
    sim = make_simulator(symbols=["BTCUSDT", "ETHUSDT"], rates={"ETHUSDT": 2.0})
    t0 = {s: len(sim.control.truth(s)) for s in ("BTCUSDT", "ETHUSDT")}
    wait_until("40 BTCUSDT events", lambda: len(sim.control.truth("BTCUSDT")) >= t0["BTCUSDT"] + 40, 20)
    n_btc = len(sim.control.truth("BTCUSDT")) - t0["BTCUSDT"]
    n_eth = len(sim.control.truth("ETHUSDT")) - t0["ETHUSDT"]
    assert n_eth <= n_btc / 5 + 2  # 2/s against 10/s
