"""One writer per day (issue 14): the store lease refuses a second writer of a date and names the holder,
takes over an expired lease or one whose run finished, and two ``depth-pipeline run --date D`` started at once
with a late object arriving, then a cleanup, lose nothing."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from depth_core.layout import merged_day_prefix
from depth_core.raw_format import LineKind
from depth_core.storeio import read_parquet
from depth_pipeline import lease
from depth_store import ObjectStore, open_store
from tests.fixtures.dagster import pipeline_env, subprocess_env
from tests.pipeline.helpers import manifest, raw_keys, write_day
from tests.pipeline.rawgen import DayPlan, write_object

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
DATE = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)).isoformat()


def test_lease_refuses_a_second_writer_naming_the_holder_and_is_taken_over_only_when_free(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    store = open_store(str(tmp_path / "store"))
    first = lease.acquire(store, "spot", DATE, "run-a", seconds=60)
    assert lease.acquire(store, "spot", DATE, "run-a", seconds=60).holder == "run-a"  # re-entrant: same run
    with pytest.raises(lease.LeaseHeldError, match=f"{DATE} is being written by run run-a"):
        lease.acquire(store, "spot", DATE, "run-b", seconds=60)
    assert lease.acquire(store, "spot", "2026-01-02", "run-b", seconds=60)  # another date is free
    # an expired lease is taken over; the old holder notices when it tries to renew
    expired = lease.acquire(store, "spot", DATE, "run-a", seconds=-1)
    taken = lease.acquire(store, "spot", DATE, "run-b", seconds=60)
    assert taken.holder == "run-b" and not lease.renew(store, expired) and not lease.renew(store, first)
    # a lease whose run the instance knows as finished is free, even before it expires
    run = dagster_instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
    assert lease.release_day_lease(store, "spot", DATE, "run-b")
    lease.acquire(store, "spot", DATE, run.run_id, seconds=600)
    with pytest.raises(lease.LeaseHeldError):
        lease.acquire(store, "spot", DATE, "run-d", instance=dagster_instance, seconds=600)
    dagster_instance.report_run_failed(run)
    assert (
        lease.acquire(store, "spot", DATE, "run-d", instance=dagster_instance, seconds=600).holder == "run-d"
    )
    assert not lease.release_day_lease(store, "spot", DATE, run.run_id)  # not the holder: nothing released
    assert lease.release_day_lease(store, "spot", DATE, "run-d")
    assert store.head(lease.day_lease_key("spot", DATE)) is None


def _merged_ids(store: ObjectStore) -> set[int]:
    files = [
        i.key for i in store.list(merged_day_prefix("spot", "BTCUSDT", DATE)) if i.key.endswith(".parquet")
    ]
    if not files:
        return set()
    frame = pl.concat([read_parquet(store, k) for k in files]).filter(~pl.col("is_snapshot"))
    return set(frame["last_update_id"].to_list())


def _raw_ids(store: ObjectStore, keys: set[str], plan: DayPlan, late: dict[str, set[int]]) -> set[int]:
    """Update ids held by the raw objects still in the store (the day's plan, the late object's own)."""
    ids: set[int] = set()
    for key in keys:
        ids |= late.get(key, set()) or {plan.first_id + i for i in range(plan.events)}
    return ids


def test_two_runs_of_a_date_at_once_with_a_late_object_then_cleanup_lose_nothing(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    store = open_store(store_url)
    plan = DayPlan(DATE)
    write_day(store, plan)  # eu-1 misses 10..13, ap-1 misses 30..32: together every id of 0..59
    home = tmp_path / "home"
    home.mkdir()
    env = subprocess_env({**pipeline_env(store_url), "DAGSTER_HOME": str(home)})
    cmd = [str(BIN / "depth-pipeline"), "run", "--date", DATE]
    runs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    # while they run, a cut-off collector uploads ids no stream had yet (60..64)
    spool = [plan.event(i) for i in range(60, 65)]
    late_key = write_object(
        store, "eu-1", "BTCUSDT", [(ns, LineKind.DEPTH, frame) for ns, frame in spool], session="late"
    ).key
    late_ids = {plan.first_id + i for i in range(60, 65)}
    outputs = [p.communicate(timeout=600)[0] for p in runs]
    codes = [p.returncode for p in runs]
    assert 0 in codes, outputs
    for code, out in zip(codes, outputs, strict=True):
        # the other one either ran after the first (the lease was free again) or was refused naming the holder
        assert code == 0 or "is being written by run" in out, out

    cleanup = subprocess.run(
        [str(BIN / "depth-pipeline"), "cleanup", "--date", DATE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    # nothing lost: every id is in the published day or still in a raw object the cleanup kept
    left = raw_keys(store)
    assert _merged_ids(store) | _raw_ids(store, left, plan, {late_key: late_ids}) == {
        plan.first_id + i for i in range(65)
    }
    assert {o["key"] for o in manifest(store, DATE)["raw_objects"]}.isdisjoint(left - {late_key})

    # the re-merge the late-data sensor asks for, then its cleanup: everything merged, raw empty
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    done = subprocess.run(
        [str(BIN / "depth-pipeline"), "cleanup", "--date", DATE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _merged_ids(store) == {plan.first_id + i for i in range(65)}
    assert raw_keys(store) == set()
    assert store.head(lease.day_lease_key("spot", DATE)) is None  # released by the runs' last steps


def test_lease_of_a_killed_writer_on_this_host_is_taken_over(tmp_path: Path) -> None:
    """A ``depth-pipeline run`` killed with SIGKILL leaves its run STARTED and its lease unexpired: once its
    processes are gone, the next run of the date takes the lease over."""
    store_url = str(tmp_path / "store")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom depth_pipeline import lease\nfrom depth_store import open_store\n"
            f"lease.acquire(open_store({store_url!r}), 'spot', {DATE!r}, 'killed-run', seconds=600)\n"
            "print('held', flush=True)\nsys.stdin.read()",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    store = open_store(store_url)
    with pytest.raises(lease.LeaseHeldError, match="killed-run"):
        lease.acquire(store, "spot", DATE, "next-run", seconds=600)
    holder.kill()
    holder.wait(30)
    assert lease.acquire(store, "spot", DATE, "next-run", seconds=600).holder == "next-run"


def test_a_killed_run_does_not_block_the_next_run_of_its_date(tmp_path: Path) -> None:
    """kill -9 of ``depth-pipeline run`` (multiprocess steps) mid-way leaves its run STARTED, its pool slots
    taken and its lease held; the next run of the date marks it failed, gets the slots and the lease back,
    and merges the day."""
    import os
    import signal

    store_url = str(tmp_path / "store")
    store = open_store(store_url)
    write_day(store, DayPlan(DATE))
    home = tmp_path / "home"
    home.mkdir()
    env = subprocess_env(
        {**pipeline_env(store_url), "DAGSTER_HOME": str(home), "DEPTH_MAX_PARALLEL_STEPS": "2"}
    )
    cmd = [str(BIN / "depth-pipeline"), "run", "--date", DATE]
    first = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not any(True for _ in store.list("validated/")) and first.poll() is None:
        assert time.monotonic() < deadline, "the run wrote nothing in 300 s"
        time.sleep(0.05)  # polling the store for the run's first output
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = sorted(r.status.value for r in instance.get_runs())
    assert statuses in (["FAILURE", "SUCCESS"], ["SUCCESS", "SUCCESS"]), (
        statuses
    )  # killed before or after its end
    assert _merged_ids(store) == {plan_id for plan_id in range(1_000_000, 1_000_060)}
