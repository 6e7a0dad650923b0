"""The definitions' shape against a checked-in snapshot (``defs_snapshot.json``).

In the manner of dagster-open-platform's ``test_defs.py``, but comparing, not only loading: the asset keys,
each asset's deps and partitions type, every asset check with its *blocking* flag, the jobs, schedules and
sensors that ``build_definitions`` makes for one fixed configuration. A change to any of them (a check that
stops blocking, a renamed job, a dropped dep) fails here and has to be accepted on purpose by regenerating
the snapshot and reviewing its diff:

    make defs-snapshot
    # = DEPTH_UPDATE_DEFS_SNAPSHOT=1 .venv/bin/pytest tests/pipeline/test_defs_snapshot.py
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from depth_core import check_catalog
from depth_core.check_catalog import MERGED_CHECKS
from tests.pipeline.helpers import build_definitions, make_config

SNAPSHOT = Path(__file__).with_name("defs_snapshot.json")
UPDATE_ENV = "DEPTH_UPDATE_DEFS_SNAPSHOT"


def _shape(defs: dg.Definitions) -> dict[str, Any]:
    """What the snapshot records of the definitions: names, edges and flags only (JSON, sorted)."""
    graph = defs.resolve_asset_graph()
    assets: dict[str, Any] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": type(partitions).__name__ if partitions is not None else None,
            "materializable": node.is_materializable,
        }
    checks: dict[str, Any] = {}
    for asset_def in graph.assets_defs:
        for spec in asset_def.check_specs:
            checks[f"{spec.asset_key.to_user_string()}:{spec.name}"] = {"blocking": spec.blocking}
    jobs = sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__"))
    schedules = {
        s.name: {"cron": s.cron_schedule, "job": s.job_name, "timezone": s.execution_timezone}
        for s in sorted(defs.schedules or [], key=lambda s: s.name)
        if isinstance(s, dg.ScheduleDefinition)
    }
    sensors = {
        s.name: {
            "jobs": sorted(j.name for j in s.jobs) if s.has_jobs else [],
            "default_status": s.default_status.value,
            "minimum_interval_seconds": s.minimum_interval_seconds,
        }
        for s in sorted(defs.sensors or [], key=lambda s: s.name)
        if isinstance(s, dg.SensorDefinition)
    }
    return {
        "assets": assets,
        "checks": dict(sorted(checks.items())),
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
    }


def _build(tmp_path: Path) -> dict[str, Any]:
    # fixed config: the helpers' two streams, a fixed first partition (no store lookup), derived assets on
    config = make_config(str(tmp_path / "store"), start_date="2026-11-01", derived_assets=True)
    return _shape(build_definitions(config))


def _diff(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    out = []
    for section in sorted(set(expected) | set(actual)):
        a, b = expected.get(section), actual.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                if a.get(name) != b.get(name):
                    out.append(f"{section}.{name}: snapshot {a.get(name)} != now {b.get(name)}")
        elif a != b:
            out.append(f"{section}: snapshot {a} != now {b}")
    return out


def test_definitions_match_the_snapshot(tmp_path: Path) -> None:
    actual = _build(tmp_path)
    if os.environ.get(UPDATE_ENV):
        SNAPSHOT.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    diff = _diff(expected, actual)
    assert not diff, (
        "the definitions changed; if on purpose, `make defs-snapshot` and review the diff:\n"
        + "\n".join(diff)
    )


def _flip_first_blocking(monkeypatch: pytest.MonkeyPatch) -> str:
    """Declare the first blocking merged check non-blocking, in the core's one declaration of it."""
    first = next(d for d in MERGED_CHECKS.values() if d.blocking)
    monkeypatch.setitem(check_catalog.MERGED_CHECKS, first.name, dataclasses.replace(first, blocking=False))
    return first.name


def test_a_flipped_blocking_flag_fails_the_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is not vacuous: one merged check declared non-blocking in the core shows up as exactly
    that (the pipeline's check specs are derived from the core's declarations)."""
    name = _flip_first_blocking(monkeypatch)
    expected = json.loads(SNAPSHOT.read_text())
    diff = _diff(expected, _build(tmp_path))
    assert diff == [
        f"checks.merged_depth:{name}: snapshot {{'blocking': True}} != now {{'blocking': False}}"
    ], diff


def test_manifest_and_dagster_severity_come_from_one_declaration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one check's flag flipped in the core's declaration, a real merge writes that flag into the
    manifest (what ``blocking_passed`` and the cleanup gate go by) and the day's Dagster check result gets
    the matching severity: the two can never disagree."""
    from depth_core.layout import merged_manifest_key
    from depth_core.validate import validate_symbol_day
    from depth_pipeline.assets.merged import day_check_results, merge_one
    from depth_pipeline.keys import MERGED_DEPTH
    from depth_store import open_store
    from tests.core.synth import SyntheticExchange, stream_lines, write_stream

    flipped = _flip_first_blocking(monkeypatch)
    DATE = "2025-11-24"  # the synthetic exchange's day (tests/core/synth.py DAY0_MS)
    store = open_store(str(tmp_path / "store"))
    ex = SyntheticExchange(seed=2)
    ex.run(200)
    write_stream(store, "spot", "eu-1", ex.symbol, stream_lines(ex, ex.events(5), 20, snapshots=[ex.ids[3]]))
    validate_symbol_day(store, "spot", "eu-1", ex.symbol, DATE)
    outcome = merge_one(store, "spot", ex.symbol, DATE, ["eu-1"])
    assert outcome["ok"], outcome

    manifest = json.loads(store.get_bytes(merged_manifest_key("spot", ex.symbol, DATE)))
    declared = {name: d.blocking for name, d in check_catalog.MERGED_CHECKS.items()}
    assert declared[flipped] is False
    assert {c["name"]: c["blocking"] for c in manifest["checks"]} == {
        c["name"]: declared[c["name"]] for c in manifest["checks"]
    }
    assert flipped in {c["name"] for c in manifest["checks"]}

    severities = {r.check_name: r.severity for r in day_check_results(MERGED_DEPTH, MERGED_CHECKS, [outcome])}
    assert severities == {
        name: dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
        for name, blocking in declared.items()
    }
    assert severities[flipped] == dg.AssetCheckSeverity.WARN
