"""What a day run records, typed: the merge steps' outcomes, the machine-readable record of each symbol-day
(``META_SYMBOL_OUTCOMES``) that the cleanup gate, the sensors and the derived assets read back, and what
the merge's planning step reads back of each validated stream-day.

Apart from ``assets/merged.py`` (which writes both) so that its readers do not import the asset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NotRequired, TypedDict

import dagster as dg

from depth_pipeline.keys import MERGED_DEPTH, META_SYMBOL_OUTCOMES


class CheckSummary(TypedDict):
    """One core check outcome of a symbol-day, as the step passes it on (JSON)."""

    name: str
    passed: bool
    blocking: bool
    description: str


class SymbolOutcome(TypedDict):
    """What one symbol-day's merge (or its not being merged) came to: a step's result (JSON) and a row of
    the day's table."""

    symbol: str
    ok: bool
    published: bool
    reason: str
    not_validated: NotRequired[bool]
    rows: NotRequired[int]
    events: NotRequired[int]
    events_received: NotRequired[int]
    gaps: NotRequired[int]
    coverage: NotRequired[float]
    opening: NotRequired[dict[str, Any]]
    problems: NotRequired[list[str]]
    checks: NotRequired[list[CheckSummary]]
    blocking_checks_passed: NotRequired[bool]
    no_raw_data: NotRequired[bool]
    refused_reason: NotRequired[str]
    manifest_key: NotRequired[str]
    manifest_etag: NotRequired[str]


class SymbolRecord(TypedDict):
    """A symbol's entry of the day's ``META_SYMBOL_OUTCOMES``: what the cleanup gate deletes by."""

    ok: bool
    blocking_checks_passed: bool
    published: bool
    manifest_key: str
    manifest_etag: str
    reason: str
    no_raw_data: NotRequired[bool]  # recorded since the sensors read it; older records lack it


def symbol_record(outcome: SymbolOutcome) -> SymbolRecord:
    """The machine-readable record of one symbol-day's outcome."""
    return {
        "ok": outcome["ok"],
        "blocking_checks_passed": bool(outcome.get("blocking_checks_passed")),
        "published": outcome["published"],
        "manifest_key": outcome.get("manifest_key", ""),
        "manifest_etag": outcome.get("manifest_etag", ""),
        "reason": outcome["reason"][:500],
        "no_raw_data": bool(outcome.get("no_raw_data")),
    }


def merged_materializations(instance: dg.DagsterInstance, run_id: str) -> Iterator[dg.AssetMaterialization]:
    """The ``merged_depth`` materializations the run recorded, in event-log order."""
    for record in instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None and materialization.asset_key == MERGED_DEPTH:
            yield materialization


def recorded_outcomes(materialization: dg.AssetMaterialization | None) -> dict[str, SymbolRecord]:
    """Symbol -> record of a ``merged_depth`` materialization (empty when it has none)."""
    table = materialization.metadata.get(META_SYMBOL_OUTCOMES) if materialization is not None else None
    value = table.value if table is not None else None
    return value if isinstance(value, dict) else {}


class StreamDayRecord(TypedDict):
    """What a ``validated/<stream>`` materialization records for the merge's planning step."""

    symbols: list[str]  # the symbols validated (``symbols``)
    failed: dict[str, str]  # symbol -> why it could not be validated (``failed_symbols``)


def recorded_stream_day(materialization: dg.AssetMaterialization | None) -> StreamDayRecord:
    """The symbols and failed symbols a validated stream-day recorded (none when there is no record)."""
    meta = materialization.metadata if materialization is not None else {}
    symbols = meta["symbols"].value if "symbols" in meta else None
    failed = meta["failed_symbols"].value if "failed_symbols" in meta else None
    return {
        "symbols": [str(s) for s in symbols] if isinstance(symbols, list) else [],
        "failed": {str(k): str(v) for k, v in failed.items()} if isinstance(failed, dict) else {},
    }
