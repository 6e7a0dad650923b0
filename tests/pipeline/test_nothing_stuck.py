"""Nothing stuck (issue 14, scenario 6): every completed day that still holds raw objects is asked for again
until it is merged and cleaned — through real runs on a real Dagster instance and store.

- an object spanning midnight, arriving after both days were merged, re-merges both days;
- a re-merge of D-1 that changes its end state re-merges D (and one that does not change it, does not);
- a day whose nightly merge failed is requested again, with backoff; so is a re-merge that failed;
- a day never merged is requested once the nightly run is overdue;
- retention counts from a day's latest merge, so re-merged days are cleaned too.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, cast

import dagster as dg

from depth_core.raw_format import LineKind
from depth_pipeline.config import PipelineConfig
from depth_pipeline.sensors import evaluate_late_data, evaluate_reconcile
from depth_store import ObjectStore, open_store
from tests.pipeline.helpers import (
    build_definitions,
    make_config,
    manifest,
    raw_keys,
    run_cleanup,
    run_partition,
    sensor,
)
from tests.pipeline.rawgen import DayPlan, write_object, write_stream_day

TODAY = dt.datetime.now(dt.UTC).date()
D0 = (TODAY - dt.timedelta(days=4)).isoformat()
D1 = (TODAY - dt.timedelta(days=3)).isoformat()
STREAMS = ["eu-1", "ap-1"]


def _plans(first_id: int = 1_000_000) -> tuple[DayPlan, DayPlan]:
    """Two consecutive days of BTCUSDT whose ids chain (the second opens from the first's carried book)."""
    return DayPlan(D0, first_id=first_id), DayPlan(D1, first_id=first_id + 60)


def _write(store: ObjectStore, plan: DayPlan, snapshot: bool = True) -> list[str]:
    """Both streams, disjoint outages (layout 1: what the day run reads today; layout 2 in the sensor
    tests)."""
    eu = write_stream_day(store, "eu-1", plan, session="eu", skip=range(10, 14), with_snapshot=snapshot)
    ap = write_stream_day(store, "ap-1", plan, session="ap", skip=range(30, 33), with_snapshot=snapshot)
    return [i.key for i in eu + ap]


def _late_tail(
    store: ObjectStore, plan: DayPlan, events: range, session: str = "late", stream: str = "eu-1"
) -> str:
    """Events ``events`` of ``plan`` (past its end: ids continuing it, E still on its date) from a cut-off
    collector, uploaded after the merge."""
    lines = [(plan.event(i)[0] + 5, LineKind.DEPTH, plan.event(i)[1]) for i in events]
    return write_object(store, stream, plan.symbol, lines, session=session, seq=0).key


def _status_sensor(
    defs: dg.Definitions, instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult
) -> list[dg.RunRequest]:
    success = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS)
    context = dg.build_run_status_sensor_context(
        sensor_name="cleanup_after_merge_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=success,
    )
    return cast(list[dg.RunRequest], sensor(defs, "cleanup_after_merge_sensor")(context))


def _symbols_of(request: dg.RunRequest) -> list[str]:
    return list(request.run_config["resources"]["day_run"]["config"]["symbols"])


def test_remerge_of_the_day_before_that_changes_its_end_remerges_the_next_day(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    p0, p1 = _plans()
    _write(store, p0)
    _write(store, p1, snapshot=False)
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, D0).success
    assert run_partition(defs, dagster_instance, D1).success
    opening = manifest(store, D1)["opening"]
    assert opening["kind"] == "carry" and opening["update_id"] == manifest(store, D0)["last_update_id"]

    # a re-merge of D0 whose end does not change (a late copy of an event it has): D1 is left alone
    _late_tail(store, p0, range(40, 41), session="dup")
    same = run_partition(defs, dagster_instance, D0, "BTCUSDT", kind="remerge")
    assert same.success
    assert [r.job_name for r in _status_sensor(defs, dagster_instance, same)] == ["depth_cleanup"]

    # a cut-off collector delivers D0's last events late: D0's end moves, so D1 (carried from it) is asked for
    _late_tail(store, p0, range(60, 64))
    changed = run_partition(defs, dagster_instance, D0, "BTCUSDT", kind="remerge")
    assert changed.success
    assert manifest(store, D0)["last_update_id"] == p0.first_id + 63
    requests = _status_sensor(defs, dagster_instance, changed)
    nxt = [r for r in requests if r.job_name == "depth_daily"]
    assert [(r.partition_key, _symbols_of(r), r.tags["depth/kind"]) for r in nxt] == [
        (D1, ["BTCUSDT"], "carry-changed")
    ]


def _frame(symbol: str, uid: int, e_ms: int) -> bytes:
    data = {
        "e": "depthUpdate",
        "E": e_ms,
        "s": symbol,
        "U": uid,
        "u": uid,
        "b": [["100.00", "1.000"]],
        "a": [],
    }
    return json.dumps(
        {"stream": f"{symbol.lower()}@depth@100ms", "data": data}, separators=(",", ":")
    ).encode()


def _midnight_ms(date: str) -> int:
    return int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()) * 1000


def _late(
    instance: dg.DagsterInstance, store: ObjectStore, cursor: dict[str, Any], now: float
) -> tuple[list[dg.RunRequest], dict[str, Any]]:
    requests, text, _logs = evaluate_late_data(instance, store, "spot", STREAMS, cursor, now=now)
    return requests, json.loads(text)


def test_late_object_spanning_midnight_remerges_both_days(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """Received in D0's last 50 ms, it holds an event of D0 and one of D1 (the exchange clock runs 70 ms
    ahead): both days are asked for. The old sensor looked at the object's folder date (and the day
    before)."""
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    p0, p1 = _plans()
    _write(store, p0)
    _write(store, p1, snapshot=False)
    defs = build_definitions(config)
    assert (
        run_partition(defs, dagster_instance, D0).success
        and run_partition(defs, dagster_instance, D1).success
    )
    end_ms = _midnight_ms(D1)
    lines = [
        ((end_ms - 50) * 10**6, LineKind.DEPTH, _frame("BTCUSDT", 999_990, end_ms - 100)),
        ((end_ms - 10) * 10**6, LineKind.DEPTH, _frame("BTCUSDT", 999_991, end_ms + 20)),
    ]
    key = write_object(store, "ap-1", "BTCUSDT", lines, session="skew").key
    assert f"/date={D0}/" in key
    requests, _cursor = _late(dagster_instance, store, {}, time.time())
    assert sorted((r.partition_key, _symbols_of(r), r.tags["depth/kind"]) for r in requests) == [
        (D0, ["BTCUSDT"], "remerge"),
        (D1, ["BTCUSDT"], "remerge"),
    ]


def test_late_v2_object_remerges_each_symbol_it_holds(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """A layout-2 late object holds several symbols: the date's re-merge names each (one that the merged day
    did not have too), in one run of the date."""
    from tests.pipeline.v2gen import write_stream_day_v2

    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    p0, _p1 = _plans()
    _write(store, p0)
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, D0).success
    late = [
        DayPlan(D0, symbol="BTCUSDT", first_id=p0.first_id + 60, events=3, start_offset_s=3600),
        DayPlan(D0, symbol="ETHUSDT", events=3, start_offset_s=3600),
    ]
    write_stream_day_v2(store, "eu-1", late, session="late", with_snapshot=False)
    requests, _cursor = _late(dagster_instance, store, {}, time.time())
    assert [(r.partition_key, _symbols_of(r)) for r in requests] == [(D0, ["BTCUSDT", "ETHUSDT"])]


def test_failed_remerge_is_asked_for_again_with_backoff(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    root = tmp_path / "store"
    config = make_config(str(root))
    store = open_store(config.store_url)
    p0, _p1 = _plans()
    _write(store, p0)
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, D0).success
    late_key = _late_tail(store, p0, range(60, 64))
    now = time.time()
    first, cursor = _late(dagster_instance, store, {}, now)
    assert [(r.partition_key, r.run_key) for r in first] == [(D0, first[0].run_key)] and first[
        0
    ].run_key.endswith(":1")
    # the re-merge fails (a store blip: every write under merged/ fails)
    (root / "merged").rename(root / "merged-away")
    (root / "merged").write_text("blocked")
    assert not run_partition(defs, dagster_instance, D0, "BTCUSDT", kind="remerge").success
    again, cursor = _late(dagster_instance, store, cursor, now + 60)
    assert again == []  # backoff: not a new run every tick
    retry, cursor = _late(dagster_instance, store, cursor, now + 601)
    assert [r.partition_key for r in retry] == [D0] and retry[0].run_key.endswith(":2")
    (root / "merged").unlink()
    (root / "merged-away").rename(root / "merged")
    assert run_partition(defs, dagster_instance, D0, "BTCUSDT", kind="remerge").success
    assert late_key in {o["key"] for o in manifest(store, D0)["raw_objects"]}
    done, cursor = _late(dagster_instance, store, cursor, now + 601 + 1201)
    assert done == [] and cursor["pending"] == {}


def _reconcile(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    config: PipelineConfig,
    cursor: dict[str, Any],
    now: float,
) -> tuple[list[dg.RunRequest], dict[str, Any], list[str]]:
    requests, text, logs = evaluate_reconcile(instance, store, "spot", STREAMS, cursor, config, now=now)
    return requests, json.loads(text), logs


def test_failed_nightly_merge_is_retried_then_cleaned(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """A store blip fails the nightly merge of D0: the reconcile sensor asks again (with backoff) until it is
    merged, then asks for its cleanup, then has nothing left to do."""
    root = tmp_path / "store"
    config = make_config(str(root))
    store = open_store(config.store_url)
    p0, _p1 = _plans()
    _write(store, p0)
    defs = build_definitions(config)
    (root / "merged").write_text("blocked")
    assert not run_partition(defs, dagster_instance, D0).success
    (root / "merged").unlink()
    now = time.time()
    first, cursor, logs = _reconcile(dagster_instance, store, config, {}, now)
    assert [(r.job_name, r.partition_key, r.tags["depth/kind"]) for r in first] == [
        ("depth_daily", D0, "reconcile")
    ], logs
    assert _reconcile(dagster_instance, store, config, cursor, now + 60)[0] == []  # backoff
    second, cursor, _logs = _reconcile(dagster_instance, store, config, cursor, now + 601)
    assert [r.run_key for r in second] == [f"reconcile:{D0}:failed:2"]
    assert run_partition(defs, dagster_instance, D0, kind="reconcile").success
    cleanup, cursor, logs = _reconcile(dagster_instance, store, config, cursor, now + 602)
    assert [(r.job_name, r.partition_key) for r in cleanup] == [("depth_cleanup", D0)], logs
    assert run_cleanup(defs, dagster_instance, D0, "BTCUSDT").success
    assert raw_keys(store) == set()
    rest, cursor, logs = _reconcile(dagster_instance, store, config, cursor, now + 2000)
    assert rest == [] and cursor["asks"] == {}, logs


def test_never_merged_day_is_asked_for_once_the_nightly_run_is_overdue(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    yesterday = (TODAY - dt.timedelta(days=1)).isoformat()
    _write(store, DayPlan(yesterday))
    midnight = _midnight_ms(TODAY.isoformat()) / 1000
    # 00:40: the nightly run (00:30) may still be going: not overdue yet
    early, cursor, _logs = _reconcile(dagster_instance, store, config, {}, midnight + 40 * 60)
    assert early == []
    late, cursor, logs = _reconcile(dagster_instance, store, config, cursor, midnight + 90 * 60 + 1)
    assert [(r.partition_key, r.run_key) for r in late] == [
        (yesterday, f"reconcile:{yesterday}:never-merged:1")
    ], logs


def test_retention_counts_from_the_latest_merge_so_remerged_days_are_cleaned(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """With DEPTH_RAW_RETENTION_DAYS=1, a day re-merged today (D0, four days old) is cleaned a day after that
    re-merge; the old retention schedule only ever looked at the date ``retention`` days back."""
    config = make_config(str(tmp_path / "store"), retention_days=1.0)
    store = open_store(config.store_url)
    _write(store, _plans()[0])
    defs = build_definitions(config)
    assert run_partition(defs, dagster_instance, D0).success
    now = time.time()
    held, cursor, _logs = _reconcile(dagster_instance, store, config, {}, now + 3600)
    assert held == []
    due, cursor, logs = _reconcile(dagster_instance, store, config, cursor, now + 86400 + 60)
    assert [(r.job_name, r.partition_key) for r in due] == [("depth_cleanup", D0)], logs
    assert due[0].run_config["ops"]["cleanup_raw"]["config"]["retention_days"] == 1.0


def _two_symbol_day_v2(store: ObjectStore) -> list[str]:
    """BTCUSDT and ETHUSDT of D0 in layout-2 objects of both streams."""
    from tests.pipeline.v2gen import write_stream_day_v2

    plans = [DayPlan(D0, symbol="BTCUSDT"), DayPlan(D0, symbol="ETHUSDT")]
    written = [write_stream_day_v2(store, stream, plans, session=stream[:2]) for stream in STREAMS]
    return [i.key for objects in written for i in objects]


def test_cleanup_after_a_run_of_chosen_symbols_keeps_the_lines_of_the_others(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """A run of BTCUSDT alone reads the day's layout-2 objects but skips ETHUSDT's lines: it cannot know
    their dates. The cleanup after it keeps every object holding them (it once deleted them all: ETHUSDT's
    day was lost before it was ever merged); the reconcile asks for a run of the whole date, after which the
    cleanup deletes everything and ETHUSDT's day is whole."""
    from depth_core.validated_layout import object_symbol_dates, stream_day_report_key
    from depth_pipeline.sensors import day_state
    from tests.pipeline.helpers import cleanup_output

    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    keys = _two_symbol_day_v2(store)
    defs = build_definitions(config)

    assert run_partition(defs, dagster_instance, D0, "BTCUSDT").success
    report = json.loads(store.get_bytes(stream_day_report_key("spot", "eu-1", D0)))
    assert all(o["undated"] == ["ETHUSDT"] for o in report["objects"])
    # no dates written for it either (400 symbols x 17,280 objects of "[]" would be ~70 MB a report)
    assert not any("ETHUSDT" in o["symbol_event_dates"] for o in report["objects"])
    first = run_cleanup(defs, dagster_instance, D0, "BTCUSDT")
    assert first.success and cleanup_output(first)["deleted"] == []
    assert sorted(cleanup_output(first)["kept_other_date_pending"]) == sorted(keys)
    assert raw_keys(store) == set(keys)
    state = day_state(dagster_instance, store, "spot", STREAMS, D0, 0.0, time.time())
    assert state.reason == "awaiting a run of the whole date" and "ETHUSDT" in state.detail

    # a later run of BTCUSDT alone keeps what an earlier run dated (here: nothing yet), a whole run dates all
    assert run_partition(defs, dagster_instance, D0).success
    report = json.loads(store.get_bytes(stream_day_report_key("spot", "eu-1", D0)))
    assert not any(o.get("undated") for o in report["objects"])
    assert run_partition(defs, dagster_instance, D0, "BTCUSDT", kind="remerge").success
    report = json.loads(store.get_bytes(stream_day_report_key("spot", "eu-1", D0)))
    assert not any(o.get("undated") for o in report["objects"])
    assert all(object_symbol_dates(o, report["version"])["ETHUSDT"] == [D0] for o in report["objects"])
    assert manifest(store, D0, "ETHUSDT")["events"] == 60
    second = run_cleanup(defs, dagster_instance, D0, "ETHUSDT")
    assert second.success and sorted(cleanup_output(second, "ETHUSDT")["deleted"]) == sorted(keys)
    assert raw_keys(store) == set()


def test_an_object_of_stream_wide_notes_only_is_merged_kept_in_meta_and_cleaned(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """A collector cut off from the exchange flushes objects holding only stream-wide notes (connects,
    disconnects). Every symbol-day of the stream-day lists such an object, with its notes in the validated
    ``meta``; the reconcile counts the day as awaiting cleanup until the cleanup deletes it. (No manifest
    listed it before: it stayed in raw/ for ever, and the day counted as done.)"""
    from depth_core.raw_format import RawObjectKey
    from depth_core.storeio import read_parquet
    from depth_core.validate import read_symbol_day_report
    from depth_core.validated_layout import META_FILE, validated_file_key
    from depth_pipeline.sensors import day_state
    from tests.pipeline.helpers import cleanup_output
    from tests.pipeline.v2gen import write_v2

    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    keys = _two_symbol_day_v2(store)
    last_ns = max(RawObjectKey.parse(k).first_receive_ns for k in keys)
    note = {"event": "disconnect", "conn": 3, "reason": "cut off (test)"}
    notes_only = write_v2(store, "ap-1", last_ns + 10**9, (), session="ap", seq=999, notes=[("", note)]).key
    defs = build_definitions(config)

    assert run_partition(defs, dagster_instance, D0).success
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert notes_only in {o["key"] for o in manifest(store, D0, symbol)["raw_objects"]}
        found = read_symbol_day_report(store, "spot", "ap-1", symbol, D0)
        assert found is not None
        meta = read_parquet(store, validated_file_key(found[0], META_FILE))
        assert any(b"cut off (test)" in text for text in meta["text"].to_list()), symbol
    state = day_state(dagster_instance, store, "spot", STREAMS, D0, 0.0, time.time())
    assert state.reason == "awaiting cleanup", state
    cleanup = run_cleanup(defs, dagster_instance, D0, "BTCUSDT")
    assert cleanup.success and notes_only in cleanup_output(cleanup)["deleted"]
    assert raw_keys(store) == set()
