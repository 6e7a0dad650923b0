"""The daily schedule: shortly after midnight UTC, one run for the previous day (all its symbols)."""

import datetime as dt

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from depth_core.days import previous_day
from depth_pipeline.config import PipelineConfig
from depth_pipeline.jobs import cleanup_run_request, day_run_request


def build_daily_schedule(config: PipelineConfig, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """At ``DEPTH_SCHEDULE_TIME`` (UTC, default 00:30) request the previous day: one run, every symbol."""

    @dg.schedule(
        name="depth_daily_schedule",
        job=job,
        cron_schedule=f"{config.schedule_minute} {config.schedule_hour} * * *",
        execution_timezone="UTC",
        description="Merge yesterday (UTC): one run, every symbol its raw data holds "
        "(DEPTH_SYMBOLS filters).",
    )
    def depth_daily_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        day = previous_day(tick.astimezone(dt.UTC).date().isoformat())
        return [day_run_request(day, reason="merge", run_key=f"daily:{day}")]

    return depth_daily_schedule


def build_retention_cleanup_schedule(
    config: PipelineConfig, cleanup_job: dg.JobDefinition
) -> dg.ScheduleDefinition:
    """With ``DEPTH_RAW_RETENTION_DAYS`` > 0, the cleanup right after a merge keeps the raw objects; this
    schedule runs the (still fully gated) cleanup again once their retention is over."""

    @dg.schedule(
        name="depth_retention_cleanup_schedule",
        job=cleanup_job,
        cron_schedule=f"{config.schedule_minute} {(config.schedule_hour + 2) % 24} * * *",
        execution_timezone="UTC",
        description="Gated cleanup of the symbol-days whose raw-object retention ended (only when "
        "DEPTH_RAW_RETENTION_DAYS > 0).",
    )
    def depth_retention_cleanup_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> list[dg.RunRequest] | dg.SkipReason:
        if config.retention_days <= 0:
            return dg.SkipReason(
                "DEPTH_RAW_RETENTION_DAYS is 0: the cleanup after each merge deletes at once"
            )
        tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        lag = int(config.retention_days) + (0 if config.retention_days.is_integer() else 1) + 1
        day = (tick.astimezone(dt.UTC).date() - dt.timedelta(days=lag)).isoformat()
        return [
            cleanup_run_request(day, run_key=f"retention-cleanup:{day}", retention_days=config.retention_days)
        ]

    return depth_retention_cleanup_schedule
