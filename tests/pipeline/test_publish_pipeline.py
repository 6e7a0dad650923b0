"""Issue 14 scenarios 1, 4, 5 and 7 through the Dagster job: a verified day is never replaced by a failing
or smaller re-merge, no event is dropped at a gap, and a multi-member raw object is merged whole.

Each failed on the pipeline that wrote merged/ in place before its checks ran (scenario 1: the failing
re-merge replaced the verified files; scenario 4: one stream fewer cut the day and passed; scenario 5: the day
ended at a gap with no snapshot after it; scenario 7: only the first gzip member was read, then the cleanup
deleted the object).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
from pathlib import Path

import dagster as dg

from depth_core.layout import merged_day_prefix
from depth_core.raw_format import LineKind, RawObjectKey, encode_line
from depth_pipeline.definitions import build_definitions
from depth_store import ObjectStore, open_store
from tests.pipeline.helpers import (
    cleanup_output,
    failure_message,
    make_config,
    manifest,
    raw_keys,
    run_cleanup,
    run_partition,
    write_day,
)
from tests.pipeline.rawgen import DayPlan, write_object, write_stream_day

DATE = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)).isoformat()


def day_bytes(store: ObjectStore) -> dict[str, bytes]:
    """What readers and the next day see of the symbol-day: merged files, manifest, end state."""
    return {
        i.key: store.get_bytes(i.key)
        for root in (merged_day_prefix("spot", "BTCUSDT", DATE), "state/")
        for i in store.list(root)
    }


def test_failing_remerge_leaves_the_published_day_byte_identical(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    plan = DayPlan(DATE)
    write_day(store, plan)
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, DATE, "BTCUSDT").success
    before = day_bytes(store)
    rows_before = manifest(store, DATE)["rows"]

    # a late ap-1 object whose copy of event 5 disagrees with eu-1's: the re-merge's streams_agree fails
    ns, frame = plan.event(5)
    data = json.loads(frame)
    data["data"]["b"] = [["104.00", "9.999"]]
    write_object(
        store,
        "ap-1",
        "BTCUSDT",
        [(ns + 10**9, LineKind.DEPTH, json.dumps(data).encode())],
        session="bad",
        seq=0,
    )
    remerge = run_partition(defs, dagster_instance, DATE, "BTCUSDT", kind="remerge")
    assert not remerge.success
    assert day_bytes(store) == before  # byte-identical Parquet, manifest and end state
    assert manifest(store, DATE)["rows"] == rows_before
    assert list(store.list("staging/")) == []
    cleanup = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert not cleanup.success  # the latest merge attempt failed: nothing deleted
    assert raw_keys(store)


def test_remerge_with_one_stream_fewer_publishes_nothing_smaller(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    write_day(store, DayPlan(DATE))  # eu-1 misses events 10..13, ap-1 misses 30..32
    assert run_partition(build_definitions(config), dagster_instance, DATE, "BTCUSDT").success
    before = day_bytes(store)

    fewer = build_definitions(dataclasses.replace(config, streams=("eu-1",)))  # DEPTH_STREAMS lacks ap-1
    remerge = run_partition(fewer, dagster_instance, DATE, "BTCUSDT", kind="remerge")
    assert not remerge.success
    message = failure_message(remerge)
    assert "smaller than the published version" in message and "ap-1" in message, message
    assert "4 update ids" in message  # ids 10..13 only ap-1 had
    assert day_bytes(store) == before


def test_multi_member_object_is_merged_whole_before_cleanup(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    plan = DayPlan(DATE)
    lines = [(plan.snapshot()[0], LineKind.SNAPSHOT, plan.snapshot()[1])]
    lines += [(ns, LineKind.DEPTH, frame) for ns, frame in (plan.event(i) for i in range(plan.events))]
    body = [encode_line(ns, kind, text) for ns, kind, text in lines]
    for stream in ("eu-1", "ap-1"):
        key = RawObjectKey.for_segment("spot", stream, "BTCUSDT", lines[0][0], "cat", 0).key
        # `cat a.gz b.gz`: two members in one object
        store.put_bytes(key, gzip.compress(b"".join(body[:25])) + gzip.compress(b"".join(body[25:])))
    defs = build_definitions(config)
    result = run_partition(defs, dagster_instance, DATE, "BTCUSDT")
    assert result.success, failure_message(result)
    assert manifest(store, DATE)["events"] == plan.events  # the first member alone holds 24 events
    cleanup = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert cleanup.success and len(cleanup_output(cleanup)["deleted"]) == 2


def test_gap_with_no_snapshot_after_it_keeps_every_event_before_cleanup(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """Scenario 5: both streams miss events 20..24 and no snapshot follows; each also has its own outage.
    Every received event is merged (after the gap with book_exact false) before the cleanup deletes raw."""
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    plan = DayPlan(DATE)
    write_stream_day(store, "eu-1", plan, session="eu", skip=range(20, 25))
    write_stream_day(store, "ap-1", plan, session="ap", skip=[*range(10, 14), *range(20, 25), *range(40, 44)])
    defs = build_definitions(config)
    result = run_partition(defs, dagster_instance, DATE, "BTCUSDT")
    assert result.success, failure_message(result)
    m = manifest(store, DATE)
    assert m["events"] == plan.events - 5  # the old merge kept 20 (it stopped at the gap) and passed
    assert [(g["first_id"], g["last_id"], g["reanchored_at"]) for g in m["gaps"]] == [
        (plan.first_id + 20, plan.first_id + 24, None)
    ]
    assert m["inexact_events"] == plan.events - 25 and m["gaps"][0]["skipped_ids"] == 0
    cleanup = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert cleanup.success and raw_keys(store) == set()
