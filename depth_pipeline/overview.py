"""The day's overview picture: every symbol of a date on one time axis — what each stream received, its
outages, and where the merged day has a gap — because hundreds of per-symbol PNGs cannot be scanned.

Each derive step reduces a symbol-day to a small timeline (:func:`symbol_timeline`: intervals in ms, from
the same ``depth_core.quality.summarize`` as the per-symbol report, so "outage" means the same thing: the
part of a silence another stream covered, or a silence after which its own id chain broke; the rest is no
data: a quiet market or nothing captured). ``record_derived`` draws them all (:func:`render_overview`) into
``quality/market=<m>/date=<d>/overview.png`` and shows it inline on the day's ``depth_quality_report``
materialization. The time axis is cropped to the day's data and its ticks are round steps by the span shown
(``depth_core.quality.data_window`` and ``time_ticks``, as the per-symbol picture).
"""

from __future__ import annotations

import io
import textwrap
from typing import Any

from depth_core.days import DAY_MS, day_index
from depth_core.names import validate_date

MAX_INTERVALS = 200  # per stream and kind: a symbol-day with more is drawn with its first ones
ROW_PX = 6  # per stream line: 400 symbols x 2 streams make a picture about 7,000 px tall
WIDTH_PX = 1100  # fits the Dagster UI's markdown dialog, where it is shown inline


def symbol_timeline(inp: Any) -> dict[str, Any]:
    """A symbol-day's timeline as plain JSON: per stream its receiving, outage and quiet intervals (ms), and
    the exchange times of the merged day's gaps (ids no stream received)."""
    import numpy as np

    from depth_core.quality import _id_to_ms, _ids_at, summarize

    summaries = summarize(inp)
    day0 = _day0(inp.date)
    id_map = _id_to_ms(inp)
    gaps = [int(t) for t in _ids_at(id_map, np.array([lo for lo, _ in inp.merged_gaps], np.int64), day0)]
    times = [
        int(t) for s in inp.streams if len(s.exchange_ms) for t in (s.exchange_ms.min(), s.exchange_ms.max())
    ]

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
        "merged_coverage": inp.merged_coverage,
    }


def _label(t: dict[str, Any]) -> str:
    """The symbol, with its merged coverage when the merged day missed ids (``None``: not known)."""
    coverage = t.get("merged_coverage")
    return t["symbol"] + (f" {coverage:.2%}" if coverage is not None and coverage < 1 else "")


def _day0(date: str) -> int:
    return day_index(validate_date(date)) * DAY_MS


def _has_outage(t: dict[str, Any]) -> bool:
    return any(s.get("outages") for s in t.get("streams", {}).values())


def _names(symbols: list[str], limit: int = 10) -> str:
    return ", ".join(symbols[:limit]) + (f" and {len(symbols) - limit} more" if len(symbols) > limit else "")


def render_overview(date: str, streams: list[str], timelines: list[dict[str, Any]]) -> bytes:
    """One PNG that still reads at 400 symbols: a band per symbol (a thin line per stream: received green,
    outage red, no data grey; a black tick where the merged day has a gap; the name in red when the symbol
    had either, with the merged day's coverage when it is under 100 %), the symbols with gaps and outages
    named in the title, on the day's time axis cropped to its data with round ticks
    (``depth_core.quality.data_window`` and ``time_ticks``, as the per-symbol picture). Rectangles are
    drawn as one collection per colour, so 400 symbols render in seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import PolyCollection

    from depth_core.quality import data_window, time_ticks

    day0 = _day0(date)
    firsts = [t["first_ms"] for t in timelines if t.get("first_ms") is not None]
    lasts = [t["last_ms"] for t in timelines if t.get("last_ms") is not None]
    lo, hi = data_window(min(firsts) if firsts else None, max(lasts) if lasts else None, day0)
    rows, lines = len(timelines), max(1, len(streams))
    band = lines + 1  # a blank line between symbols
    height_px = rows * band * ROW_PX + 160
    fig, ax = plt.subplots(figsize=(WIDTH_PX / 100, max(2.5, height_px / 100)), dpi=100)
    colors = {"receiving": "#2ca02c", "outages": "#d62728", "quiet": "#c7c7c7"}
    boxes: dict[str, list[tuple[float, float, float, float]]] = {kind: [] for kind in colors}
    gap_x: list[float] = []
    gap_y: list[float] = []
    for r, t in enumerate(timelines):
        base = r * band
        for k, stream in enumerate(streams):
            s = t.get("streams", {}).get(stream, {})
            for kind in colors:
                boxes[kind] += [
                    (max(a, lo), min(b, hi), base + k + 0.1, base + k + 0.9)
                    for a, b in s.get(kind, [])
                    if b > lo and a < hi
                ]
        for g in t.get("merged_gaps_ms", []):
            gap_x.append(g)
            gap_y.append(base)
    for kind, color in colors.items():
        if boxes[kind]:
            b = np.array(boxes[kind], dtype=float)
            b[:, :2] -= lo
            verts = np.stack([b[:, [0, 2]], b[:, [1, 2]], b[:, [1, 3]], b[:, [0, 3]]], axis=1)
            ax.add_collection(PolyCollection(list(verts), facecolors=color, edgecolors="none"))
    if gap_x:
        x = np.array(gap_x, dtype=float) - lo
        y = np.array(gap_y, dtype=float)
        ax.vlines(x, y - 0.1, y + lines - 0.1, colors="black", linewidth=1.2)
    ax.set_xlim(0, hi - lo)
    ax.set_ylim(rows * band, -1)
    gapped = [t["symbol"] for t in timelines if t.get("merged_gaps_ms")]
    down = [t["symbol"] for t in timelines if _has_outage(t)]
    ax.set_yticks([r * band + lines / 2 for r in range(rows)])
    labels = ax.set_yticklabels([_label(t) for t in timelines], fontsize=7 if rows <= 100 else 6)
    for label, t in zip(labels, timelines, strict=True):
        if t.get("merged_gaps_ms") or _has_outage(t):
            label.set_color("#d62728")
    ticks = time_ticks(lo, hi, day0)
    ax.set_xticks([x - lo for x, _ in ticks], [label for _, label in ticks], fontsize=8)
    ax.tick_params(axis="x", labeltop=True, top=True)  # a tall picture: the time axis at both ends
    ax.set_xlabel(f"{date} (UTC)")
    ax.grid(axis="x", alpha=0.25)
    title = "\n".join(
        textwrap.fill(line, 165)
        for line in [
            f"{date}: {rows} symbols, a line per stream ({', '.join(streams)}): received (green), "
            "outage (red), no data (grey: quiet market or nothing captured); black tick: a gap in the "
            "merged day",
            f"gaps in the merged day: {len(gapped)} symbols" + (f" ({_names(gapped)})" if gapped else ""),
            f"an outage of a stream: {len(down)} symbols" + (f" ({_names(down)})" if down else ""),
        ]
    )
    ax.set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    raw = io.BytesIO()
    fig.savefig(raw, format="png")
    plt.close(fig)
    return _palette_png(raw.getvalue())


def _palette_png(png: bytes) -> bytes:
    """The picture with a 32-colour palette: a quarter of the bytes (it is inlined in the materialization's
    metadata), no visible change for flat bars and text."""
    from PIL import Image  # matplotlib's own dependency

    out = io.BytesIO()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=32, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    return out.getvalue()
