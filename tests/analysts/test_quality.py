"""The data-quality report renders from synthetic inputs and from the files validation and merge write."""

from __future__ import annotations

import io
import struct

import numpy as np
import orjson
import polars as pl

from depth_core import quality
from depth_core.schema import merged_manifest_key
from depth_store import open_store

DATE = "2026-11-24"
DAY0 = 1_795_478_400_000  # 2026-11-24T00:00:00Z in ms
HOUR = 3_600_000


def _stream(name: str, rng: np.random.Generator, outage: tuple[int, int] | None, gap_every: int = 0,
            latency_ms: float = 40.0) -> quality.StreamTimeline:
    times = np.arange(DAY0 + 100, DAY0 + 24 * HOUR, 100, dtype=np.int64)  # 10 events/s
    if outage is not None:
        times = times[(times < DAY0 + outage[0]) | (times >= DAY0 + outage[1])]
    ids = 1_000 + (times - DAY0) // 100 * 3
    receive = times * 1_000_000 + (latency_ms + rng.exponential(5.0, len(times))) * 1e6
    gaps = [(int(ids[i]), int(ids[i]) + 3) for i in range(5_000, len(ids), gap_every)] if gap_every else []
    if outage is not None and len(ids):
        before = int(np.searchsorted(times, DAY0 + outage[0])) - 1
        if 0 <= before < len(ids) - 1:  # the ids the stream missed while it was down
            gaps = sorted([*gaps, (int(ids[before]), int(ids[before + 1]) - 3)])
    lat = (receive - times * 1e6) / 1e6
    return quality.StreamTimeline(
        stream=name, exchange_ms=times, receive_ns=receive.astype(np.int64), last_update_id=ids, id_gaps=gaps,
        coverage=0.999 if gaps or outage else 1.0, quarantined=2,
        latency_p50_ms=float(np.percentile(lat, 50)) if len(lat) else None,
        latency_p99_ms=float(np.percentile(lat, 99)) if len(lat) else None,
        clock_offset_ms=float(lat.min()) if len(lat) else None,
    )


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_report_renders_outages_gaps_and_every_stream(tmp_path: object) -> None:
    rng = np.random.default_rng(1)
    eu = _stream("eu-1", rng, outage=(3 * HOUR, 4 * HOUR))
    ap = _stream("ap-1", rng, outage=None, gap_every=150_000, latency_ms=120.0)
    us = _stream("us-1", rng, outage=(0, 24 * HOUR))  # down all day
    inp = quality.QualityInput(
        market="spot", symbol="BTCUSDT", date=DATE, streams=[eu, ap, us],
        covered=[(1_000, 300_000, "eu-1"), (300_001, 2_591_000, "ap-1")],
        merged_gaps=[(1_500_000, 1_500_010)], merged_coverage=0.99999, images=2, reanchor_ids=[1_500_011],
    )
    store = open_store(str(tmp_path))
    report = quality.write_quality_report(store, inp)
    (tmp_path / "quality.png").write_bytes(report.png)  # type: ignore[operator]
    width, height = _png_size(report.png)
    assert width > 800 and height > 600 and len(report.png) > 30_000
    assert store.get_bytes(report.keys["png"]) == report.png
    assert report.keys["png"] == f"quality/market=spot/symbol=BTCUSDT/date={DATE}/quality.png"
    md = store.get_bytes(report.keys["markdown"]).decode()
    for name in ("eu-1", "ap-1", "us-1", "Merged coverage", "quality.png"):
        assert name in md
    assert "Outages of **eu-1**: 02:59:59-04:00:00 (3600 s)" in md  # from its last event before
    assert "Outages of **us-1**: 00:00:00-24:00:00 (86400 s)" in md
    summary = orjson.loads(store.get_bytes(report.keys["json"]))
    assert summary["streams"]["eu-1"]["outages"] == 1
    assert abs(summary["streams"]["eu-1"]["outage_seconds"] - 3600) < 1
    assert summary["streams"]["ap-1"]["outages"] == 0 and summary["streams"]["ap-1"]["id_gaps"] == len(ap.id_gaps) > 0
    assert summary["streams"]["eu-1"]["id_gaps"] == 1
    assert summary["streams"]["us-1"]["events"] == 0 and summary["streams"]["us-1"]["outage_seconds"] == 86_400
    assert summary["streams"]["ap-1"]["latency_p50_ms"] > summary["streams"]["eu-1"]["latency_p50_ms"]
    assert summary["merged_gaps"] == 1
    inline = report.markdown_with_inline_png()
    assert "](data:image/png;base64,iVBORw0KGgo" in inline and "](quality.png)" not in inline


def test_quiet_market_is_not_an_outage() -> None:
    rng = np.random.default_rng(2)
    a = _stream("a", rng, outage=(10 * HOUR, 11 * HOUR))
    b = _stream("b", rng, outage=(10 * HOUR, 11 * HOUR))
    a.id_gaps = b.id_gaps = []  # ids did not move on while nobody received anything
    summaries = quality.summarize(quality.QualityInput("spot", "BTCUSDT", DATE, [a, b]))
    assert [len(s.outages) for s in summaries] == [0, 0]
    assert [len(s.quiet) for s in summaries] == [1, 1]


def test_load_quality_input_from_validated_outputs_and_manifest(tmp_path: object) -> None:
    from depth_core.validate import EVENTS_FILE, REPORT_FILE, validated_day_prefix

    store = open_store(str(tmp_path))
    rng = np.random.default_rng(3)
    src = _stream("eu-1", rng, outage=(5 * HOUR, 6 * HOUR), gap_every=200_000)
    prefix = validated_day_prefix("spot", "eu-1", "BTCUSDT", DATE)
    events = pl.DataFrame({"E": src.exchange_ms, "receive_ns": src.receive_ns, "u": src.last_update_id,
                           "dup": np.zeros(len(src.exchange_ms), dtype=bool)})
    buf = io.BytesIO()
    events.write_parquet(buf)
    store.put_bytes(prefix + EVENTS_FILE, buf.getvalue())
    store.put_bytes(prefix + REPORT_FILE, orjson.dumps({
        "gaps": [list(g) for g in src.id_gaps], "quarantined": 4, "latency_p50_ms": 41.0,
        "latency_p99_ms": 60.0, "clock_offset_ms": 39.5}))
    store.put_bytes(merged_manifest_key("spot", "BTCUSDT", DATE), orjson.dumps({
        "coverage": 0.9991, "covered": [{"first_id": 1000, "last_id": 9000, "stream": "eu-1", "events": 7}],
        "gaps": [{"first_id": 9001, "last_id": 9010, "reanchored_at": 9011, "snapshot_source": "eu-1",
                  "skipped_ids": 0}],
        "per_stream": {"eu-1": {"coverage": 0.9991}}, "images": [{"update_id": 1000}, {"update_id": 9011}]}))
    inp = quality.load_quality_input(store, "spot", "BTCUSDT", DATE, ["eu-1", "ap-1"])
    assert [s.stream for s in inp.streams] == ["eu-1", "ap-1"]
    assert len(inp.streams[0].exchange_ms) == len(src.exchange_ms) and len(inp.streams[1].exchange_ms) == 0
    assert inp.streams[0].id_gaps == src.id_gaps and inp.streams[0].quarantined == 4
    assert inp.merged_gaps == [(9001, 9010)] and inp.images == 2 and inp.merged_coverage == 0.9991
    assert inp.reanchor_ids == [9011]
    report = quality.write_quality_report(store, inp)
    assert "ap-1" in report.markdown and report.summary["streams"]["eu-1"]["outages"] == 1
    assert len(store.get_bytes(report.keys["png"])) > 20_000
