"""The day's overview picture: every symbol of a date on one time axis — what each stream received, its
outages, and where the merged day has a gap — because hundreds of per-symbol PNGs cannot be scanned.

Each derive step reduces a symbol-day to a small timeline (:func:`symbol_timeline`: intervals in ms, from
the same ``depth_core.quality.summarize`` as the per-symbol report, so "outage" means the same thing: a
silence during which another stream received events or after which its own id chain broke; a silence with
neither is a quiet market). ``record_derived`` draws them all (:func:`render_overview`) into
``quality/market=<m>/date=<d>/overview.png`` and shows it on the day's ``depth_quality_report``
materialization. The time axis is cropped to the day's data and its ticks are formatted by the span shown.
"""

from __future__ import annotations

import io
from typing import Any

from depth_core.days import DAY_MS, day_index
from depth_core.names import Market, validate_date, validate_market

MAX_INTERVALS = 200  # per stream and kind: a symbol-day with more is drawn with its first ones
ROW_PX = 14


def overview_key(market: Market, date: str) -> str:
    return f"quality/market={validate_market(market)}/date={validate_date(date)}/overview.png"


def symbol_timeline(inp: Any) -> dict[str, Any]:
    """A symbol-day's timeline as plain JSON: per stream its receiving, outage and quiet intervals (ms), and
    the exchange times of the merged day's gaps (ids no stream received)."""
    import numpy as np

    from depth_core.quality import _id_to_ms, _ids_at, summarize

    summaries = summarize(inp)
    day0 = _day0(inp.date)
    id_map = _id_to_ms(inp)
    gaps = [int(t) for t in _ids_at(id_map, np.array([lo for lo, _ in inp.merged_gaps], np.int64), day0)]
    times = [int(t) for s in inp.streams if len(s.exchange_ms) for t in (s.exchange_ms.min(), s.exchange_ms.max())]

    def spans(intervals: list[Any]) -> list[list[int]]:
        return [[iv.start_ms, iv.end_ms] for iv in intervals[:MAX_INTERVALS]]

    return {
        "symbol": inp.symbol,
        "first_ms": min(times) if times else None,
        "last_ms": max(times) if times else None,
        "streams": {
            s.stream: {"receiving": spans(s.receiving), "outages": spans(s.outages), "quiet": spans(s.quiet)}
            for s in summaries
        },
        "merged_gaps_ms": gaps[:MAX_INTERVALS],
    }


def _day0(date: str) -> int:
    return day_index(validate_date(date)) * DAY_MS


def _tick_format(span_ms: float) -> tuple[float, str]:
    """(tick step in ms, strftime) for a span: seconds under 10 minutes, minutes under 12 hours, else hours."""
    if span_ms <= 10 * 60_000:
        return max(1_000.0, round(span_ms / 6 / 1000) * 1000), "%H:%M:%S"
    if span_ms <= 12 * 3_600_000:
        return max(60_000.0, round(span_ms / 8 / 60_000) * 60_000), "%H:%M"
    return 3 * 3_600_000.0, "%H:%M"


def render_overview(date: str, streams: list[str], timelines: list[dict[str, Any]]) -> bytes:
    """One PNG: a band per symbol (a line per stream: received green, outage red, quiet grey; a black tick
    where the merged day has a gap), on the day's time axis cropped to its data."""
    import datetime as dt

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    day0 = _day0(date)
    firsts = [t["first_ms"] for t in timelines if t.get("first_ms") is not None]
    lasts = [t["last_ms"] for t in timelines if t.get("last_ms") is not None]
    lo, hi = (min(firsts), max(lasts)) if firsts else (day0, day0 + DAY_MS)
    pad = max((hi - lo) * 0.02, 1_000)
    lo, hi = max(day0, lo - pad), min(day0 + DAY_MS, hi + pad)
    rows = len(timelines)
    lines = max(1, len(streams))
    height = max(2.5, (rows * (lines + 1) * ROW_PX + 120) / 100)
    fig, ax = plt.subplots(figsize=(14, height), dpi=100)
    colors = {"receiving": "#2ca02c", "outages": "#d62728", "quiet": "#c7c7c7"}
    for r, t in enumerate(timelines):
        base = r * (lines + 1)
        for k, stream in enumerate(streams):
            s = t.get("streams", {}).get(stream, {})
            y = base + k
            for kind, color in colors.items():
                spans = [(a - lo, b - a) for a, b in s.get(kind, []) if b > lo and a < hi]
                if spans:
                    ax.broken_barh(spans, (y, 0.8), facecolors=color, linewidth=0)
        for g in t.get("merged_gaps_ms", []):
            ax.plot([g - lo, g - lo], [base - 0.1, base + lines - 0.1], color="black", linewidth=1.2)
    ax.set_xlim(0, hi - lo)
    ax.set_ylim(rows * (lines + 1), -1)
    ax.set_yticks([r * (lines + 1) + lines / 2 for r in range(rows)])
    ax.set_yticklabels([t["symbol"] for t in timelines], fontsize=7)
    step, fmt = _tick_format(hi - lo)
    first_tick = (lo // step + 1) * step
    ticks = []
    tick = first_tick
    while tick < hi:
        ticks.append(tick)
        tick += step
    ax.set_xticks([x - lo for x in ticks])
    ax.set_xticklabels([dt.datetime.fromtimestamp(x / 1000, tz=dt.UTC).strftime(fmt) for x in ticks], fontsize=8)
    ax.set_xlabel(f"{date} (UTC)")
    ax.set_title(
        f"{date}: {rows} symbols; a line per stream ({', '.join(streams)}): received (green), outage (red), "
        "quiet market (grey); black: gap in the merged day",
        fontsize=9,
    )
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
