"""The update-id line: what ids an event covers, and unions of covered ranges.

One rule for both markets: an event covers the half-open id interval ``(lo, hi]`` with ``hi = u`` and

* spot: ``lo = U - 1`` (ids are contiguous: the next event has ``U == previous u + 1``);
* USD-M: ``lo = pu`` (the event holds every change after the stream's previous event ``pu``; ids of other
  symbols fill the space between, so ``U`` is not contiguous).

The book after id ``x`` is known once ``x`` is the end of an applied event, and an event is applicable at
``last`` (the id the book is at) when ``lo <= last < hi``. See docs/merge.md.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from depth_core.names import Market


def lo_expr(market: Market) -> pl.Expr:
    """Polars expression for ``lo`` from columns U and pu."""
    if market == "usdm":
        return pl.coalesce(pl.col("pu"), pl.col("U") - 1).alias("lo")
    return (pl.col("U") - 1).alias("lo")


def union_ranges(lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int]]:
    """Union of the intervals ``(lo, hi]`` as sorted disjoint ``(lo, hi]`` pairs (touching ones joined)."""
    if len(lo) == 0:
        return []
    order = np.lexsort((hi, lo))
    lo_s = np.asarray(lo)[order]
    hi_s = np.asarray(hi)[order]
    run_hi = np.maximum.accumulate(hi_s)
    new = np.empty(len(lo_s), dtype=bool)
    new[0] = True
    new[1:] = lo_s[1:] > run_hi[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(lo_s)) - 1
    return [(int(lo_s[s]), int(run_hi[e])) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def ranges_length(ranges: list[tuple[int, int]]) -> int:
    return sum(h - lo for lo, h in ranges)


def intersect_length(ranges: list[tuple[int, int]], lo: int, hi: int) -> int:
    """How many ids of ``(lo, hi]`` the ranges cover."""
    total = 0
    for a, b in ranges:
        x, y = max(a, lo), min(b, hi)
        if y > x:
            total += y - x
    return total


def gaps_between(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Holes ``(lo, hi]`` between consecutive covered ranges."""
    return [(ranges[i][1], ranges[i + 1][0]) for i in range(len(ranges) - 1)]


def subtract_ranges(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``a \\ b`` for sorted ``(lo, hi]`` ranges (``b`` disjoint, as from :func:`union_ranges`)."""
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < hi:
            blo, bhi = b[k]
            if blo > cur:
                out.append((cur, min(blo, hi)))
            cur = max(cur, bhi)
            if cur >= hi:
                break
            k += 1
        if cur < hi:
            out.append((cur, hi))
    return out
