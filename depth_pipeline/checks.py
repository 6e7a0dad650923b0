"""Asset-check specs of the pipeline assets, derived from the core's declarations.

Each check is declared once, in the core (``depth_core/check_catalog.py``: name, blocking, description);
the specs here and the severity of every result (ERROR if blocking, else WARN) are derived from that
declaration, the same one the core stamps on its outcomes and the manifest's ``blocking_passed`` is
computed from. Declaring checks on the asset (``check_specs=``, not separate ``@asset_check``s) keeps them
partition-aware: a separate check taking a partitioned asset as input would load every partition. A
*blocking* check that fails stops downstream assets and fails the run, and the cleanup gate refuses to
delete raw objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg

from depth_core.check_catalog import CheckDecl, CheckOutcome
from depth_pipeline.metadata import report_metadata


def severity(decl: CheckDecl) -> dg.AssetCheckSeverity:
    """ERROR for a blocking check, WARN otherwise."""
    return dg.AssetCheckSeverity.ERROR if decl.blocking else dg.AssetCheckSeverity.WARN


def check_specs(asset_key: dg.AssetKey, catalog: Mapping[str, CheckDecl]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(d.name, asset=asset_key, blocking=d.blocking, description=d.description)
        for d in catalog.values()
    ]


def check_results(
    asset_key: dg.AssetKey, catalog: Mapping[str, CheckDecl], outcomes: Iterable[CheckOutcome]
) -> list[dg.AssetCheckResult]:
    """One result per declared check from the core's outcomes.

    A declared check the core did not evaluate passes with a note (it does not apply to this partition).
    """
    by_name = {o.name: o for o in outcomes}
    results: list[dg.AssetCheckResult] = []
    for decl in catalog.values():
        outcome = by_name.get(decl.name)
        results.append(
            dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=decl.name,
                passed=outcome.passed if outcome else True,
                severity=severity(decl),
                description=(
                    outcome.description if outcome else "not evaluated for this partition (does not apply)"
                )
                or None,
                metadata=report_metadata(outcome.metadata if outcome else {}),
            )
        )
    return results
