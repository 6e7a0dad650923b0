"""The command lines on a fresh DAGSTER_HOME: Dagster's own ``dagster asset materialize`` and
``depth-pipeline run | cleanup | backfill``, as subprocesses, checked through the instance they recorded."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from depth_pipeline import cli
from depth_store import open_store
from tests.fixtures.dagster import pipeline_env, subprocess_env
from tests.pipeline.helpers import manifest, raw_keys, write_day
from tests.pipeline.rawgen import DayPlan

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
TODAY = dt.datetime.now(dt.UTC).date()
DATE = (TODAY - dt.timedelta(days=2)).isoformat()


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=subprocess_env(env), capture_output=True, text=True, timeout=180, check=False
    )


def test_dagster_cli_and_depth_pipeline_run_and_cleanup_on_a_fresh_home(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    store = open_store(store_url)
    written = set(write_day(store, DayPlan(DATE)))
    home = tmp_path / "home"
    home.mkdir()  # empty: no dagster.yaml
    env = {**pipeline_env(store_url, symbols="BTCUSDT,ETHUSDT"), "DAGSTER_HOME": str(home)}

    materialize = _run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "depth_pipeline.definitions",
            "--select",
            "*",
            "--partition",
            DATE,
        ],
        env,
    )
    assert materialize.returncode == 0, materialize.stderr[-3000:]
    assert {o["key"] for o in manifest(store, DATE)["raw_objects"]} == written

    # the day's symbols are those its raw data holds: DEPTH_SYMBOLS only filters
    run = _run([str(BIN / "depth-pipeline"), "run", "--date", DATE], env)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert f"ok   {DATE} BTCUSDT" in run.stdout and "ETHUSDT" not in run.stdout
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()

    # a named symbol without raw data is reported as such: exit 1
    named = _run([str(BIN / "depth-pipeline"), "run", "--date", DATE, "--symbols", "BTCUSDT,ETHUSDT"], env)
    assert named.returncode == 1, named.stdout + named.stderr[-3000:]
    assert f"ok   {DATE} BTCUSDT" in named.stdout
    assert f"FAIL {DATE} ETHUSDT" in named.stdout and "no raw data" in named.stdout

    # one symbol-day merged and verified, the other never merged: delete the first, refuse the second
    cleanup = _run([str(BIN / "depth-pipeline"), "cleanup", "--date", DATE], env)
    assert cleanup.returncode == 1, cleanup.stdout + cleanup.stderr[-3000:]
    assert f"ok   cleanup {DATE} BTCUSDT" in cleanup.stdout and f"deleted {len(written)}" in cleanup.stdout
    assert f"FAIL cleanup {DATE} ETHUSDT" in cleanup.stdout and "deleted nothing" in cleanup.stdout
    assert raw_keys(store) == set()

    with dg.DagsterInstance.from_config(str(home)) as instance:  # the UI's instance shows every run
        runs = instance.get_runs()
        kinds = sorted(r.tags.get("depth/kind", "asset") for r in runs)
        assert kinds == ["asset", "cleanup", "merge", "merge"]
        assert {r.tags.get("dagster/partition") for r in runs} == {DATE}


def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in pipeline_env(str(tmp_path / "store")).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli.main(["run", "--date", "2024-13-01"]) == 2
    assert "invalid date" in capsys.readouterr().err
    monkeypatch.setenv("DEPTH_SYMBOLS", "BTCUSDT")
    assert cli.main(["cleanup", "--date", DATE, "--symbols", "XRPUSDT"]) == 2
    assert "filtered out by DEPTH_SYMBOLS" in capsys.readouterr().err
    assert cli.main(["backfill", "--start", DATE, "--end", "2024-01-02"]) == 2
    assert "before --start" in capsys.readouterr().err
    assert cli.main(["run", "--date", (TODAY + dt.timedelta(days=1)).isoformat()]) == 2
    assert "in the future" in capsys.readouterr().err
    monkeypatch.setenv("DEPTH_STREAMS", "EU 1")
    assert cli.main(["run", "--date", DATE]) == 2
    assert "invalid collector id" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()  # nothing touched before the arguments are valid


def test_backfill_three_days_two_symbols_runs_in_date_order(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    store = open_store(store_url)
    days = [(TODAY - dt.timedelta(days=n)).isoformat() for n in (4, 3, 2)]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for i, day in enumerate(days):
            # ids chain across midnight; only the first day has a snapshot, so a later day can only be
            # anchored by the book carried from the day before: out-of-order runs would fail day_anchored
            plan = DayPlan(day, symbol=symbol, first_id=1_000_000 + 60 * i)
            write_day(store, plan, with_snapshot=(i == 0))
    home = tmp_path / "home"
    home.mkdir()
    env = {**pipeline_env(store_url, symbols="BTCUSDT,ETHUSDT"), "DAGSTER_HOME": str(home)}
    backfill = _run([str(BIN / "depth-pipeline"), "backfill", "--start", days[0], "--end", days[-1]], env)
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr[-3000:]
    assert "6 of 6 succeeded" in backfill.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
        runs = [r.dagster_run for r in records]
        order = [r.tags["dagster/partition"] for r in runs]
    assert order == days  # one run per date, both symbols inside it
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert manifest(store, days[0], symbol)["opening"]["source"].startswith("snapshot:")
        for day in days[1:]:
            opening = manifest(store, day, symbol)["opening"]
            assert opening["kind"] == "carry", opening


def test_processes_opening_a_fresh_instance_at_once_leave_it_usable(tmp_path: Path) -> None:
    """Two ``depth-pipeline`` commands started together on an empty DAGSTER_HOME must not both create the
    SQLite storage (alembic then sees two schema heads and every later command fails)."""
    home = tmp_path / "home"
    script = (
        "import sys; from depth_pipeline.cli import open_instance\n"
        "sys.stdin.readline()\n"  # all start together
        "with open_instance() as instance: instance.get_runs()\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdin=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    assert [proc.wait(timeout=300) for proc in procs] == [0, 0, 0, 0]
    with sqlite3.connect(home / "history" / "runs.db") as db:
        assert db.execute("select count(*) from alembic_version").fetchone() == (1,)
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()
