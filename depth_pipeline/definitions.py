"""The Dagster code location ``depth_pipeline.definitions`` (interfaces §2): one ``Definitions`` wiring
the per-domain modules — partitions, resources, the per-stream asset factory, ``merged_depth`` and its
derived assets, the jobs, the daily schedule and the sensors — from the ``DEPTH_*`` environment.
"""

from __future__ import annotations

import dagster as dg

from depth_pipeline.assets.derived import build_derived_assets
from depth_pipeline.assets.merged import build_merged_asset
from depth_pipeline.assets.streams import build_stream_assets
from depth_pipeline.config import PipelineConfig, load_config
from depth_pipeline.jobs import build_cleanup_job, build_daily_job
from depth_pipeline.keys import MERGED_DEPTH, validated_key
from depth_pipeline.notify import Notifier
from depth_pipeline.partitions import build_partitions
from depth_pipeline.resources import build_resources
from depth_pipeline.schedules import build_daily_schedule, build_retention_cleanup_schedule
from depth_pipeline.sensors import (
    build_cleanup_sensor,
    build_gap_sensor,
    build_late_data_sensor,
    build_raw_arrival_sensor,
)


def build_definitions(config: PipelineConfig, notifier: Notifier | None = None) -> dg.Definitions:
    """Everything the pipeline defines, for one configuration (tests build their own)."""
    partitions_def = build_partitions(config)
    stream_assets = build_stream_assets(config.streams, partitions_def)
    merged = build_merged_asset(config.streams, partitions_def)
    derived = build_derived_assets(partitions_def, config.streams) if config.derived_assets else []
    daily_selection = dg.AssetSelection.assets(
        *(validated_key(s) for s in config.streams), MERGED_DEPTH, *(a.key for a in derived)
    )
    daily_job = build_daily_job(daily_selection)
    cleanup_job = build_cleanup_job(partitions_def, config.retention_days)
    return dg.Definitions(
        assets=[*stream_assets, merged, *derived],
        jobs=[daily_job, cleanup_job],
        schedules=[
            build_daily_schedule(config, daily_job),
            build_retention_cleanup_schedule(config, cleanup_job),
        ],
        sensors=[
            build_raw_arrival_sensor(config),
            build_gap_sensor(config, notifier),
            build_late_data_sensor(config, daily_job),
            build_cleanup_sensor(cleanup_job),
        ],
        resources=build_resources(config),
    )


defs = build_definitions(load_config())
