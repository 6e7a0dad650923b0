"""``depth-pipeline``: run, back-fill and clean up symbol-days through the Dagster instance in DAGSTER_HOME.

Runs execute in this process but are recorded in the instance, so they show in the UI like any other run.
Exit status: 0 when every symbol-day succeeded, 1 when any failed (or had no raw data, or its cleanup was
refused), 2 for bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from depth_core.names import InvalidNameError, parse_symbols, validate_date
from depth_pipeline.config import ConfigError, PipelineConfig, load_config
from depth_pipeline.keys import MERGED_DEPTH, META_NO_RAW_DATA, TAG_KIND
from depth_pipeline.partitions import partition_key

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
    config_file = home / "dagster.yaml"
    if not config_file.exists():
        if REPO_DAGSTER_YAML.exists():
            shutil.copyfile(REPO_DAGSTER_YAML, config_file)
        else:
            config_file.write_text(FALLBACK_DAGSTER_YAML)
    return home


@dataclass
class DayOutcome:
    """The result of one symbol-day: ``ok``, a one-line message, and the run id."""

    date: str
    symbol: str
    ok: bool
    message: str
    run_id: str


def _failure_text(result: dg.ExecuteInProcessResult) -> tuple[str, bool]:
    """(why the run failed, whether it is the no-raw-data case)."""
    messages: list[str] = []
    no_data = False
    for event in result.all_events:
        if event.event_type != dg.DagsterEventType.STEP_FAILURE:
            continue
        data: Any = event.event_specific_data
        user = getattr(data, "user_failure_data", None)
        if user is not None:
            meta = user.metadata or {}
            if META_NO_RAW_DATA in meta:
                no_data = True
            messages.append(user.description or "failed")
        elif getattr(data, "error", None) is not None:
            messages.append(f"{event.step_key}: {data.error.message.strip().splitlines()[0]}")
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation: Any = event.event_specific_data
            if not evaluation.passed and evaluation.blocking:
                messages.append(f"blocking check {evaluation.check_name} failed")
    return "; ".join(messages) or "run failed", no_data


def _merge_summary(result: dg.ExecuteInProcessResult) -> str:
    for event in result.get_asset_materialization_events():
        data: Any = event.event_specific_data
        materialization: dg.AssetMaterialization | None = getattr(data, "materialization", None)
        if materialization is None or materialization.asset_key != MERGED_DEPTH:
            continue
        meta = materialization.metadata
        parts = []
        for name in ("dagster/row_count", "events", "gaps", "gap_count"):
            if name in meta:
                parts.append(f"{name.removeprefix('dagster/')}={meta[name].value}")
        return ", ".join(parts) or "merged"
    return "succeeded"


def run_days(
    config: PipelineConfig,
    instance: dg.DagsterInstance,
    dates: Sequence[str],
    symbols: Sequence[str],
    kind: str = "merge",
) -> list[DayOutcome]:
    """Validate + merge each symbol-day, dates in order (a day's merge carries into the next)."""
    from depth_pipeline.definitions import build_definitions

    job = build_definitions(config).resolve_job_def("depth_daily")
    outcomes: list[DayOutcome] = []
    for date in dates:
        for symbol in symbols:
            try:
                result = job.execute_in_process(
                    instance=instance,
                    partition_key=str(partition_key(date, symbol)),
                    tags={TAG_KIND: kind},
                    raise_on_error=False,
                )
            except Exception as exc:  # a run that could not even start: report it, go on with the rest
                outcome = DayOutcome(date, symbol, False, f"could not run: {exc}", "-")
                print(f"FAIL {date} {symbol}: {outcome.message}", flush=True)
                outcomes.append(outcome)
                continue
            if result.success:
                outcome = DayOutcome(date, symbol, True, _merge_summary(result), result.run_id)
            else:
                why, no_data = _failure_text(result)
                message = f"no raw data: {why}" if no_data else why
                outcome = DayOutcome(date, symbol, False, message, result.run_id)
            print(
                f"{'ok  ' if outcome.ok else 'FAIL'} {date} {symbol} run {outcome.run_id}: {outcome.message}",
                flush=True,
            )
            outcomes.append(outcome)
    return outcomes


def cleanup_days(
    config: PipelineConfig,
    instance: dg.DagsterInstance,
    date: str,
    symbols: Sequence[str],
    retention_days: float | None = None,
) -> list[DayOutcome]:
    """Run the gated cleanup job for each symbol of ``date``."""
    from depth_pipeline.definitions import build_definitions

    job = build_definitions(config).resolve_job_def("depth_cleanup")
    retention = config.retention_days if retention_days is None else retention_days
    outcomes: list[DayOutcome] = []
    for symbol in symbols:
        result = job.execute_in_process(
            instance=instance,
            partition_key=str(partition_key(date, symbol)),
            run_config={"ops": {"cleanup_raw": {"config": {"retention_days": retention}}}},
            raise_on_error=False,
        )
        if result.success:
            summary = result.output_for_node("cleanup_raw")
            from depth_pipeline.cleanup import CleanupResult

            message = CleanupResult(**summary).summary()
            outcome = DayOutcome(date, symbol, True, message, result.run_id)
        else:
            outcome = DayOutcome(date, symbol, False, _failure_text(result)[0], result.run_id)
        print(
            f"{'ok  ' if outcome.ok else 'FAIL'} cleanup {date} {symbol} run {outcome.run_id}: {outcome.message}",
            flush=True,
        )
        outcomes.append(outcome)
    return outcomes


def _symbols(arg: str | None, config: PipelineConfig) -> list[str]:
    if not arg:
        return list(config.symbols)
    chosen = parse_symbols(arg)
    unknown = [s for s in chosen if s not in config.symbols]
    if unknown:
        raise UsageError(
            f"symbols {', '.join(unknown)} are not partition keys (DEPTH_SYMBOLS={','.join(config.symbols)})"
        )
    return chosen


def _date(text: str, config: PipelineConfig) -> str:
    date = validate_date(text)
    if date < config.start_date:
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
    run = sub.add_parser("run", help="validate every stream and merge one date, one run per symbol")
    run.add_argument("--date", required=True, help="UTC date YYYY-MM-DD")
    run.add_argument("--symbols", help="comma-separated subset of DEPTH_SYMBOLS (default: all)")
    backfill = sub.add_parser(
        "backfill", help="run every date from --start to --end (inclusive), in date order"
    )
    backfill.add_argument("--start", required=True)
    backfill.add_argument("--end", required=True)
    backfill.add_argument("--symbols")
    cleanup = sub.add_parser("cleanup", help="gated deletion of the raw objects a verified merge consumed")
    cleanup.add_argument("--date", required=True)
    cleanup.add_argument("--symbols")
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
    home = ensure_dagster_home()
    print(f"Dagster instance: {home}", flush=True)
    with dg.DagsterInstance.get() as instance:
        if args.command == "cleanup":
            outcomes = cleanup_days(config, instance, dates[0], symbols, args.retention_days)
        else:
            outcomes = run_days(
                config, instance, dates, symbols, "backfill" if args.command == "backfill" else "merge"
            )
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} succeeded", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
