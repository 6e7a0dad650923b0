"""The Dagster code location ``depth_pipeline.definitions`` (docs/pipeline.md): one ``Definitions`` wiring
the per-domain modules — date partitions, resources, the per-stream asset factory, the day's fanned-out
``merged_depth`` (with its derived assets), the jobs, the daily schedule and the sensors — from the
``DEPTH_*`` environment, read when Dagster loads the definitions (``@dg.definitions``), not at import.
"""

from __future__ import annotations

import dagster as dg

from depth_pipeline.assets.derived import build_derived_assets
from depth_pipeline.assets.merged import build_merged_asset
from depth_pipeline.assets.streams import build_stream_assets
from depth_pipeline.config import PipelineConfig, load_config
from depth_pipeline.daydata import partition_start
from depth_pipeline.jobs import build_cleanup_job, build_daily_job, build_executor
from depth_pipeline.notify import Notifier
from depth_pipeline.partitions import build_partitions
from depth_pipeline.resources import build_resources
from depth_pipeline.schedules import build_daily_schedule, build_retention_cleanup_schedule
from depth_pipeline.sensors import (
    build_cleanup_sensor,
    build_gap_sensor,
    build_late_data_sensor,
    build_raw_arrival_sensor,
    build_reconcile_sensor,
)
from depth_store import open_store


def build_definitions(config: PipelineConfig, notifier: Notifier | None = None) -> dg.Definitions:
    """Everything the pipeline defines, for one configuration (tests build their own).

    The first date partition is ``DEPTH_START_DATE`` or the store's first data date (one small GET)."""
    start = partition_start(open_store(config.store_url), config.market, config.streams, config.start_date)
    partitions_def = build_partitions(start)
    stream_assets = build_stream_assets(config.streams, partitions_def)
    steps = {"symbols_per_step": config.symbols_per_step, "parallel_steps": config.max_parallel_steps}
    day = [build_merged_asset(config.streams, partitions_def, **steps)]
    if config.derived_assets:
        day.append(build_derived_assets(partitions_def, config.streams, **steps))
    executor = build_executor(config)
    validated = [a for a in stream_assets if isinstance(a, dg.AssetsDefinition)]
    daily_selection = dg.AssetSelection.assets(*validated, *day)
    daily_job = build_daily_job(daily_selection, executor)
    cleanup_job = build_cleanup_job(partitions_def, config.retention_days)
    return dg.Definitions(
        assets=[*stream_assets, *day],
        jobs=[daily_job, cleanup_job],
        executor=executor,
        schedules=[
            build_daily_schedule(config, daily_job),
            build_retention_cleanup_schedule(config, cleanup_job),
        ],
        sensors=[
            build_raw_arrival_sensor(config),
            build_gap_sensor(config, notifier),
            build_late_data_sensor(config, daily_job),
            build_cleanup_sensor(cleanup_job, daily_job, config),
            build_reconcile_sensor(config, daily_job, cleanup_job),
        ],
        resources=build_resources(config),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as Dagster loads it (``-m depth_pipeline.definitions``, ``workspace.yaml``, ``dg``):
    the environment is read here, when Dagster loads the definitions, not when the module is imported."""
    return build_definitions(load_config())
