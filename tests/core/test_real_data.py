"""Real Binance recordings split into two streams (different batching, disjoint outages), merged, and the
replayed top of book compared with the exchange's own @bookTicker at every matching ``u``."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from depth_core.merge import MergeReport, merge_symbol_day
from depth_core.names import Market
from depth_core.raw_format import LineKind
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from depth_store.base import ObjectStore
from tests.core.synth import write_stream

pytestmark = pytest.mark.realdata

RecLine = tuple[int, LineKind, str]


def load_recording(path: Path) -> tuple[list[tuple[int, dict[str, object]]], list[RecLine], list[RecLine]]:
    """(depth events with receive ns, bookTicker lines, snapshot lines) of an hftbacktest recording."""
    depth: list[tuple[int, dict[str, object]]] = []
    tickers: list[RecLine] = []
    snaps: list[RecLine] = []
    with gzip.open(path) as fh:
        for raw in fh:
            ns_text, text = raw.rstrip(b"\n").split(b" ", 1)
            ns = int(ns_text)
            if text.startswith(b'{"lastUpdateId"'):
                snaps.append((ns, LineKind.SNAPSHOT, text.decode()))
                continue
            msg = orjson.loads(text)
            stream = msg.get("stream", "")
            if "@depth" in stream:
                depth.append((ns, msg))
            elif "@bookTicker" in stream:
                tickers.append((ns, LineKind.BOOK_TICKER, text.decode()))
    return depth, tickers, snaps


def combine(a: dict[str, object], b: dict[str, object]) -> dict[str, object]:
    """Two consecutive events as one (another batching of the same ids): later level values win."""
    da, db = a["data"], b["data"]
    assert isinstance(da, dict) and isinstance(db, dict)
    out = dict(db)
    out["U"] = da["U"]
    if "pu" in da:
        out["pu"] = da["pu"]
    for side in ("b", "a"):
        levels: dict[str, str] = {}
        for p, q in [*da[side], *db[side]]:
            levels[p] = q
        out[side] = [[p, q] for p, q in levels.items()]
    return {"stream": a["stream"], "data": out}


def split_streams(
    depth: list[tuple[int, dict[str, object]]], outage_a: tuple[float, float], outage_b: tuple[float, float]
) -> tuple[list[RecLine], list[RecLine]]:
    """Stream A: every event as recorded; stream B: pairs combined into one event (another batching of the
    same ids), received 3 ms later, except where A is down (there B has A's boundaries, so every bookTicker u
    stays an event boundary of the merge). Each stream misses the events in its outage window (fractions)."""
    n = len(depth)
    a_lines: list[RecLine] = []
    b_lines: list[RecLine] = []

    def in_a_outage(i: int) -> bool:
        return outage_a[0] * n <= i < outage_a[1] * n

    for i, (ns, msg) in enumerate(depth):
        if not in_a_outage(i):
            a_lines.append((ns, LineKind.DEPTH, orjson.dumps(msg).decode()))
    i = 0
    while i < n:
        in_b_outage = outage_b[0] * n <= i < outage_b[1] * n
        if i + 1 < n and not in_a_outage(i) and not in_a_outage(i + 1):
            if not in_b_outage:
                ns = depth[i + 1][0] + 3_000_000
                b_lines.append(
                    (ns, LineKind.DEPTH, orjson.dumps(combine(depth[i][1], depth[i + 1][1])).decode())
                )
            i += 2
            continue
        if not in_b_outage:
            b_lines.append((depth[i][0] + 3_000_000, LineKind.DEPTH, orjson.dumps(depth[i][1]).decode()))
        i += 1
    return a_lines, b_lines


def merge_days(store: ObjectStore, market: Market, dates: list[str]) -> list[MergeReport]:
    reports = []
    for date in dates:
        for s in ("eu-1", "ap-1"):
            validate_symbol_day(store, market, s, "BTCUSDT", date)
        reports.append(merge_symbol_day(store, market, "BTCUSDT", date, ["eu-1", "ap-1"]))
    return reports


@pytest.mark.parametrize(
    ("market", "filename", "expected"),
    [
        ("spot", "hftbacktest_spot_btcusdt_20240808.gz", 564),
        ("usdm", "hftbacktest_usdm_btcusdt_20240808.gz", 629),
    ],
)
def test_real_recording_two_streams_matches_book_ticker(
    real_data: Path, tmp_path: Path, market: Market, filename: str, expected: int
) -> None:
    depth, tickers, snaps = load_recording(real_data / filename)
    a_lines, b_lines = split_streams(depth, (0.30, 0.40), (0.60, 0.75))
    store = open_store(str(tmp_path / "store"))
    write_stream(store, market, "eu-1", "BTCUSDT", [*a_lines, *snaps, *tickers], per_object=400)
    write_stream(store, market, "ap-1", "BTCUSDT", b_lines, per_object=300, session="s2")
    reports = merge_days(store, market, ["2024-08-08", "2024-08-09"])
    for r in reports:
        assert r.blocking_passed, r.markdown()
        assert r.gap_count == 0, r.markdown()
    compared = matched = 0
    for r in reports:
        for c in r.checks:
            if c.name == "matches_book_ticker":
                compared += c.metadata["compared"]
                matched += c.metadata["matched"]
    assert (matched, compared) == (expected, expected)
    assert reports[1].opening["kind"] == "carry"
    shares = reports[0].per_stream
    assert shares["eu-1"].share > 0 and shares["ap-1"].share > 0
