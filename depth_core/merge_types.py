"""The merge's data types: its inputs, its plan and its report (the checks' outcomes: ``check_catalog``).

Apart from ``merge.py`` so that the checks (``checks.py``), which read these, and the merge, which runs the
checks, do not import each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from depth_core.check_catalog import CheckOutcome


@dataclass
class GapRecord:
    """Ids no stream received: ``first_id..last_id`` (inclusive); the book resumed at ``reanchored_at``."""

    first_id: int
    last_id: int
    reanchored_at: int | None
    snapshot_source: str | None
    # ids after the hole that streams had but that are not in the output: always 0 since events after a gap
    # are kept as rows with book_exact false up to the re-anchoring image (kept for readers of older
    # manifests)
    skipped_ids: int = 0

    @property
    def length(self) -> int:
        return self.last_id - self.first_id + 1


@dataclass
class StreamStats:
    stream: str
    events: int = 0
    covered_ids: int = 0
    coverage: float = 0.0
    events_supplied: int = 0
    ids_supplied: int = 0
    share: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    clock_offset_ms: float | None = None
    quarantined: int = 0
    snapshots: int = 0


@dataclass
class MergeReport:
    market: str
    symbol: str
    date: str
    streams: list[str]
    rows: int = 0
    events: int = 0  # events written (chosen along the id line)
    events_received: int = (
        0  # distinct events the streams delivered for the day (all streams, duplicates kept)
    )
    unanchored_events: int = (
        0  # events before the opening image (no carried state): written with book_exact false
    )
    image_rows: int = 0
    opening: dict[str, Any] = field(default_factory=dict)
    first_update_id: int | None = None
    last_update_id: int | None = None
    coverage: float = 0.0
    per_stream: dict[str, StreamStats] = field(default_factory=dict)
    gaps: list[GapRecord] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    manifest_key: str = ""
    price_decimals: int | None = None
    qty_decimals: int | None = None
    checks: list[CheckOutcome] = field(default_factory=list)
    preview: pl.DataFrame | None = None
    problems: list[str] = field(default_factory=list)
    # publishing (depth_core/publish.py): this run's version, whether it became the published one, and why not
    version: str = ""
    published: bool = False
    refused_reason: str | None = None
    manifest_etag: str | None = None  # of the manifest this run wrote (from the write itself)
    previous_version: str | None = None  # the version published before this run
    allow_shrink: str | None = None  # the operator's reason, when a smaller version was allowed
    shrink: dict[str, Any] | None = None  # what it lost / would have lost against the published version
    carry_note: str | None = None  # why the previous day's end state was not used, if it was not

    @property
    def gap_count(self) -> int:
        return len(self.gaps)

    @property
    def longest_gap(self) -> int:
        return max((g.length for g in self.gaps), default=0)

    @property
    def blocking_passed(self) -> bool:
        return all(c.passed for c in self.checks if c.blocking)

    def markdown(self) -> str:
        lines = [
            f"### {self.symbol} {self.date} ({self.market})",
            f"- rows {self.rows:,}, events {self.events:,}, image rows {self.image_rows:,}",
            f"- opening: {self.opening.get('source')} at id {self.opening.get('update_id')}",
            f"- ids {self.first_update_id}..{self.last_update_id}, merged coverage {self.coverage:.6f}",
            f"- gaps: {self.gap_count} (longest {self.longest_gap} ids); events before the opening image: "
            f"{self.unanchored_events}",
            f"- version {self.version}: "
            + ("**published**" if self.published else f"**not published**: {self.refused_reason}"),
            "",
            "| stream | events | coverage | share supplied | latency p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        for s in self.per_stream.values():
            lines.append(
                f"| {s.stream} | {s.events:,} | {s.coverage:.6f} | {s.share:.4f} | "
                f"{_fmt(s.latency_p50_ms)} | {_fmt(s.latency_p99_ms)} |"
            )
        if self.checks:
            lines += ["", "| check | passed | blocking |", "|---|---|---|"]
            lines += [f"| {c.name} | {'yes' if c.passed else '**NO**'} | {c.blocking} |" for c in self.checks]
        if self.problems:
            lines += ["", *[f"- problem: {p}" for p in self.problems]]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "market": self.market,
            "symbol": self.symbol,
            "date": self.date,
            "streams": self.streams,
            "rows": self.rows,
            "events": self.events,
            "events_received": self.events_received,
            "unanchored_events": self.unanchored_events,
            "image_rows": self.image_rows,
            "opening": self.opening,
            "first_update_id": self.first_update_id,
            "last_update_id": self.last_update_id,
            "coverage": self.coverage,
            "per_stream": {k: asdict(v) for k, v in self.per_stream.items()},
            "gap_count": self.gap_count,
            "longest_gap": self.longest_gap,
            "gaps": [asdict(g) for g in self.gaps],
            "files": self.files,
            "manifest_key": self.manifest_key,
            "price_decimals": self.price_decimals,
            "qty_decimals": self.qty_decimals,
            "checks": [c.to_dict() for c in self.checks],
            "blocking_passed": self.blocking_passed,
            "problems": self.problems,
            "markdown": self.markdown(),
            "version": self.version,
            "published": self.published,
            "refused_reason": self.refused_reason,
            "manifest_etag": self.manifest_etag,
            "previous_version": self.previous_version,
            "allow_shrink": self.allow_shrink,
            "shrink": self.shrink,
            "carry_note": self.carry_note,
            "preview": (
                self.preview.head(10).with_columns(pl.col(pl.Datetime).dt.to_string()).to_dicts()
                if self.preview is not None
                else []
            ),
        }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


@dataclass
class StreamInput:
    stream: str
    report: dict[str, Any]
    events: pl.DataFrame  # live events with lo
    snapshots: pl.DataFrame
    snapshot_levels: pl.DataFrame
    book_tickers: pl.DataFrame


@dataclass
class CarryState:
    date: str
    last_update_id: int
    book: pl.DataFrame  # is_bid, price, qty
    # price band the previous day's replay knew from its last anchoring image (lowest bid, highest ask);
    # the snapshot check compares only inside it, since the carried book also holds levels beyond it
    anchor_band: tuple[float, float] | None = None


@dataclass
class Plan:
    """The merged day as a sequence of items: images (snapshot/carry) and chosen events, in row order."""

    kind: np.ndarray  # KIND_*
    stream: np.ndarray  # stream index (events, snapshots); -1 for carry
    ref: np.ndarray  # ev (events) / snap (snapshots)
    update_id: np.ndarray  # hi of events, L of images
    lo: np.ndarray  # lo of events, L of images
    gaps: list[GapRecord]
    opening: dict[str, Any]
    unanchored_events: (
        int  # events before the first image (book_exact false: no carry, no usable snapshot yet)
    )
    exact: np.ndarray  # per item: the book after it is the exchange's (images, and events chained from one)
