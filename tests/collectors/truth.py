"""Compare what a collector stored with the simulator's ground truth."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from depth_core.raw_format import LineKind, RawLine
from tests.fixtures.collector import StoredEvent, depth_events, notes


@dataclass
class Comparison:
    """Truth events inside the stored window, split into covered and missing, plus the gaps noted."""

    window: tuple[int, int]
    covered: int
    missing: list[tuple[int, int]]  # (U, u) of truth events no stored event covers
    gap_notes: list[tuple[int, int]]  # (from_id, to_id) of the collector's gap notes
    stored_events: int
    snapshots: int

    @property
    def unexplained(self) -> list[tuple[int, int]]:
        """Missing truth events that no gap note accounts for: data the collector lost silently."""
        return [m for m in self.missing if not any(lo <= m[0] and m[1] <= hi for lo, hi in self.gap_notes)]

    @property
    def false_gaps(self) -> list[tuple[int, int]]:
        """Gap notes that cover no missing truth event."""
        return [g for g in self.gap_notes if not any(g[0] <= m[0] and m[1] <= g[1] for m in self.missing)]


def compare_with_truth(lines: Sequence[RawLine], truth: list[dict[str, Any]]) -> Comparison:
    events: list[StoredEvent] = depth_events(lines)
    assert events, "nothing stored"
    lo = min(e.first_id for e in events)
    hi = max(e.last_id for e in events)
    ranges = sorted({(e.first_id, e.last_id) for e in events}, key=lambda r: r[1])
    ends = [r[1] for r in ranges]
    covered = 0
    missing: list[tuple[int, int]] = []
    for t in truth:
        tu, tl = int(t["U"]), int(t["u"])
        if tl < lo or tu > hi:
            continue
        i = bisect.bisect_left(ends, tl)
        # ranges end at or after tl; one of the next few (overlapping batchings) may start early enough
        ok = any(r[0] <= tu for r in ranges[i : i + 64])
        if ok:
            covered += 1
        else:
            missing.append((tu, tl))
    gaps = [(int(n["from_id"]), int(n["to_id"])) for n in notes(lines, "gap")]
    snaps = sum(1 for ln in lines if ln.kind == LineKind.SNAPSHOT)
    return Comparison((lo, hi), covered, missing, gaps, len(events), snaps)


def stored_texts_match_truth(lines: Sequence[RawLine], truth: list[dict[str, Any]]) -> int:
    """Stored frames with the same ids as a truth event must carry the same data; returns how many matched."""
    import orjson

    by_ids = {(int(t["U"]), int(t["u"])): t for t in truth}
    matched = 0
    for ln in lines:
        if ln.kind != LineKind.DEPTH:
            continue
        doc = orjson.loads(ln.text)
        data = dict(doc["data"])
        t = by_ids.get((data["U"], data["u"]))
        if t is None:
            continue
        data.pop("pu", None)
        assert {k: data[k] for k in ("b", "a", "s")} == {k: t[k] for k in ("b", "a", "s")}
        matched += 1
    return matched
