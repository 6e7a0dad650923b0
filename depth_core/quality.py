"""Data-quality report per symbol-day: one PNG an operator would rather look at than read, plus markdown.

For every stream: a coverage timeline (receiving / outage / gaps in its own id chain), its message rate,
its receive latency (p50 and p99 per interval) and clock offset; and the merged coverage: which stream
supplied each stretch of the day and where no stream covered the ids.

Inputs are narrow on purpose (:class:`QualityInput`, plain numpy arrays and tuples) so the picture can be
tested with synthetic data; :func:`load_quality_input` builds one from what validation (``validated/...``
``events.parquet`` + ``report.json``) and the merge (``_coverage_manifest.json``) wrote.
:func:`write_quality_report` puts ``quality.png``, ``quality.md`` and ``quality.json`` under
``quality/market=/symbol=/date=/``.

Definitions: a *silence* of a stream is a stretch longer than ``max(5 s, 20 x its median interval)``
without an event. Its *outage* is the part of a silence that another stream covered (was receiving), at
least that long, or the whole silence when the stream's own id chain has a gap right after it (the ids
moved on while it heard nothing). The rest is *no data*: a quiet market, or time nobody captured (before
the collectors started, after they all stopped); it is never called an outage of one stream. An *id gap*
of a stream is a hole in its own update-id chain, drawn at the exchange time of the event before the hole.

Pictures are cropped to the time that has data (:func:`data_window`) and their time ticks are round steps
chosen by the span shown (:func:`time_ticks`: seconds for a minute-long capture, ``HH:MM`` for hours), so
no label repeats; the day's overview of every symbol (``depth_pipeline/overview.py``) uses the same two.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display in workers, tests or Dagster runs

import matplotlib.pyplot as plt
import numpy as np
import orjson
import polars as pl

from depth_core.days import DAY_MS, day_index
from depth_core.layout import merged_manifest_key, quality_day_prefix
from depth_core.names import Market, validate_date, validate_market, validate_symbol
from depth_store.base import ObjectNotFoundError, ObjectStore

MIN_OUTAGE_MS = 5_000
PNG_NAME = "quality.png"
MARKDOWN_NAME = "quality.md"
JSON_NAME = "quality.json"
_BUCKET_MS = 60_000  # rate and latency per minute
_COLORS = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


@dataclass
class StreamTimeline:
    """What one stream received on the day (events not duplicated), in exchange-time order."""

    stream: str
    exchange_ms: np.ndarray  # E of each event
    receive_ns: np.ndarray  # local receive time of each event
    last_update_id: np.ndarray  # u of each event
    id_gaps: list[tuple[int, int]] = field(default_factory=list)  # (lo, hi]: ids after lo up to hi missing
    coverage: float | None = None  # share of the day's id span this stream covered
    quarantined: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    clock_offset_ms: float | None = None  # min(receive - E): clock offset plus the smallest network delay


@dataclass
class QualityInput:
    market: str
    symbol: str
    date: str
    streams: list[StreamTimeline]
    covered: list[tuple[int, int, str]] = field(default_factory=list)  # merged: id range -> supplying stream
    merged_gaps: list[tuple[int, int]] = field(default_factory=list)  # inclusive id ranges no stream covered
    merged_coverage: float | None = None
    images: int = 0  # book images in the merged day (1 = only the opening one)
    reanchor_ids: list[int] = field(default_factory=list)  # update ids of the images after the opening one
    inexact_events: int = (
        0  # merged events kept with book_exact false (after a gap, before its re-anchoring image)
    )


@dataclass
class Interval:
    start_ms: int
    end_ms: int

    @property
    def seconds(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


@dataclass
class StreamSummary:
    stream: str
    events: int
    receiving: list[Interval]
    outages: list[Interval]
    quiet: list[Interval]
    id_gaps: int
    missing_ids: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    clock_offset_ms: float | None
    coverage: float | None
    quarantined: int
    peak_rate_per_s: float


@dataclass
class QualityReport:
    png: bytes
    markdown: str
    summary: dict[str, Any]
    keys: dict[str, str] = field(default_factory=dict)  # name -> store key, once written

    def markdown_with_inline_png(self) -> str:
        """The markdown with the picture embedded as a data URI (for UIs that cannot fetch the file)."""
        import base64

        uri = "data:image/png;base64," + base64.b64encode(self.png).decode()
        return self.markdown.replace(f"]({PNG_NAME})", f"]({uri})")


def _day_start_ms(date: str) -> int:
    return day_index(validate_date(date)) * DAY_MS


def _silences(times_ms: np.ndarray, day0: int, threshold: int) -> list[Interval]:
    """Stretches of the day longer than ``threshold`` without an event (day edges included)."""
    edges = np.concatenate([[day0], np.sort(times_ms), [day0 + DAY_MS]])
    gap = np.diff(edges)
    idx = np.flatnonzero(gap > threshold)
    return [Interval(int(edges[i]), int(edges[i + 1])) for i in idx]


def _threshold(times_ms: np.ndarray) -> int:
    if len(times_ms) < 2:
        return MIN_OUTAGE_MS
    median = float(np.median(np.diff(np.sort(times_ms))))
    return int(max(MIN_OUTAGE_MS, 20 * median))


def _receiving(silences: list[Interval], day0: int, has_events: bool) -> list[Interval]:
    """The day minus a stream's silences (nothing when it had no event)."""
    if not has_events:
        return []
    out = []
    cursor = day0
    for iv in silences:
        if iv.start_ms > cursor:
            out.append(Interval(cursor, iv.start_ms))
        cursor = iv.end_ms
    if cursor < day0 + DAY_MS:
        out.append(Interval(cursor, day0 + DAY_MS))
    return out


def _union(intervals: list[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same time."""
    out: list[Interval] = []
    for iv in sorted(intervals, key=lambda x: x.start_ms):
        if out and iv.start_ms <= out[-1].end_ms:
            out[-1] = Interval(out[-1].start_ms, max(out[-1].end_ms, iv.end_ms))
        else:
            out.append(Interval(iv.start_ms, iv.end_ms))
    return out


def _split_silence(
    iv: Interval, covered: list[Interval], starts: np.ndarray, min_ms: int
) -> tuple[list[Interval], list[Interval]]:
    """(outages, no data) of one silence: the parts ``covered`` (sorted, disjoint; ``starts`` their starts)
    spans for at least ``min_ms`` are outages, the rest is no data."""
    outages: list[Interval] = []
    first = max(0, int(np.searchsorted(starts, iv.start_ms, "right")) - 1)
    for c in covered[first:]:
        if c.start_ms >= iv.end_ms:
            break
        lo, hi = max(c.start_ms, iv.start_ms), min(c.end_ms, iv.end_ms)
        if hi - lo >= min_ms:
            outages.append(Interval(lo, hi))
    rest: list[Interval] = []
    cursor = iv.start_ms
    for o in outages:
        if o.start_ms > cursor:
            rest.append(Interval(cursor, o.start_ms))
        cursor = o.end_ms
    if cursor < iv.end_ms:
        rest.append(Interval(cursor, iv.end_ms))
    return outages, rest


def summarize(inp: QualityInput) -> list[StreamSummary]:
    """Per stream: receiving intervals, outages, no-data stretches, gaps, latency figures."""
    day0 = _day_start_ms(inp.date)
    sorted_streams = []
    for s in inp.streams:
        order = np.argsort(s.exchange_ms, kind="stable")
        times = s.exchange_ms.astype(np.int64)[order]
        threshold = _threshold(times)
        silences = _silences(times, day0, threshold)
        sorted_streams.append(
            (
                times,
                s.last_update_id.astype(np.int64)[order],
                threshold,
                silences,
                _receiving(silences, day0, len(times) > 0),
            )
        )
    out = []
    for k, s in enumerate(inp.streams):
        times, ids, threshold, silences, receiving = sorted_streams[k]
        others = _union([iv for j, other in enumerate(sorted_streams) if j != k for iv in other[4]])
        starts = np.array([iv.start_ms for iv in others], dtype=np.int64)
        gap_starts = {lo for lo, _ in s.id_gaps}
        outages: list[Interval] = []
        quiet: list[Interval] = []
        for iv in silences:
            before = int(np.searchsorted(times, iv.start_ms, "right")) - 1
            if before >= 0 and int(ids[before]) in gap_starts and iv.end_ms < day0 + DAY_MS:
                outages.append(iv)  # its id chain broke right there: the ids moved on while it heard nothing
                continue
            down, rest = _split_silence(iv, others, starts, threshold)
            outages += down
            quiet += rest
        per_s = np.bincount((times - day0) // 1000) if len(times) else np.zeros(1)
        out.append(
            StreamSummary(
                stream=s.stream,
                events=len(times),
                receiving=receiving,
                outages=outages,
                quiet=quiet,
                id_gaps=len(s.id_gaps),
                missing_ids=sum(hi - lo for lo, hi in s.id_gaps),
                latency_p50_ms=s.latency_p50_ms,
                latency_p99_ms=s.latency_p99_ms,
                clock_offset_ms=s.clock_offset_ms,
                coverage=s.coverage,
                quarantined=s.quarantined,
                peak_rate_per_s=float(per_s.max()),
            )
        )
    return out


def _id_to_ms(inp: QualityInput) -> tuple[np.ndarray, np.ndarray]:
    """A monotone map update id -> exchange time from every stream's events (for drawing id ranges)."""
    if not inp.streams:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ids = np.concatenate([s.last_update_id for s in inp.streams]).astype(np.int64)
    ms = np.concatenate([s.exchange_ms for s in inp.streams]).astype(np.int64)
    order = np.argsort(ids, kind="stable")
    return ids[order], np.maximum.accumulate(ms[order]) if len(ms) else ms


def _ids_at(id_map: tuple[np.ndarray, np.ndarray], ids: np.ndarray, day0: int) -> np.ndarray:
    keys, ms = id_map
    if len(keys) == 0:
        return np.full(len(ids), day0)
    pos = np.clip(np.searchsorted(keys, ids, "left"), 0, len(keys) - 1)
    return ms[pos]


def _per_bucket_latency(
    s: StreamTimeline, day0: int, bucket_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bucket start hours and p50/p99 receive latency (ms) per bucket."""
    if len(s.exchange_ms) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    frame = (
        pl.DataFrame(
            {
                "bucket": (s.exchange_ms.astype(np.int64) - day0) // bucket_ms,
                "lat": (s.receive_ns.astype(np.int64) - s.exchange_ms.astype(np.int64) * 1_000_000) / 1e6,
            }
        )
        .group_by("bucket")
        .agg(pl.col("lat").quantile(0.5).alias("p50"), pl.col("lat").quantile(0.99).alias("p99"))
    )
    frame = frame.sort("bucket")
    buckets = frame["bucket"].to_numpy()
    p50, p99 = frame["p50"].to_numpy().astype(float), frame["p99"].to_numpy().astype(float)
    holes = np.flatnonzero(np.diff(buckets) > 1) + 1  # a NaN after each run: no line drawn across a silence
    buckets = np.insert(buckets.astype(float), holes, np.nan)
    return buckets * bucket_ms / 3_600_000, np.insert(p50, holes, np.nan), np.insert(p99, holes, np.nan)


def render_png(inp: QualityInput, summaries: list[StreamSummary]) -> bytes:
    """The picture: coverage timelines (streams + merged), message rate, latency."""
    day0 = _day_start_ms(inp.date)
    n = len(inp.streams)
    colors = {s.stream: _COLORS[i % len(_COLORS)] for i, s in enumerate(inp.streams)}
    fig = plt.figure(figsize=(10.5, 9.5), dpi=100)  # ~1100 px with its labels: fits the UI's markdown dialog
    grid = fig.add_gridspec(3, 1, height_ratios=[max(2.2, 0.55 * (n + 1)), 2.4, 2.6], hspace=0.45)
    ax_cov = fig.add_subplot(grid[0])
    ax_rate = fig.add_subplot(grid[1], sharex=ax_cov)
    ax_lat = fig.add_subplot(grid[2], sharex=ax_cov)

    def hours(ms: float) -> float:
        return (ms - day0) / 3_600_000

    lo_ms, hi_ms = data_window(*_data_span(inp), day0)
    lo_h, hi_h = hours(lo_ms), hours(hi_ms)
    min_w = (hi_h - lo_h) / 400  # an outage or gap is drawn at least this wide (a pixel or so), never wider
    # rate and latency per minute over a whole day; finer when the data covers only part of it
    bucket_ms = (
        _BUCKET_MS if hi_h - lo_h >= 6 else max(1000, int((hi_h - lo_h) * 3_600_000 / 150) // 1000 * 1000)
    )

    # -- coverage timeline
    labels = []
    id_map = _id_to_ms(inp)
    for row, (s, summ) in enumerate(zip(inp.streams, summaries, strict=True)):
        y = n - row
        ax_cov.broken_barh(
            [(hours(iv.start_ms), iv.seconds / 3600) for iv in summ.receiving],
            (y - 0.3, 0.6),
            facecolors="#2ca02c",
        )
        ax_cov.broken_barh(
            [(hours(iv.start_ms), max(iv.seconds / 3600, min_w)) for iv in summ.outages],
            (y - 0.3, 0.6),
            facecolors="#d62728",
        )
        ax_cov.broken_barh(
            [(hours(iv.start_ms), iv.seconds / 3600) for iv in summ.quiet],
            (y - 0.3, 0.6),
            facecolors="#cccccc",
        )
        if s.id_gaps:
            gap_ms = _gap_times(s, day0)
            ax_cov.scatter(
                [hours(t) for t in gap_ms],
                [y + 0.38] * len(gap_ms),
                marker="v",
                color="black",
                s=28,
                zorder=3,
            )
        cov = f"{summ.coverage:.4%}" if summ.coverage is not None else "n/a"
        labels.append((y, f"{s.stream}\n{summ.events:,} ev, cov {cov}"))
    # merged row: which stream supplied each stretch, looked up at the centre of each pixel-sized bin (so a
    # day of rapidly alternating suppliers stays one cheap drawing), and the holes no stream covered
    if inp.covered and len(id_map[0]):
        names = sorted({c[2] for c in inp.covered})
        order = np.argsort([c[0] for c in inp.covered], kind="stable")
        lo = np.array([inp.covered[i][0] for i in order], dtype=np.int64)
        hi = np.array([inp.covered[i][1] for i in order], dtype=np.int64)
        who = np.array([names.index(inp.covered[i][2]) for i in order], dtype=np.int64)
        n_bins = 2000
        width_h = (hi_h - lo_h) / n_bins
        centre_ms = day0 + (lo_h + (np.arange(n_bins) + 0.5) * width_h) * 3_600_000
        keys, ms = id_map
        pos = np.searchsorted(ms, centre_ms, "right") - 1
        inside = (pos >= 0) & (centre_ms <= ms[-1])
        ids_at_centre = keys[np.clip(pos, 0, len(keys) - 1)]
        j = np.searchsorted(lo, ids_at_centre, "right") - 1
        ok = inside & (j >= 0) & (ids_at_centre <= hi[np.clip(j, 0, len(hi) - 1)])
        supplier = np.where(ok, who[np.clip(j, 0, len(who) - 1)], -1)
        for k, name in enumerate(names):
            idx = np.flatnonzero(supplier == k)
            ax_cov.broken_barh(
                [(lo_h + i * width_h, width_h) for i in idx.tolist()],
                (-0.3, 0.6),
                facecolors=colors.get(name, "#555555"),
            )
    if inp.merged_gaps:
        ends = _ids_at(id_map, np.array([x for g in inp.merged_gaps for x in g], dtype=np.int64), day0)
        starts_h = [hours(a) for a in ends[0::2]]
        ax_cov.broken_barh(
            [(a, max(hours(b) - a, min_w)) for a, b in zip(starts_h, ends[1::2], strict=True)],
            (-0.4, 0.8),
            facecolors="#d62728",
        )
        ax_cov.scatter(starts_h, [0.5] * len(starts_h), marker="v", color="#d62728", s=40, zorder=3)
    if inp.reanchor_ids:  # where the book was re-anchored on a snapshot after a gap
        at = _ids_at(id_map, np.array(inp.reanchor_ids, dtype=np.int64), day0)
        ax_cov.scatter([hours(t) for t in at], [-0.5] * len(at), marker="^", color="black", s=30, zorder=3)
    merged_cov = f"{inp.merged_coverage:.4%}" if inp.merged_coverage is not None else "n/a"
    labels.append((0, f"merged\ncov {merged_cov}, {len(inp.merged_gaps)} gaps"))
    ax_cov.set_yticks([y for y, _ in labels], [text for _, text in labels], fontsize=8)
    ax_cov.set_ylim(-0.8, n + 0.8)
    ax_cov.set_title(
        textwrap.fill(
            f"{inp.symbol} {inp.date} ({inp.market}) - coverage: green receiving, red outage / gap no stream "
            "covered, grey no data (quiet market or nothing captured), black triangles: id gap (v), "
            "re-anchor (^); merged row coloured by supplying stream",
            78,
        ),
        fontsize=9,
        loc="left",
    )  # the legend goes on its right
    if inp.covered:
        from matplotlib.patches import Patch

        suppliers = sorted({c[2] for c in inp.covered})
        ax_cov.legend(
            handles=[Patch(color=colors.get(x, "#555555"), label=f"merged from {x}") for x in suppliers],
            fontsize=7,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.06),
            ncols=len(suppliers),
            frameon=False,
        )
    ax_cov.grid(axis="x", alpha=0.3)

    # -- message rate (events per second, averaged per minute)
    for s in inp.streams:
        if len(s.exchange_ms):
            counts = np.bincount(
                (s.exchange_ms.astype(np.int64) - day0) // bucket_ms, minlength=DAY_MS // bucket_ms
            )
            x = np.arange(len(counts)) * bucket_ms / 3_600_000
            ax_rate.plot(x, counts / (bucket_ms / 1000), lw=0.8, color=colors[s.stream], label=s.stream)
    ax_rate.set_ylabel(f"events / s\n(mean per {bucket_ms // 1000} s)", fontsize=8)
    ax_rate.grid(alpha=0.3)
    if inp.streams:
        ax_rate.legend(fontsize=7, loc="upper right", ncols=min(4, n))

    # -- latency
    for s in inp.streams:
        x, p50, p99 = _per_bucket_latency(s, day0, bucket_ms)
        if len(x):
            ax_lat.plot(x, p50, lw=0.9, color=colors[s.stream], label=f"{s.stream} p50")
            ax_lat.plot(x, p99, lw=0.7, ls="--", color=colors[s.stream], label=f"{s.stream} p99")
        if s.clock_offset_ms is not None:
            ax_lat.axhline(s.clock_offset_ms, lw=0.6, ls=":", color=colors[s.stream])
    ax_lat.set_ylabel("receive - E (ms)\n(dotted: clock offset)", fontsize=8)
    ax_lat.set_xlabel("time of day (UTC)")
    ax_lat.grid(alpha=0.3)
    if inp.streams:
        ax_lat.legend(fontsize=7, loc="upper right", ncols=min(4, 2 * n))
    ax_cov.set_xlim(lo_h, hi_h)
    ticks = time_ticks(lo_ms, hi_ms, day0)
    for ax in (ax_cov, ax_rate, ax_lat):  # shared x: one set of ticks, labelled under every panel
        ax.set_xticks([hours(t) for t, _ in ticks], [label for _, label in ticks])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


_TICK_STEPS_MS = [
    *(x * 1_000 for x in (1, 2, 5, 10, 15, 30)),
    *(x * 60_000 for x in (1, 2, 5, 10, 15, 30)),
    *(x * 3_600_000 for x in (1, 2, 3, 6, 12)),
]


def data_window(first_ms: int | None, last_ms: int | None, day0: int) -> tuple[int, int]:
    """The stretch of the day a picture shows (ms): the data with a small margin (2 % of its span, at least
    a second), clipped to the day; the whole day when there is no data."""
    if first_ms is None or last_ms is None:
        return day0, day0 + DAY_MS
    pad = max((last_ms - first_ms) // 50, 1_000)
    return max(day0, first_ms - pad), min(day0 + DAY_MS, last_ms + pad)


def time_ticks(lo_ms: int, hi_ms: int, day0: int, max_ticks: int = 12) -> list[tuple[int, str]]:
    """Ticks (ms, label) for an axis from ``lo_ms`` to ``hi_ms``: the smallest round step giving at most
    ``max_ticks`` ticks, at multiples of the step; ``HH:MM:SS`` labels for steps under a minute, else
    ``HH:MM`` (so a minute-long capture is labelled in seconds, a day in hours, and no label repeats).
    Labels count from the day's start, so its end reads 24:00."""
    span = max(hi_ms - lo_ms, 1)
    step = next((x for x in _TICK_STEPS_MS if span / x <= max_ticks), _TICK_STEPS_MS[-1])
    ticks = []
    t = -(-(lo_ms - day0) // step) * step + day0  # first multiple of the step at or after lo
    while t <= hi_ms:
        seconds = (t - day0) // 1000
        label = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
        ticks.append((t, label + (f":{seconds % 60:02d}" if step < 60_000 else "")))
        t += step
    return ticks


def _data_span(inp: QualityInput) -> tuple[int | None, int | None]:
    """First and last exchange time (ms) any stream received, or (None, None)."""
    times = [
        t
        for s in inp.streams
        if len(s.exchange_ms)
        for t in (int(s.exchange_ms.min()), int(s.exchange_ms.max()))
    ]
    return (min(times), max(times)) if times else (None, None)


def _gap_times(s: StreamTimeline, day0: int) -> list[int]:
    order = np.argsort(s.last_update_id, kind="stable")
    ids, ms = s.last_update_id[order], s.exchange_ms[order]
    out = []
    for lo, _ in s.id_gaps:
        pos = int(np.searchsorted(ids, lo, "right")) - 1
        out.append(int(ms[pos]) if pos >= 0 else day0)
    return out


def _fmt_ms(v: float | None) -> str:
    return f"{v:.1f}" if v is not None else "n/a"


def _clock(ms: int, day0: int) -> str:
    seconds = (ms - day0) // 1000
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _fmt_interval(iv: Interval, day0: int) -> str:
    return f"{_clock(iv.start_ms, day0)}-{_clock(iv.end_ms, day0)} ({iv.seconds:.0f} s)"


def render_markdown(inp: QualityInput, summaries: list[StreamSummary]) -> str:
    day0 = _day_start_ms(inp.date)
    merged_cov = f"{inp.merged_coverage:.6%}" if inp.merged_coverage is not None else "n/a"
    lines = [
        f"# Data quality: {inp.symbol} {inp.date} ({inp.market})",
        "",
        f"Merged coverage **{merged_cov}** of the day's update ids; gaps no stream covered: "
        f"**{len(inp.merged_gaps)}**"
        + (f" ({sum(b - a + 1 for a, b in inp.merged_gaps):,} ids)" if inp.merged_gaps else "")
        + f"; book images: {inp.images}"
        + (
            f"; events kept with an inexact book (`book_exact` false, after a gap until the next image): "
            f"**{inp.inexact_events:,}**"
            if inp.inexact_events
            else ""
        )
        + ".",
        "",
        "| stream | events | coverage | outages | outage time | id gaps | missing ids | latency p50 ms | "
        "p99 ms | clock offset ms | peak ev/s | quarantined |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        cov = f"{s.coverage:.6%}" if s.coverage is not None else "n/a"
        lines.append(
            f"| {s.stream} | {s.events:,} | {cov} | {len(s.outages)} | "
            f"{sum(o.seconds for o in s.outages):.0f} s | "
            f"{s.id_gaps} | {s.missing_ids:,} | {_fmt_ms(s.latency_p50_ms)} | {_fmt_ms(s.latency_p99_ms)} | "
            f"{_fmt_ms(s.clock_offset_ms)} | {s.peak_rate_per_s:.0f} | {s.quarantined} |"
        )
    for s in summaries:
        if s.outages:
            lines += [
                "",
                f"Outages of **{s.stream}**: "
                + ", ".join(_fmt_interval(o, day0) for o in s.outages[:20])
                + (f" and {len(s.outages) - 20} more" if len(s.outages) > 20 else ""),
            ]
    if inp.merged_gaps:
        lines += [
            "",
            "Gaps no stream covered (ids, inclusive): "
            + ", ".join(f"{a}..{b}" for a, b in inp.merged_gaps[:20]),
        ]
    lines += ["", f"![quality]({PNG_NAME})", ""]
    return "\n".join(lines)


def build_report(inp: QualityInput) -> QualityReport:
    """Render the PNG and markdown (no I/O)."""
    summaries = summarize(inp)
    summary = {
        "market": inp.market,
        "symbol": inp.symbol,
        "date": inp.date,
        "merged_coverage": inp.merged_coverage,
        "merged_gaps": len(inp.merged_gaps),
        "images": inp.images,
        "inexact_events": inp.inexact_events,
        "streams": {
            s.stream: {
                "events": s.events,
                "coverage": s.coverage,
                "outages": len(s.outages),
                "outage_seconds": sum(o.seconds for o in s.outages),
                "id_gaps": s.id_gaps,
                "missing_ids": s.missing_ids,
                "latency_p50_ms": s.latency_p50_ms,
                "latency_p99_ms": s.latency_p99_ms,
                "clock_offset_ms": s.clock_offset_ms,
                "peak_rate_per_s": s.peak_rate_per_s,
                "quarantined": s.quarantined,
            }
            for s in summaries
        },
    }
    return QualityReport(render_png(inp, summaries), render_markdown(inp, summaries), summary)


def write_quality_report(store: ObjectStore, inp: QualityInput) -> QualityReport:
    """Build and write ``quality.png``, ``quality.md`` and ``quality.json`` under the day's quality prefix."""
    report = build_report(inp)
    prefix = quality_day_prefix(validate_market(inp.market), inp.symbol, inp.date)
    report.keys = {"png": prefix + PNG_NAME, "markdown": prefix + MARKDOWN_NAME, "json": prefix + JSON_NAME}
    store.put_bytes(report.keys["png"], report.png)
    store.put_bytes(report.keys["markdown"], report.markdown.encode())
    store.put_bytes(report.keys["json"], orjson.dumps(report.summary, option=orjson.OPT_INDENT_2))
    return report


def _get_json(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        data = orjson.loads(store.get_bytes(key))
    except ObjectNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def load_quality_input(
    store: ObjectStore, market: Market, symbol: str, date: str, streams: list[str]
) -> QualityInput:
    """Build the input from validation's per-stream outputs and the merge's coverage manifest.

    Reads ``validated/market=/stream=/symbol=/date=/{report.json,events.parquet}`` (see depth_core.validate)
    and ``merged/.../_coverage_manifest.json`` (see depth_core.merge); a missing piece shows as no data.
    """
    from depth_core.storeio import read_parquet
    from depth_core.validated_layout import EVENTS_FILE, REPORT_FILE, validated_day_prefix, validated_file_key

    market, symbol, date = validate_market(market), validate_symbol(symbol), validate_date(date)
    manifest = _get_json(store, merged_manifest_key(market, symbol, date)) or {}
    per_stream = manifest.get("per_stream", {})
    timelines = []
    for stream in streams:
        prefix = validated_day_prefix(market, stream, symbol, date)
        report = _get_json(store, prefix + REPORT_FILE) or {}
        try:
            events = read_parquet(
                store, validated_file_key(report, EVENTS_FILE, prefix), ["E", "receive_ns", "u", "dup"]
            )
            events = events.filter(~pl.col("dup")).sort("E")
        except ObjectNotFoundError:
            events = pl.DataFrame(schema={"E": pl.Int64, "receive_ns": pl.Int64, "u": pl.Int64})
        stats = per_stream.get(stream, {})
        timelines.append(
            StreamTimeline(
                stream=stream,
                exchange_ms=events["E"].to_numpy().astype(np.int64),
                receive_ns=events["receive_ns"].to_numpy().astype(np.int64),
                last_update_id=events["u"].to_numpy().astype(np.int64),
                id_gaps=[(int(a), int(b)) for a, b in report.get("gaps", [])],
                coverage=stats.get("coverage"),
                quarantined=int(report.get("quarantined", 0)),
                latency_p50_ms=report.get("latency_p50_ms"),
                latency_p99_ms=report.get("latency_p99_ms"),
                clock_offset_ms=report.get("clock_offset_ms"),
            )
        )
    return QualityInput(
        market=market,
        symbol=symbol,
        date=date,
        streams=timelines,
        covered=[
            (int(c["first_id"]), int(c["last_id"]), str(c["stream"])) for c in manifest.get("covered", [])
        ],
        merged_gaps=[(int(g["first_id"]), int(g["last_id"])) for g in manifest.get("gaps", [])],
        merged_coverage=manifest.get("coverage"),
        images=len(manifest.get("images", [])),
        reanchor_ids=[int(i["update_id"]) for i in manifest.get("images", [])[1:] if "update_id" in i],
        inexact_events=int(manifest.get("inexact_events", 0) or 0),
    )
