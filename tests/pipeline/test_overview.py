"""The day's overview picture: cropped to the data, ticks formatted by the span, a band per symbol."""

from __future__ import annotations

import io

from depth_pipeline.overview import _day0, _tick_format, render_overview


def test_overview_crops_to_the_data_and_formats_ticks_by_span() -> None:
    date = "2026-11-24"
    day0 = _day0(date)
    start = day0 + 12 * 3_600_000  # one minute of data at noon
    timelines = [
        {
            "symbol": f"S{i}USDT",
            "first_ms": start,
            "last_ms": start + 60_000,
            "streams": {
                "eu-1": {"receiving": [[start, start + 60_000]], "outages": [], "quiet": []},
                "ap-1": {"receiving": [[start, start + 20_000]], "outages": [[start + 20_000, start + 60_000]],
                         "quiet": []},
            },
            "merged_gaps_ms": [start + 30_000] if i == 1 else [],
        }
        for i in range(3)
    ]
    png = render_overview(date, ["eu-1", "ap-1"], timelines)
    assert png.startswith(b"\x89PNG")
    from PIL import Image  # matplotlib's own dependency

    width, height = Image.open(io.BytesIO(png)).size
    assert width == 1400 and height >= 250
    # a minute of data: ticks in seconds, every 10 s; a day: every 3 hours in HH:MM
    assert _tick_format(62_000) == (10_000, "%H:%M:%S")
    assert _tick_format(86_400_000) == (3 * 3_600_000.0, "%H:%M")
    assert _tick_format(3 * 3_600_000)[1] == "%H:%M"
