"""The day's overview picture: every symbol on one axis cropped to the data, round unique ticks, outages only
where another stream covered, and a picture that still reads (and renders in seconds) at 400 symbols."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from depth_core import quality
from depth_pipeline.overview import _day0, render_overview, symbol_timeline

DATE = "2026-11-24"
DAY0 = _day0(DATE)
HOUR = 3_600_000
STREAMS = ["eu-1", "ap-1"]


def _figure_of(render: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
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


def _stream(name: str, start: int, stop: int, down: tuple[int, int] | None = None) -> quality.StreamTimeline:
    times = np.arange(start, stop, 100, dtype=np.int64)
    if down is not None:
        times = times[(times < down[0]) | (times >= down[1])]
    ids = 1_000 + (times - start) // 100
    gaps = []
    if down is not None:
        before = int(np.searchsorted(times, down[0])) - 1
        gaps = [(int(ids[before]), int(ids[before + 1]) - 1)]
    return quality.StreamTimeline(name, times, times * 1_000_000, ids, id_gaps=gaps)


def test_a_short_capture_is_cropped_with_unique_second_ticks_and_no_outage_after_both_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    start = DAY0 + 12 * HOUR  # one minute of data at noon; eu-1 down 20-35 s and stopped 1.5 s before ap-1
    timelines = []
    for i in range(3):
        inp = quality.QualityInput(
            "spot",
            f"S{i}USDT",
            DATE,
            [
                _stream("eu-1", start, start + 58_500, (start + 20_000, start + 35_000)),
                _stream("ap-1", start, start + 60_000),
            ],
            merged_gaps=[(1_300, 1_300)] if i == 1 else [],
            merged_coverage=0.999 if i == 1 else 1.0,
        )
        timelines.append(symbol_timeline(inp))
    for t in timelines:
        eu, ap = t["streams"]["eu-1"], t["streams"]["ap-1"]
        assert eu["outages"] == [[start + 19_900, start + 35_000]] and ap["outages"] == []
        assert all(any(a <= lo and hi <= b for a, b in ap["receiving"]) for lo, hi in eu["outages"])
    png: list[bytes] = []
    figure = _figure_of(lambda: png.append(render_overview(DATE, STREAMS, timelines)), monkeypatch)
    (tmp_path / "overview.png").write_bytes(png[0])
    (ax,) = figure.axes
    lo, hi = ax.get_xlim()  # ms from the window's start
    assert 59_900 <= hi - lo <= 63_000  # the minute of data and about a second (2 %) either side
    labels = [t.label1.get_text() for t in ax.xaxis.get_major_ticks()]  # bottom row (top repeats it)
    assert labels == [f"12:00:{s:02d}" for s in range(0, 60, 10)] + ["12:01:00"]
    assert "S1USDT" in ax.get_title(loc="left")  # the symbol with a merged gap is named
    assert [t.get_text() for t in ax.get_yticklabels()] == ["S0USDT", "S1USDT 99.90%", "S2USDT"]
    from PIL import Image  # matplotlib's own dependency

    width, height = Image.open(io.BytesIO(png[0])).size
    assert width == 1100 and height >= 250


def _day_timeline(i: int) -> dict[str, Any]:
    """A full synthetic day of symbol ``i``: eu-1 down 02:00-02:10 for all, ap-1 down at 14:00 for some."""
    first, last = DAY0 + 1_000, DAY0 + 24 * HOUR - 1_000
    eu_out = [[DAY0 + 2 * HOUR, DAY0 + 2 * HOUR + 600_000]]
    ap_out = [[DAY0 + 14 * HOUR, DAY0 + 14 * HOUR + 300_000]] if i % 37 == 0 else []

    def receiving(outages: list[list[int]]) -> list[list[int]]:
        edges = sorted([first, last, *(x for o in outages for x in o)])
        return [[edges[j], edges[j + 1]] for j in range(0, len(edges) - 1, 2)]

    return {
        "symbol": f"S{i:03d}USDT",
        "first_ms": first,
        "last_ms": last,
        "streams": {
            "eu-1": {"receiving": receiving(eu_out), "outages": eu_out, "quiet": []},
            "ap-1": {"receiving": receiving(ap_out), "outages": ap_out, "quiet": []},
        },
        "merged_gaps_ms": [DAY0 + 20 * HOUR] if i % 53 == 0 else [],
        "merged_coverage": 0.9995 if i % 53 == 0 else 1.0,
    }


def test_overview_of_400_symbols_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """400 symbols: every one labelled, those with a gap or an outage in red and the gapped ones named in the
    title, hour ticks over the day, one drawing per colour, a PNG small enough to inline in metadata."""
    timelines = [_day_timeline(i) for i in range(400)]
    png: list[bytes] = []
    figure = _figure_of(lambda: png.append(render_overview(DATE, STREAMS, timelines)), monkeypatch)
    (tmp_path / "overview-400.png").write_bytes(png[0])
    (ax,) = figure.axes
    labels = ax.get_yticklabels()
    assert [
        t.get_text() for t in labels
    ] == [  # the merged coverage beside a symbol whose merged day has gaps
        t["symbol"] + (" 99.95%" if t["merged_gaps_ms"] else "") for t in timelines
    ]
    assert all(label.get_fontsize() >= 6 for label in labels)
    assert all(label.get_color() == "#d62728" for label in labels)  # eu-1's outage touched every symbol
    ticks = [t.label1.get_text() for t in ax.xaxis.get_major_ticks()]
    assert ticks[0] == "00:00" and ticks[-1] == "24:00" and len(set(ticks)) == len(ticks)
    gapped = [t["symbol"] for t in timelines if t["merged_gaps_ms"]]
    title = " ".join(ax.get_title(loc="left").split())  # unwrapped
    assert f"gaps in the merged day: {len(gapped)} symbols ({', '.join(gapped)})" in title
    assert len(ax.collections) <= 4  # received, outage, no data, gap ticks: not one drawing per symbol
    from PIL import Image

    image = Image.open(io.BytesIO(png[0]))
    width, height = image.size
    assert width == 1100 and 400 * 3 * 5 <= height <= 400 * 3 * 8 + 400  # a band of ~18 px per symbol
    assert len(png[0]) < 400_000
    colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=256) or []}
    assert (44, 160, 44) in colours or any(abs(g - 160) < 8 and r < 60 for r, g, _ in colours)  # green drawn
