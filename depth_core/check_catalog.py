"""Every check the core evaluates, declared once: its name, whether it blocks, and what passing means.

The core builds each outcome from its declaration (:meth:`CheckOutcome.of`), and the pipeline derives its
``AssetCheckSpec``s and their severities from the same lists (``depth_pipeline/checks.py``), so the
manifest's ``blocking_passed`` and Dagster's ERROR/WARN can never disagree about whether a check blocks.
A *blocking* check that fails keeps the version unpublished, fails the run and stops the gated cleanup.

Light on purpose (no polars, no numpy): the pipeline imports it when it builds its definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckDecl:
    """A check as declared: its name, whether a failure blocks, and what passing means (the UI shows it)."""

    name: str
    blocking: bool
    description: str


def _catalog(*decls: CheckDecl) -> dict[str, CheckDecl]:
    return {d.name: d for d in decls}


#: The checks of one validated stream-day (``validated/<stream>``): warnings only, since a stream that was
#: down is covered by the others (the merge fails only if no stream has data).
VALIDATED_CHECKS: dict[str, CheckDecl] = _catalog(
    CheckDecl(
        "raw_data_present",
        False,
        "The stream delivered at least one diff-depth event for the symbol-day (a stream that was down "
        "all day is covered by the others; merged_depth fails only if no stream has data).",
    ),
    CheckDecl(
        "quarantine_small",
        False,
        "Malformed raw lines are under 1% of the stream's lines (each one is kept in the quarantine with its "
        "reason; a few never fail the day).",
    ),
)

#: The checks of one merged symbol-day (``merged_depth``), in the order the merge reports them.
MERGED_CHECKS: dict[str, CheckDecl] = _catalog(
    CheckDecl(
        "gaps_missed_by_every_stream",
        True,
        "Every gap in the merged output is an id range that no stream received.",
    ),
    CheckDecl(
        "streams_agree", True, "Events of different streams covering the same update ids give the same book."
    ),
    CheckDecl("book_never_crossed", True, "The replayed book is never crossed after anchoring."),
    CheckDecl(
        "agrees_with_rest_snapshots",
        True,
        "The replay equals every REST snapshot captured that day (levels the straddling event did "
        "not touch).",
    ),
    CheckDecl(
        "schema_and_sort_order",
        True,
        "Columns and types are exactly the merged schema (docs/analysts.md); rows sorted by last_update_id, "
        "images first.",
    ),
    CheckDecl(
        "decimal_round_trip", True, "Every price and qty round-trips to the decimal string Binance sent."
    ),
    CheckDecl(
        "coverage_at_least_each_stream",
        True,
        "Every update id a stream received is in the merged rows (book_exact or not); merged coverage is at "
        "least every single stream's.",
    ),
    CheckDecl(
        "matches_book_ticker",
        False,
        "Where @bookTicker was captured, the replayed top of book equals it at every matching u.",
    ),
    CheckDecl(
        "day_anchored",
        False,
        "The day opens with a book image (carried from the previous day or the first usable snapshot). Not "
        "blocking: a day with events but no usable snapshot yet is published unanchored (book_exact false).",
    ),
)


@dataclass
class CheckOutcome:
    """One check's result for one symbol-day (or stream-day); ``blocking`` is always its declaration's."""

    name: str
    passed: bool
    blocking: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        catalog: Mapping[str, CheckDecl],
        name: str,
        passed: bool,
        description: str,
        metadata: dict[str, Any] | None = None,
    ) -> CheckOutcome:
        """The outcome of the declared check ``name`` (a KeyError for a check nobody declared)."""
        decl = catalog[name]
        return cls(decl.name, passed, decl.blocking, description, metadata or {})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
