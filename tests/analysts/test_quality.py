"""The data-quality report renders from synthetic inputs and from the files validation and merge write."""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import orjson
import polars as pl

from depth_core import quality
from depth_core.layout import merged_manifest_key
from depth_store import open_store

DATE = "2026-11-24"
DAY0 = 1_795_478_400_000  # 2026-11-24T00:00:00Z in ms
HOUR = 3_600_000


def _stream(
    name: str,
    rng: np.random.Generator,
    outage: tuple[int, int] | None,
    gap_every: int = 0,
    latency_ms: float = 40.0,
) -> quality.StreamTimeline:
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
        stream=name,
        exchange_ms=times,
        receive_ns=receive.astype(np.int64),
        last_update_id=ids,
        id_gaps=gaps,
        coverage=0.999 if gaps or outage else 1.0,
        quarantined=2,
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
        market="spot",
        symbol="BTCUSDT",
        date=DATE,
        streams=[eu, ap, us],
        covered=[(1_000, 300_000, "eu-1"), (300_001, 2_591_000, "ap-1")],
        merged_gaps=[(1_500_000, 1_500_010)],
        merged_coverage=0.99999,
        images=2,
        reanchor_ids=[1_500_011],
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
    assert (
        summary["streams"]["ap-1"]["outages"] == 0
        and summary["streams"]["ap-1"]["id_gaps"] == len(ap.id_gaps) > 0
    )
    assert summary["streams"]["eu-1"]["id_gaps"] == 1
    assert (
        summary["streams"]["us-1"]["events"] == 0 and summary["streams"]["us-1"]["outage_seconds"] == 86_400
    )
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
    events = pl.DataFrame(
        {
            "E": src.exchange_ms,
            "receive_ns": src.receive_ns,
            "u": src.last_update_id,
            "dup": np.zeros(len(src.exchange_ms), dtype=bool),
        }
    )
    buf = io.BytesIO()
    events.write_parquet(buf)
    store.put_bytes(prefix + EVENTS_FILE, buf.getvalue())
    store.put_bytes(
        prefix + REPORT_FILE,
        orjson.dumps(
            {
                "gaps": [list(g) for g in src.id_gaps],
                "quarantined": 4,
                "latency_p50_ms": 41.0,
                "latency_p99_ms": 60.0,
                "clock_offset_ms": 39.5,
            }
        ),
    )
    store.put_bytes(
        merged_manifest_key("spot", "BTCUSDT", DATE),
        orjson.dumps(
            {
                "coverage": 0.9991,
                "covered": [{"first_id": 1000, "last_id": 9000, "stream": "eu-1", "events": 7}],
                "gaps": [
                    {
                        "first_id": 9001,
                        "last_id": 9010,
                        "reanchored_at": 9011,
                        "snapshot_source": "eu-1",
                        "skipped_ids": 0,
                    }
                ],
                "per_stream": {"eu-1": {"coverage": 0.9991}},
                "images": [{"update_id": 1000}, {"update_id": 9011}],
            }
        ),
    )
    inp = quality.load_quality_input(store, "spot", "BTCUSDT", DATE, ["eu-1", "ap-1"])
    assert [s.stream for s in inp.streams] == ["eu-1", "ap-1"]
    assert len(inp.streams[0].exchange_ms) == len(src.exchange_ms) and len(inp.streams[1].exchange_ms) == 0
    assert inp.streams[0].id_gaps == src.id_gaps and inp.streams[0].quarantined == 4
    assert inp.merged_gaps == [(9001, 9010)] and inp.images == 2 and inp.merged_coverage == 0.9991
    assert inp.reanchor_ids == [9011]
    report = quality.write_quality_report(store, inp)
    assert "ap-1" in report.markdown and report.summary["streams"]["eu-1"]["outages"] == 1
    assert len(store.get_bytes(report.keys["png"])) > 20_000


# -- the per-symbol picture of a short capture (the 60-second demo as a new user saw it)

NOON = DAY0 + 12 * HOUR


def _capture(name: str, start: int, stop: int, down: tuple[int, int] | None = None) -> quality.StreamTimeline:
    """A stream that received 10 events/s from ``start`` to ``stop`` (ms), silent during ``down``."""
    times = np.arange(start, stop, 100, dtype=np.int64)
    if down is not None:
        times = times[(times < down[0]) | (times >= down[1])]
    ids = 5_000 + (times - start) // 100
    gaps = []
    if down is not None:
        before = int(np.searchsorted(times, down[0])) - 1
        gaps = [(int(ids[before]), int(ids[before + 1]) - 1)]
    return quality.StreamTimeline(
        stream=name,
        exchange_ms=times,
        receive_ns=times * 1_000_000 + 40_000_000,
        last_update_id=ids,
        id_gaps=gaps,
    )


def _demo_like() -> quality.QualityInput:
    """eu-1 down from 20 s to 35 s of a 60 s capture and stopped 1.5 s before ap-1; nothing before or
    after."""
    eu = _capture("eu-1", NOON, NOON + 58_500, down=(NOON + 20_000, NOON + 35_000))
    ap = _capture("ap-1", NOON, NOON + 60_000)
    return quality.QualityInput("spot", "BTCUSDT", DATE, [eu, ap])


def _inside(iv: quality.Interval, cover: list[quality.Interval]) -> bool:
    return any(c.start_ms <= iv.start_ms and iv.end_ms <= c.end_ms for c in cover)


def test_an_outage_is_only_time_another_stream_covered() -> None:
    eu, ap = quality.summarize(_demo_like())
    assert [(o.start_ms - NOON, o.end_ms - NOON) for o in eu.outages] == [
        (19_900, 35_000)
    ]  # its last event before
    assert ap.outages == []
    for this, other in ((eu, ap), (ap, eu)):
        assert all(_inside(o, other.receiving) for o in this.outages)
    # after both stopped (and before they started) is no data for both, not an outage of the one that
    # stopped first
    assert any(q.end_ms == DAY0 + 24 * HOUR for q in eu.quiet) and any(
        q.end_ms == DAY0 + 24 * HOUR for q in ap.quiet
    )
    assert all(q.start_ms >= NOON + 58_400 for q in eu.quiet if q.end_ms > NOON)


def test_a_stream_that_stopped_long_before_the_other_is_down_only_while_the_other_received() -> None:
    eu = _capture("eu-1", NOON, NOON + 30_000)
    ap = _capture("ap-1", NOON, NOON + 90_000)
    eu_sum, ap_sum = quality.summarize(quality.QualityInput("spot", "BTCUSDT", DATE, [eu, ap]))
    assert [(o.start_ms - NOON, o.end_ms - NOON) for o in eu_sum.outages] == [
        (29_900, 89_900)
    ]  # to ap-1's last event
    assert ap_sum.outages == []


def test_time_ticks_are_round_unique_and_formatted_by_span() -> None:
    minute = quality.time_ticks(NOON - 1_000, NOON + 61_000, DAY0)
    assert [label for _, label in minute] == [f"12:00:{s:02d}" for s in range(0, 60, 10)] + ["12:01:00"]
    day = quality.time_ticks(DAY0, DAY0 + 24 * HOUR, DAY0)
    assert [label for _, label in day] == [f"{h:02d}:00" for h in range(0, 25, 2)]
    for span_ms in (3_000, 62_000, 4 * 60_000, 40 * 60_000, 5 * HOUR, 20 * HOUR):
        ticks = quality.time_ticks(NOON, NOON + span_ms, DAY0)
        labels = [label for _, label in ticks]
        assert 2 <= len(labels) <= 12 and len(set(labels)) == len(labels), (span_ms, labels)
        assert all(NOON <= t <= NOON + span_ms for t, _ in ticks)
        assert all(len(label) == (8 if span_ms <= 4 * 60_000 else 5) for label in labels)


def _figure_of(render: Any, monkeypatch: Any) -> Any:
    """Render and return the matplotlib figure (captured as it is saved)."""
    from matplotlib.figure import Figure

    saved: list[Figure] = []
    original = Figure.savefig

    def capture(self: Figure, *args: Any, **kwargs: Any) -> Any:
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    render()
    (figure,) = saved
    return figure


def test_short_capture_picture_is_cropped_to_its_data_with_unique_second_ticks(
    monkeypatch: Any, tmp_path: Any
) -> None:
    inp = _demo_like()
    report: list[quality.QualityReport] = []
    figure = _figure_of(lambda: report.append(quality.build_report(inp)), monkeypatch)
    (tmp_path / "short.png").write_bytes(report[0].png)
    first_h, last_h = (NOON - DAY0) / HOUR, (NOON + 60_000 - DAY0) / HOUR
    for ax in figure.axes:
        lo, hi = ax.get_xlim()
        assert first_h - 2 / 3600 <= lo <= first_h and last_h <= hi <= last_h + 2 / 3600  # the data +- ~1 s
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(labels) >= 4 and len(set(labels)) == len(labels), labels
        assert all(label.startswith("12:0") and len(label) == 8 for label in labels), labels  # HH:MM:SS
    # the coverage panel paints red only eu-1's 15 s outage: nothing after both stopped
    from matplotlib.colors import to_rgba

    red = to_rgba("#d62728")
    xs = [
        x
        for c in figure.axes[0].collections
        if len(c.get_facecolors()) and tuple(c.get_facecolors()[0]) == red
        for path in c.get_paths()
        for x in path.vertices[:, 0]
    ]
    assert xs and min(xs) >= (NOON + 19_000 - DAY0) / HOUR and max(xs) <= (NOON + 35_000 - DAY0) / HOUR + 1e-9
