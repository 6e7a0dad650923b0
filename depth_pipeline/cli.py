"""``depth-pipeline``: run, back-fill and clean up dates through the Dagster instance in DAGSTER_HOME.

One run per date: its symbols fan out as steps on the job's executor (``multiprocess_executor``, up to
``DEPTH_MAX_PARALLEL_STEPS`` processes; 1 runs in this process). Runs are recorded in the instance, so they
show in the UI like any other run. One line per symbol-day is printed. Exit status: 0 when every
symbol-day succeeded, 1 when any failed (or a named symbol had no raw data, or its cleanup was refused, or
another run holds the date), 2 for bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from depth_core.names import InvalidNameError, parse_symbols, validate_date
from depth_pipeline.config import ConfigError, PipelineConfig, load_config
from depth_pipeline.daydata import record_first_date
from depth_pipeline.jobs import (
    CLEANUP_JOB_NAME,
    DAILY_JOB_NAME,
    cleanup_run_config,
    day_run_config,
    day_run_tags,
)
from depth_pipeline.outcomes import merged_materializations
from depth_pipeline.resources import load_step_result
from depth_store import open_store

REPO_DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"
FALLBACK_DAGSTER_YAML = """\
# Embedded default instance (written by depth-pipeline into an empty DAGSTER_HOME).
run_queue:
  max_concurrent_runs: 2
telemetry:
  enabled: false
nux:
  enabled: false
"""


class UsageError(Exception):
    """Bad arguments: exit status 2."""


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default ``./dagster_home``), created, with the repo's dagster.yaml if it has none."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    with _home_lock(home):
        config_file = home / "dagster.yaml"
        if not config_file.exists():
            text = REPO_DAGSTER_YAML.read_text() if REPO_DAGSTER_YAML.exists() else FALLBACK_DAGSTER_YAML
            partial = home / f".dagster.yaml.{os.getpid()}"
            partial.write_text(text)
            partial.replace(config_file)
    return home


@contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    """An exclusive lock on DAGSTER_HOME, held while its files are first created."""
    with open(home / ".depth-pipeline.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def open_instance() -> Iterator[dg.DagsterInstance]:
    """The Dagster instance in DAGSTER_HOME (see ``ensure_dagster_home``).

    Opening an instance creates its storage when it is new; two processes doing that at once on a fresh
    SQLite home both stamp the schema version, and every later command then fails with "alembic_version has
    more than one head". So the opening is serialised by a lock file in DAGSTER_HOME (two ``depth-pipeline
    run`` started together is a normal thing to do); the runs themselves are not.
    """
    home = ensure_dagster_home()
    with _home_lock(home):
        instance = dg.DagsterInstance.get()
    with instance:
        yield instance


@dataclass
class DayOutcome:
    """The result of one symbol-day (or of a whole date, ``symbol`` "*", when its run recorded none)."""

    date: str
    symbol: str
    ok: bool
    message: str
    run_id: str


def daily_job() -> dg.JobDefinition:
    """The daily job of this process's configuration; module-level so Dagster can rebuild it in each step
    process of the multiprocess executor (``dg.reconstructable``)."""
    from depth_pipeline.definitions import build_definitions

    return build_definitions(load_config()).resolve_job_def(DAILY_JOB_NAME)


def daily_job_in_process() -> dg.JobDefinition:
    """The daily job with every step in the run's own process: for a run that can have one merge batch
    only, where step processes would add nothing but their start-up (≈ 3 CPU-s each)."""
    from dataclasses import replace

    from depth_pipeline.definitions import build_definitions

    return build_definitions(replace(load_config(), max_parallel_steps=1)).resolve_job_def(DAILY_JOB_NAME)


def one_batch_at_most(symbols: Sequence[str] | None, config: PipelineConfig) -> bool:
    """Whether a run can hold one merge batch at most: the symbols named, or the DEPTH_SYMBOLS filter, are
    no more than one step takes (DEPTH_SYMBOLS_PER_STEP, or its automatic size; derive batches likewise)."""
    from depth_pipeline.assets.merged import step_size

    bound = len(symbols) if symbols else len(config.symbols) if config.symbols else None
    return bound is not None and bound <= step_size(bound, config.symbols_per_step, config.max_parallel_steps)


def cleanup_job() -> dg.JobDefinition:
    from depth_pipeline.definitions import build_definitions

    return build_definitions(load_config()).resolve_job_def(CLEANUP_JOB_NAME)


def _failure_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Why a run failed: its step failures (user descriptions first) and failed blocking checks."""
    messages: list[str] = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data: Any = event.event_specific_data if event else None
        user = getattr(data, "user_failure_data", None)
        if user is not None:
            messages.append(user.description or "failed")
        elif getattr(data, "error", None) is not None:
            messages.append(
                f"{event.step_key if event else '?'}: {data.error.message.strip().splitlines()[0]}"
            )
    return "; ".join(messages) or "run failed"


def _day_table(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, Any]]:
    """The per-symbol rows the run recorded on ``merged_depth`` (empty if it recorded none)."""
    for materialization in merged_materializations(instance, run_id):
        table: Any = materialization.metadata.get("symbol_outcomes")
        if table is not None:
            return [dict(r.data) for r in table.value.records]
    return []


def _launch(
    instance: dg.DagsterInstance, job_fn: Any, date: str, run_config: dict[str, Any], tags: dict[str, str]
) -> str:
    """Execute one date's run through the instance (the job's own executor: multiprocess fan-out, or
    in-process with DEPTH_MAX_PARALLEL_STEPS=1); returns the run id."""
    reap_dead_runs(instance, date)
    result = dg.execute_job(
        dg.reconstructable(job_fn),
        instance=instance,
        run_config=run_config,
        tags={**tags, "dagster/partition": date, TAG_LAUNCHER: f"{socket.gethostname()}:{os.getpid()}"},
        raise_on_error=False,
    )
    return result.run_id


TAG_LAUNCHER = "depth/launcher"  # host:pid of the depth-pipeline process that executes the run
_UNFINISHED = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


def reap_dead_runs(instance: dg.DagsterInstance, date: str) -> list[str]:
    """Mark failed the runs of ``date`` that a ``depth-pipeline`` process on this host executed and that
    died with it (kill -9: no daemon watches runs executed outside the queue), and give back the pool
    slots they held — else the next run of the date waits for those slots for ever. Returns their ids."""
    host = socket.gethostname()
    reaped = []
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/partition": date}, statuses=list(_UNFINISHED))
    )
    for run in runs:
        launcher_host, _, pid_text = run.tags.get(TAG_LAUNCHER, "").partition(":")
        if launcher_host != host or not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        instance.report_run_failed(run, message=f"its depth-pipeline process (pid {pid_text}) is gone")
        reaped.append(run.run_id)
    for run_id in reaped:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        print(f"marked run {run_id} of {date} failed: its depth-pipeline process died", flush=True)
    return reaped


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_days(
    instance: dg.DagsterInstance,
    dates: Sequence[str],
    symbols: Sequence[str] | None,
    kind: str = "merge",
    allow_shrink: str = "",
) -> list[DayOutcome]:
    """One run per date, dates in order (a day's merge carries into the next); one outcome per symbol."""
    outcomes: list[DayOutcome] = []
    job_fn = daily_job_in_process if one_batch_at_most(symbols, load_config()) else daily_job
    for date in dates:
        try:
            run_id = _launch(
                instance,
                job_fn,
                date,
                day_run_config(symbols, allow_shrink),
                day_run_tags(date, symbols, kind),
            )
        except Exception as exc:  # a run that could not even start: report it, go on with the rest
            outcome = DayOutcome(date, "*", False, f"could not run: {exc}", "-")
            print(f"FAIL {date}: {outcome.message}", flush=True)
            outcomes.append(outcome)
            continue
        run = instance.get_run_by_id(run_id)
        rows = _day_table(instance, run_id)
        day: list[DayOutcome] = []
        for row in rows:
            ok = row["status"] == "ok"
            message = (
                f"rows={row['rows']}, events={row['events']}, gaps={row['gaps']}, coverage={row['coverage']}"
                if ok
                else f"{row['status']}: {row['reason']}"
                if row["status"] != "no raw data"
                else str(row["reason"])
            )
            day.append(DayOutcome(date, str(row["symbol"]), ok, message, run_id))
        if not day or (
            run is not None and run.status != dg.DagsterRunStatus.SUCCESS and all(o.ok for o in day)
        ):
            ok = run is not None and run.status == dg.DagsterRunStatus.SUCCESS
            day.append(
                DayOutcome(date, "*", ok, "succeeded" if ok else _failure_text(instance, run_id), run_id)
            )
        for o in day:
            print(f"{'ok  ' if o.ok else 'FAIL'} {date} {o.symbol} run {o.run_id}: {o.message}", flush=True)
        outcomes.extend(day)
    return outcomes


def cleanup_days(
    instance: dg.DagsterInstance, date: str, symbols: Sequence[str] | None, retention_days: float
) -> list[DayOutcome]:
    """The gated cleanup of ``date`` (the symbols named, or every symbol a merge of the date recorded)."""
    from depth_pipeline.cleanup import CleanupResult, decode_results

    run_id = _launch(
        instance,
        cleanup_job,
        date,
        cleanup_run_config(symbols, retention_days),
        day_run_tags(date, symbols, "cleanup"),
    )
    outcomes: list[DayOutcome] = []
    results: dict[str, Any] = decode_results(
        load_step_result(load_config().store_url, run_id, "cleanup_raw") or {}
    )
    refused = _failure_text(instance, run_id) if not results else ""
    for symbol, r in sorted(results.items()):
        result = CleanupResult(**r)
        ok = result.ok and not result.kept_changed
        outcomes.append(DayOutcome(date, symbol, ok, result.summary(), run_id))
    if not outcomes:
        outcomes.append(DayOutcome(date, "*", False, refused, run_id))
    for o in outcomes:
        print(
            f"{'ok  ' if o.ok else 'FAIL'} cleanup {date} {o.symbol} run {o.run_id}: {o.message}", flush=True
        )
    return outcomes


def _symbols(arg: str | None, config: PipelineConfig) -> list[str] | None:
    if not arg:
        return None
    chosen = parse_symbols(arg)
    filtered = [s for s in chosen if not config.wants(s)]
    if filtered:
        raise UsageError(
            f"symbols {', '.join(filtered)} are filtered out by DEPTH_SYMBOLS={','.join(config.symbols)}"
        )
    return chosen


def _date(text: str, config: PipelineConfig) -> str:
    date = validate_date(text)
    if config.start_date and date < config.start_date:
        raise UsageError(f"date {date} is before DEPTH_START_DATE={config.start_date}")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    if date > today:
        raise UsageError(f"date {date} is in the future (today is {today} UTC)")
    return date


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depth-pipeline",
        description="Merge, back-fill and clean up order-book symbol-days through the Dagster instance in "
        "DAGSTER_HOME (configuration from DEPTH_STORE_URL, DEPTH_STREAMS, DEPTH_SYMBOLS, DEPTH_MARKET).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="validate every stream-day and merge every symbol of one date (one run)")
    run.add_argument("--date", required=True, help="UTC date YYYY-MM-DD")
    run.add_argument(
        "--symbols", help="comma-separated symbols to re-run (default: every symbol the day's raw data holds)"
    )
    run.add_argument(
        "--allow-shrink",
        metavar="REASON",
        default="",
        help="publish a re-merge even if it covers fewer update ids or streams than the published day "
        "(the reason is recorded in the manifest)",
    )
    backfill = sub.add_parser(
        "backfill", help="run every date from --start to --end (inclusive), in date order"
    )
    backfill.add_argument("--start", required=True)
    backfill.add_argument("--end", required=True)
    backfill.add_argument("--symbols")
    cleanup = sub.add_parser("cleanup", help="gated deletion of the raw objects a verified merge consumed")
    cleanup.add_argument("--date", required=True)
    cleanup.add_argument("--symbols", help="comma-separated symbols (default: every symbol merged that day)")
    cleanup.add_argument("--retention-days", type=float, help="keep raw objects this long after the merge")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config()
        symbols = _symbols(args.symbols, config)
        if args.command == "backfill":
            start, end = _date(args.start, config), _date(args.end, config)
            if end < start:
                raise UsageError(f"--end {end} is before --start {start}")
            first = dt.date.fromisoformat(start)
            dates = [
                (first + dt.timedelta(days=i)).isoformat()
                for i in range((dt.date.fromisoformat(end) - first).days + 1)
            ]
        else:
            dates = [_date(args.date, config)]
    except (UsageError, ConfigError, InvalidNameError) as exc:
        print(f"depth-pipeline: {exc}", file=sys.stderr)
        return 2
    print(f"Dagster instance: {ensure_dagster_home()}", flush=True)
    # the first date partition must reach back to the dates asked for (a new install starts at its data)
    store = open_store(config.store_url)
    record_first_date(store, config.market, dates[0])
    with open_instance() as instance:
        if args.command == "cleanup":
            retention = config.retention_days if args.retention_days is None else args.retention_days
            outcomes = cleanup_days(instance, dates[0], symbols, retention)
        else:
            outcomes = run_days(
                instance,
                dates,
                symbols,
                "backfill" if args.command == "backfill" else "merge",
                getattr(args, "allow_shrink", "") or "",
            )
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} succeeded", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
