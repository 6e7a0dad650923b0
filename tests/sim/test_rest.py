"""REST depth: shapes, limits and weights, Binance errors, and the per-minute weight budget (429 then 418)."""

from __future__ import annotations

from typing import Any

import pytest

from exchange_sim.runner import SimulatorThread
from tests.sim.helpers import http_get


@pytest.mark.parametrize(
    ("limit", "weight", "levels"),
    [(5, 5, 5), (100, 5, 100), (500, 25, 500), (1000, 50, 1000), (5000, 250, 5000)],
)
def test_spot_depth_limits_and_weights(make_simulator: Any, limit: int, weight: int, levels: int) -> None:
    sim = make_simulator(symbols=["BTCUSDT"], specs={})
    status, headers, body = http_get(f"{sim.rest_url}/api/v3/depth?symbol=BTCUSDT&limit={limit}")
    assert status == 200
    assert list(body) == ["lastUpdateId", "bids", "asks"]
    assert headers["X-MBX-USED-WEIGHT-1M"] == str(weight)
    # the simulated book has fewer than 5000 levels a side: the answer holds what exists
    assert len(body["bids"]) == min(levels, len(body["bids"])) and len(body["bids"]) >= min(levels, 300)
    prices = [float(p) for p, _ in body["bids"]]
    assert prices == sorted(prices, reverse=True) and float(body["asks"][0][0]) > prices[0]


def test_spot_depth_default_limit_is_100(simulator: SimulatorThread) -> None:
    status, _, body = http_get(simulator.rest_url + "/api/v3/depth?symbol=ETHUSDT")
    assert status == 200 and len(body["bids"]) == 100 and len(body["asks"]) == 100


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("symbol=NOPEUSDT&limit=100", 400, -1121),
        ("limit=100", 400, -1102),
        ("symbol=BTCUSDT&limit=abc", 400, -1100),
        ("symbol=BTCUSDT&limit=6000", 400, -1100),
        ("symbol=BTCUSDT&limit=0", 400, -1100),
    ],
)
def test_spot_depth_errors(simulator: SimulatorThread, query: str, status: int, code: int) -> None:
    got_status, headers, body = http_get(f"{simulator.rest_url}/api/v3/depth?{query}")
    assert got_status == status
    assert body["code"] == code and isinstance(body["msg"], str)
    assert headers["Content-Type"].startswith("application/json")
    if code == -1121:
        assert body == {"code": -1121, "msg": "Invalid symbol."}


def test_usdm_depth_limits_weights_and_errors(make_simulator: Any) -> None:
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"])
    for limit, weight in [(5, 2), (10, 2), (20, 2), (50, 2), (100, 5), (500, 10), (1000, 20)]:
        sim.control.reset_weights()
        status, headers, body = http_get(f"{sim.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit={limit}")
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == str(weight)
        assert len(body["bids"]) == limit and {"E", "T", "lastUpdateId"} <= set(body)
    status, _, body = http_get(f"{sim.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit=7")
    assert status == 400 and body["code"] == -1100
    status, _, body = http_get(f"{sim.rest_url}/fapi/v1/depth?symbol=XXXUSDT&limit=5")
    assert status == 400 and body == {"code": -1121, "msg": "Invalid symbol."}
    status, _, _ = http_get(f"{sim.rest_url}/api/v3/depth?symbol=BTCUSDT")  # spot route on a usdm simulator
    assert status == 404


def test_weight_budget_429_then_418_with_retry_after(make_simulator: Any) -> None:
    sim = make_simulator(
        symbols=["BTCUSDT"], weight_limit_per_minute=120, ban_after_violations=2, ban_seconds=300
    )
    url = sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=1000"  # weight 50
    statuses = []
    for _ in range(6):
        status, headers, body = http_get(url)
        statuses.append(status)
        if status in (429, 418):
            assert body["code"] == -1003
            retry = int(headers["Retry-After"])
            assert 1 <= retry <= (60 if status == 429 else 300)
            if status == 418:
                assert retry > 60  # the ban outlasts the minute window
    assert statuses == [200, 200, 429, 429, 418, 418]


def test_unknown_path_is_404_json(simulator: SimulatorThread) -> None:
    status, _, body = http_get(simulator.rest_url + "/api/v3/nothing")
    assert status == 404 and "msg" in body
