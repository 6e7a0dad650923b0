"""A real Dagster instance materializes symbol-days over raw objects written with depth_core.raw_format;
the gated cleanup deletes only what a verified merge consumed, and late objects trigger a re-merge that
holds both the events merged before the cleanup and the late ones."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl
import pytest

from depth_core.layout import merged_day_prefix
from depth_core.raw_format import LineKind
from depth_core.storeio import get_json, read_parquet
from depth_core.validate import validated_day_prefix
from depth_pipeline.definitions import build_definitions
from depth_pipeline.keys import MERGED_DEPTH
from depth_pipeline.resources import build_resources
from depth_pipeline.sensors import merged_partitions_of_run
from depth_store import ObjectStore, open_store
from tests.pipeline.helpers import (
    cleanup_output,
    day_outcomes,
    evaluate,
    failure_message,
    make_config,
    manifest,
    raw_keys,
    run_cleanup,
    run_partition,
    sensor,
    write_day,
)
from tests.pipeline.rawgen import DayPlan, write_object

# a recent day: the late-data sensor looks back DEPTH_LATE_LOOKBACK_DAYS (7) days
DATE = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)).isoformat()
NEXT_DATE = (dt.date.fromisoformat(DATE) + dt.timedelta(days=1)).isoformat()
PK = DATE
MANIFEST = f"merged/market=spot/symbol=BTCUSDT/date={DATE}/_coverage_manifest.json"


def _late_object(store_url: str, plan: DayPlan) -> str:
    """An object a cut-off collector uploads after the merge: a new session, events already covered."""
    ns, frame = plan.event(40)
    return write_object(
        open_store(store_url), "eu-1", plan.symbol, [(ns + 5, LineKind.DEPTH, frame)], session="late", seq=0
    ).key


def test_materialize_partition_writes_merged_day_with_checks_and_metadata(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"), derived_assets=True)
    store = open_store(config.store_url)
    written = write_day(store, DayPlan(DATE))
    defs = build_definitions(config)
    result = dg.materialize(
        [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)],
        instance=dagster_instance,
        partition_key=PK,
        resources=build_resources(config),
    )
    assert result.success
    listed = {o["key"] for o in manifest(store, DATE)["raw_objects"]}
    assert listed == set(written)
    assert any(
        i.key.endswith(".parquet") for i in store.list(f"merged/market=spot/symbol=BTCUSDT/date={DATE}/")
    )
    mats = {
        m.asset_key: m
        for node in ("merged_depth_day", "derived_day")
        for m in result.asset_materializations_for_node(node)
    }
    meta = mats[MERGED_DEPTH].metadata
    assert meta["events"].value == 60 and meta["gap_count"].value == 0  # disjoint outages: no gap
    assert meta["blocking_checks_passed"].value is True
    assert int(meta["dagster/row_count"].value) > 60  # type: ignore[arg-type]
    # one row per symbol-day in the day's table: what the UI shows
    (row,) = day_outcomes(result).values()
    assert row["symbol"] == "BTCUSDT" and row["status"] == "ok" and row["published"] is True
    assert row["events"] == 60 and row["gaps"] == 0 and "blocking passed" in row["checks"]
    evaluations = result.get_asset_check_evaluations()
    merged_checks = {e.check_name: e.passed for e in evaluations if e.asset_key == MERGED_DEPTH}
    assert merged_checks["gaps_missed_by_every_stream"] and merged_checks["streams_agree"]
    assert all(merged_checks.values()) and len(merged_checks) >= 9
    # the derived assets read the merged day: top-25 book per second and the quality report
    top = mats[dg.AssetKey("book_top25_1s")]
    assert int(top.metadata["dagster/row_count"].value) > 0  # type: ignore[arg-type]
    assert store.exists(f"quality/market=spot/symbol=BTCUSDT/date={DATE}/quality.png")
    quality = mats[dg.AssetKey("depth_quality_report")]
    assert "data:image/png;base64," in str(quality.metadata["report"].value)
    # the day's overview: every symbol on one time axis, in the store and on the materialization
    assert "![overview of" in str(quality.metadata["report"].value)
    assert store.get_bytes(f"quality/market=spot/date={DATE}/overview.png").startswith(b"\x89PNG")


def test_late_object_triggers_remerge_and_is_cleaned_once_merged(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    plan = DayPlan(DATE)
    written = write_day(store, plan)
    defs = build_definitions(config)
    merge = run_partition(defs, dagster_instance, DATE, "BTCUSDT")
    assert merge.success
    late_key = _late_object(config.store_url, plan)

    # the late-data sensor sees the object the merge did not list, and asks for a re-merge
    late = evaluate(defs, "late_data_sensor", config, dagster_instance)
    assert [(r.partition_key, r.tags["depth/kind"]) for r in late.run_requests or []] == [(PK, "remerge")]
    remerge = run_partition(defs, dagster_instance, DATE, "BTCUSDT", kind="remerge")
    assert remerge.success, failure_message(remerge)
    assert late_key in {o["key"] for o in manifest(store, DATE)["raw_objects"]}
    assert evaluate(defs, "late_data_sensor", config, dagster_instance).run_requests == []

    # the run-status sensor asks for the cleanup of exactly the partition the run merged
    success_event = next(e for e in remerge.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS)
    context = dg.build_run_status_sensor_context(
        sensor_name="cleanup_after_merge_sensor",
        dagster_instance=dagster_instance,
        dagster_run=remerge.dagster_run,
        dagster_event=success_event,
    )
    requests = cast(list[dg.RunRequest], sensor(defs, "cleanup_after_merge_sensor")(context))
    assert [r.partition_key for r in requests] == [PK]
    cleanup = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert cleanup.success
    assert sorted(cleanup_output(cleanup)["deleted"]) == sorted([*written, late_key])
    assert raw_keys(store) == set()


def _merged_update_ids(store: ObjectStore, date: str) -> set[int]:
    frames = [
        read_parquet(store, i.key)
        for i in store.list(merged_day_prefix("spot", "BTCUSDT", date))
        if i.key.endswith(".parquet")
    ]
    merged = pl.concat(frames).filter(~pl.col("is_snapshot"))
    return set(merged["last_update_id"].to_list())


def test_late_object_after_the_cleanup_is_merged_with_everything_merged_before(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    plan = DayPlan(DATE)
    written = write_day(store, plan)  # eu-1 misses events 10..13, ap-1 misses 30..32
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, DATE, "BTCUSDT").success
    assert _merged_update_ids(store, DATE) == {plan.first_id + i for i in range(60)}
    cleanup = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert cleanup.success and sorted(cleanup_output(cleanup)["deleted"]) == sorted(written)
    assert raw_keys(store) == set()

    # the cut-off eu-1 collector uploads its spool: its own outage (10..13) and events no stream had (60..64)
    spool = [plan.event(i) for i in (*range(10, 14), *range(60, 65))]
    late_key = write_object(
        store, "eu-1", "BTCUSDT", [(ns, LineKind.DEPTH, frame) for ns, frame in spool], session="late", seq=0
    ).key
    late = evaluate(defs, "late_data_sensor", config, dagster_instance)
    assert [(r.partition_key, r.tags["depth/kind"]) for r in late.run_requests or []] == [(PK, "remerge")]
    remerge = run_partition(defs, dagster_instance, DATE, "BTCUSDT", kind="remerge")
    assert remerge.success, failure_message(remerge)

    # the re-merged day holds the events merged before (carried over from validated/) and the late ones
    assert _merged_update_ids(store, DATE) == {plan.first_id + i for i in range(65)}
    eu = validated_report(store, "eu-1")
    ap = validated_report(store, "ap-1")
    assert eu["events"] == 65 and ap["events"] == 57  # every event each stream ever received
    assert {o["key"] for o in eu["objects"] + ap["objects"] if o["carried"]} == set(written)
    listed = {o["key"] for o in manifest(store, DATE)["raw_objects"]}
    assert listed == {*written, late_key}
    assert evaluate(defs, "late_data_sensor", config, dagster_instance).run_requests == []

    # the cleanup after the re-merge deletes the late object too; the others count as already absent
    again = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert again.success
    out = cleanup_output(again)
    assert out["deleted"] == [late_key] and sorted(out["already_absent"]) == sorted(written)
    assert raw_keys(store) == set()
    # validated/ stays: a third re-validation still rebuilds the whole day with no raw object left
    assert run_partition(defs, dagster_instance, DATE, "BTCUSDT", kind="remerge").success
    assert _merged_update_ids(store, DATE) == {plan.first_id + i for i in range(65)}


def validated_report(store: ObjectStore, stream: str) -> dict[str, Any]:
    return cast(
        dict[str, Any], get_json(store, validated_day_prefix("spot", stream, "BTCUSDT", DATE) + "report.json")
    )


def test_cleanup_deletes_nothing_when_the_merge_failed(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    store_root = tmp_path / "store"
    config = make_config(str(store_root))
    store = open_store(config.store_url)
    written = set(write_day(store, DayPlan(DATE)))
    (store_root / "merged").write_text("not a folder: every write under merged/ fails")
    defs = build_definitions(config)
    merge = run_partition(defs, dagster_instance, DATE, "BTCUSDT")
    assert not merge.success
    cleanup = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert not cleanup.success
    assert f"the latest merge of BTCUSDT {DATE} (run {merge.run_id}) failed: merge failed" in failure_message(
        cleanup
    )
    assert raw_keys(store) == written

    # a verified merge, then a failed re-merge attempt: still nothing is deleted
    (store_root / "merged").unlink()
    assert run_partition(defs, dagster_instance, DATE, "BTCUSDT").success
    (store_root / "validated").rename(store_root / "validated-moved")
    (store_root / "validated").write_text("blocked")
    failed_again = run_partition(defs, dagster_instance, DATE, "BTCUSDT")
    assert not failed_again.success
    refused = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert not refused.success
    assert (
        f"a later merge attempt of BTCUSDT {DATE} (run {failed_again.run_id}) is FAILURE"
        in failure_message(refused)
    )
    assert raw_keys(store) == written


def test_cleanup_deletes_nothing_when_a_blocking_check_failed(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    plan = DayPlan(DATE)
    written = set(write_day(store, plan))
    # ap-1 received a different book change for an id eu-1 also has: the streams disagree
    ns, frame = plan.event(20)
    conflicting = frame.replace(b'"b":[["100.00","3.000"]]', b'"b":[["100.00","7.000"]]')
    assert conflicting != frame
    written.add(
        write_object(store, "ap-1", "BTCUSDT", [(ns + 1, LineKind.DEPTH, conflicting)], "conflict", 0).key
    )
    defs = build_definitions(config)
    merge = run_partition(defs, dagster_instance, DATE, "BTCUSDT")
    assert not merge.success
    failed = [e for e in merge.get_asset_check_evaluations() if not e.passed]
    assert "streams_agree" in {e.check_name for e in failed}
    assert merged_partitions_of_run(dagster_instance, merge.run_id) == []
    cleanup = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert not cleanup.success
    assert raw_keys(store) == written


def test_crashed_cleanup_rerun_finishes_without_touching_anything_else(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"), symbols=("BTCUSDT", "ETHUSDT"))
    store = open_store(config.store_url)
    plan = DayPlan(DATE)
    written = write_day(store, plan)
    other_symbol = set(write_day(store, DayPlan(DATE, symbol="ETHUSDT")))
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, DATE, "BTCUSDT").success
    manifest_before = store.get_bytes(MANIFEST)
    # the first cleanup "crashed" after deleting half of the manifest's objects
    crashed_half = sorted(written)[: len(written) // 2]
    for key in crashed_half:
        store.delete(key)
    late_key = _late_object(config.store_url, plan)
    rerun = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert rerun.success
    out = cleanup_output(rerun)
    assert sorted(out["already_absent"]) == crashed_half
    assert sorted(out["deleted"]) == sorted(set(written) - set(crashed_half))
    assert raw_keys(store) == other_symbol | {late_key}
    assert store.get_bytes(MANIFEST) == manifest_before
    # and once more: idempotent
    third = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert third.success and cleanup_output(third)["deleted"] == []
    assert raw_keys(store) == other_symbol | {late_key}


def test_object_spanning_two_dates_is_deleted_only_after_both_merges(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    # events from 23:59:57 to 00:00:03: the objects around midnight hold events of both dates
    plan = DayPlan(DATE, start_offset_s=86_400 - 3.0)
    written = write_day(store, plan)
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, DATE, "BTCUSDT").success
    objects = manifest(store, DATE)["raw_objects"]
    spanning = {o["key"] for o in objects if len(o["event_dates"]) == 2}
    assert spanning, objects
    first = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert first.success
    assert set(cleanup_output(first)["kept_other_date_pending"]) >= spanning
    assert spanning <= raw_keys(store)
    next_day = NEXT_DATE
    assert run_partition(defs, dagster_instance, next_day, "BTCUSDT").success
    assert run_cleanup(defs, dagster_instance, next_day, "BTCUSDT").success
    assert run_cleanup(defs, dagster_instance, DATE, "BTCUSDT").success
    assert raw_keys(store) == set(), written


@pytest.mark.parametrize("retention_days", [1.0])
def test_retention_keeps_merged_raw_objects(
    tmp_path: Path, dagster_instance: dg.DagsterInstance, retention_days: float
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    written = set(write_day(store, DayPlan(DATE)))
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, DATE, "BTCUSDT").success
    kept = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT", retention_days=retention_days)
    assert kept.success and sorted(cleanup_output(kept)["kept_retention"]) == sorted(written)
    assert raw_keys(store) == written
    assert gzip.decompress(store.get_bytes(sorted(written)[0]))  # untouched and readable


def test_a_days_symbols_fan_out_one_batch_per_step_each_merged_once(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """Three symbols in steps of one: three merge steps, each its own batch (dynamic outputs are kept
    apart by the step IO), every symbol merged exactly once and recorded once."""
    config = make_config(str(tmp_path / "store"), symbols_per_step=1)
    store = open_store(config.store_url)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for i, symbol in enumerate(symbols):
        write_day(store, DayPlan(DATE, symbol=symbol, first_id=1_000_000 + 1_000 * i))
    result = run_partition(build_definitions(config), dagster_instance, DATE)
    assert result.success, failure_message(result)
    steps = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS}
    assert {s for s in steps if s and ".merge_symbols[" in s} == {
        f"merged_depth_day.merge_symbols[b{i:04d}]" for i in range(3)
    }
    outcomes = day_outcomes(result)
    assert sorted(outcomes) == symbols and all(o["status"] == "ok" for o in outcomes.values())
    (mat,) = [m for m in result.asset_materializations_for_node("merged_depth_day")]
    assert mat.metadata["symbols"].value == 3
    for symbol in symbols:
        assert manifest(store, DATE, symbol)["blocking_passed"] is True
