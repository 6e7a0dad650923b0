"""The daily schedule: shortly after midnight UTC, one run per symbol for the previous day."""

import datetime as dt

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from depth_pipeline.config import PipelineConfig
from depth_pipeline.keys import TAG_KIND
from depth_pipeline.partitions import partition_key


def build_daily_schedule(config: PipelineConfig, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """At ``DEPTH_SCHEDULE_TIME`` (UTC, default 00:30) request the previous day for every symbol."""

    @dg.schedule(
        name="depth_daily_schedule",
        job=job,
        cron_schedule=f"{config.schedule_minute} {config.schedule_hour} * * *",
        execution_timezone="UTC",
        description="Merge yesterday (UTC) for every configured symbol, one run per symbol.",
    )
    def depth_daily_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        day = (tick.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
        return [
            dg.RunRequest(
                run_key=f"daily:{day}|{symbol}",
                partition_key=str(partition_key(day, symbol)),
                tags={TAG_KIND: "merge"},
            )
            for symbol in config.symbols
        ]

    return depth_daily_schedule
