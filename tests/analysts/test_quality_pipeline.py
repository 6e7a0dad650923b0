"""The quality report and the reading API on what validation and the merge really write: a real recording
split into two streams with one outage each (integration of :func:`depth_core.quality.load_quality_input`
and :func:`depth_core.reader.book_at` with the pipeline core)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import polars as pl
import pytest

from depth_core import quality, reader
from depth_core.merge import merge_symbol_day
from depth_core.raw_format import LineKind, RawObjectKey, encode_line
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from depth_store.base import ObjectStore

DATE = "2024-08-08"


def _write(store: ObjectStore, stream: str, lines: list[tuple[int, LineKind, str]]) -> None:
    lines.sort(key=lambda x: x[0])
    for seq, start in enumerate(range(0, len(lines), 500)):
        chunk = lines[start : start + 500]
        key = RawObjectKey.for_segment("spot", stream, "BTCUSDT", chunk[0][0], "q1", seq)
        body = b"".join(encode_line(ns, kind, text) for ns, kind, text in chunk)
        store.put_bytes(key.key, gzip.compress(body, compresslevel=1))


@pytest.mark.realdata
def test_quality_report_from_validated_and_merged_real_data(real_data: Path, tmp_path: Path) -> None:
    depth: list[tuple[int, str]] = []
    snaps: list[tuple[int, LineKind, str]] = []
    tickers: dict[int, tuple[float, float]] = {}
    with gzip.open(real_data / "hftbacktest_spot_btcusdt_20240808.gz", "rt") as fh:
        for line in fh:
            ns_text, text = line.rstrip("\n").split(" ", 1)
            if text.startswith('{"lastUpdateId"'):
                snaps.append((int(ns_text), LineKind.SNAPSHOT, text))
            elif "@depth" in text[:40]:
                depth.append((int(ns_text), text))
            elif "@bookTicker" in text[:40]:
                data = orjson.loads(text)["data"]
                tickers[int(data["u"])] = (float(data["b"]), float(data["a"]))
    n = len(depth)
    eu = [(ns, LineKind.DEPTH, t) for i, (ns, t) in enumerate(depth) if not 0.30 * n <= i < 0.40 * n]
    ap = [
        (ns + 3_000_000, LineKind.DEPTH, t) for i, (ns, t) in enumerate(depth) if not 0.60 * n <= i < 0.75 * n
    ]
    store = open_store(str(tmp_path / "store"))
    _write(store, "eu-1", [*eu, *snaps])
    _write(store, "ap-1", ap)
    for stream in ("eu-1", "ap-1"):
        validate_symbol_day(store, "spot", stream, "BTCUSDT", DATE)
    merge = merge_symbol_day(store, "spot", "BTCUSDT", DATE, ["eu-1", "ap-1"])
    assert merge.gap_count == 0, merge.markdown()

    inp = quality.load_quality_input(store, "spot", "BTCUSDT", DATE, ["eu-1", "ap-1"])
    assert all(len(s.exchange_ms) > 500 for s in inp.streams)
    assert {c[2] for c in inp.covered} == {"eu-1", "ap-1"} and inp.merged_gaps == []
    report = quality.write_quality_report(store, inp)
    eu_sum, ap_sum = report.summary["streams"]["eu-1"], report.summary["streams"]["ap-1"]
    # each stream's outage (10 % and 15 % of ~6 minutes of events) is seen while the other stream had events
    assert eu_sum["outages"] == 1 and 25 < eu_sum["outage_seconds"] < 50
    assert ap_sum["outages"] == 1 and 40 < ap_sum["outage_seconds"] < 70
    assert eu_sum["id_gaps"] >= 1 and ap_sum["id_gaps"] >= 1  # the ids they missed
    assert 1.0 < ap_sum["latency_p50_ms"] - eu_sum["latency_p50_ms"] < 5.0  # ap-1 received 3 ms later
    assert len(store.get_bytes(report.keys["png"])) > 20_000
    summary = orjson.loads(store.get_bytes(report.keys["json"]))
    assert summary["merged_coverage"] == pytest.approx(merge.coverage)
    assert "eu-1" in report.markdown and "ap-1" in report.markdown
    (tmp_path / "real-quality.png").write_bytes(report.png)

    # the reading API on the merge's own files: the book after an event equals Binance's bookTicker there
    merged_ids = set(
        reader.load_deltas("BTCUSDT", DATE, "2024-08-09", store=store)
        .filter(~pl.col("is_snapshot"))
        .select("last_update_id")
        .collect()["last_update_id"]
        .to_list()
    )
    common = sorted(set(tickers) & merged_ids)
    assert len(common) > 100
    for u in common[:: len(common) // 15]:
        bids, asks = reader.book_at("BTCUSDT", u, store=store, depth=1)
        assert (bids["price"][0], asks["price"][0]) == tickers[u], u
