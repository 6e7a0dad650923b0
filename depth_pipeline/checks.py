"""Asset-check specs of the pipeline assets, declared with each asset (``check_specs=``).

Declaring checks on the asset (not as separate ``@asset_check``s) keeps them partition-aware: a separate
check taking a partitioned asset as input would load every partition. The core computes the outcomes
(``depth_core.checks.CheckOutcome``); here they become Dagster ``AssetCheckResult``s. A *blocking* check
that fails stops downstream assets and fails the run, and the cleanup gate refuses to delete raw objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from depth_pipeline.metadata import report_metadata


@dataclass(frozen=True)
class CheckDecl:
    """A check the pipeline declares: its name, whether it blocks, and what passing means."""

    name: str
    blocking: bool
    description: str


VALIDATED_CHECKS: tuple[CheckDecl, ...] = (
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

MERGED_CHECKS: tuple[CheckDecl, ...] = (
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
        "Columns and types are interfaces §3 exactly; rows sorted by last_update_id, images first.",
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
    CheckDecl("other_core_checks", True, "Any further check the core reports (named in the metadata)."),
)

CATCH_ALL = "other_core_checks"


def check_specs(asset_key: dg.AssetKey, decls: Sequence[CheckDecl]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(d.name, asset=asset_key, blocking=d.blocking, description=d.description)
        for d in decls
    ]


def outcome_fields(outcome: Any) -> tuple[str, bool, bool, str, dict[str, Any]]:
    """(name, passed, blocking, description, metadata) of a core CheckOutcome or an equivalent dict."""
    if isinstance(outcome, dict):
        get = outcome.get
    else:

        def get(name: str, default: Any = None) -> Any:
            return getattr(outcome, name, default)

    return (
        str(get("name")),
        bool(get("passed")),
        bool(get("blocking", True)),
        str(get("description", "") or ""),
        dict(get("metadata", {}) or {}),
    )


def check_results(
    asset_key: dg.AssetKey, decls: Sequence[CheckDecl], outcomes: Iterable[Any]
) -> tuple[list[dg.AssetCheckResult], bool]:
    """Map core outcomes onto the declared checks; returns the results and whether every blocking one passed.

    A declared check the core did not evaluate passes with a note (it does not apply to this day, e.g.
    no bookTicker captured); outcomes the pipeline does not declare are folded into ``other_core_checks``.
    """
    declared = {d.name: d for d in decls}
    by_name: dict[str, tuple[bool, str, dict[str, Any]]] = {}
    meta: dict[str, Any]
    extra: list[tuple[str, bool, bool, str, dict[str, Any]]] = []
    for outcome in outcomes:
        name, passed, blocking, description, meta = outcome_fields(outcome)
        if name in declared and name != CATCH_ALL:
            by_name[name] = (passed, description, meta)
        else:
            extra.append((name, passed, blocking, description, meta))
    results: list[dg.AssetCheckResult] = []
    blocking_ok = True
    for decl in decls:
        if decl.name == CATCH_ALL:
            failed = [e for e in extra if not e[1] and e[2]]
            passed = not failed
            description = (
                "; ".join(f"{e[0]}: {e[3]}" for e in failed) or f"{len(extra)} further checks passed"
            )
            meta = {"checks": {e[0]: {"passed": e[1], "blocking": e[2], **e[4]} for e in extra}}
        elif decl.name in by_name:
            passed, description, meta = by_name[decl.name]
        else:
            passed, description, meta = True, "not evaluated for this partition (does not apply)", {}
        if decl.blocking and not passed:
            blocking_ok = False
        results.append(
            dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=decl.name,
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR if decl.blocking else dg.AssetCheckSeverity.WARN,
                description=description or None,
                metadata=report_metadata(meta),
            )
        )
    return results, blocking_ok
