"""Jobs: the daily asset job (validate every stream, merge, derive) and the gated cleanup job.

Both are partitioned like the assets (``date|symbol``), so a run is one symbol-day, a backfill is a
date range x symbols, and the run queue's tag limits bound how many merges run at once.
"""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from depth_pipeline.cleanup import cleanup_symbol_day
from depth_pipeline.keys import TAG_KIND
from depth_pipeline.partitions import split_partition_key
from depth_pipeline.resources import DepthSettingsResource, DepthStoreResource

DAILY_JOB_NAME = "depth_daily"
CLEANUP_JOB_NAME = "depth_cleanup"


class CleanupConfig(dg.Config):
    """``retention_days``: keep merged raw objects this long after the merge (0 deletes at once)."""

    retention_days: float = 0.0


def build_daily_job(selection: dg.AssetSelection) -> UnresolvedAssetJobDefinition:
    """Validate every stream, merge, and derive, for one symbol-day per run."""
    return dg.define_asset_job(
        DAILY_JOB_NAME,
        selection=selection,
        tags={TAG_KIND: "merge", "depth/merge": "1"},
        description="Validate every stream, merge them by update id, and derive outputs for one symbol-day.",
    )


@dg.op(
    description="Delete the raw objects of this symbol-day's verified merge (manifest key + size/etag), "
    "keeping anything that arrived later; deletes nothing unless the merge succeeded with blocking checks "
    "passed.",
)
def cleanup_raw(
    context: dg.OpExecutionContext,
    config: CleanupConfig,
    store: DepthStoreResource,
    settings: DepthSettingsResource,
) -> dict:
    date, symbol = split_partition_key(context.partition_key)
    result = cleanup_symbol_day(
        context.instance,
        store.open(),
        settings.market_name,
        settings.streams,
        symbol,
        date,
        retention_days=config.retention_days,
    )
    context.log.info(result.summary())
    context.add_output_metadata(
        {
            "summary": result.summary(),
            "deleted": len(result.deleted),
            "already_absent": len(result.already_absent),
            "kept_later_arrivals": len(result.kept_later_arrivals),
            "kept_other_date_pending": len(result.kept_other_date_pending),
            "kept_retention": len(result.kept_retention),
            "kept_changed": len(result.kept_changed),
        }
    )
    if not result.ok:
        raise dg.Failure(description=result.summary(), metadata={"reason": result.reason})
    if result.kept_changed:
        raise dg.Failure(description=result.summary(), metadata={"changed": result.kept_changed})
    return result.to_dict()


def build_cleanup_job(partitions_def: dg.PartitionsDefinition, retention_days: float) -> dg.JobDefinition:
    """The cleanup of one symbol-day, partitioned like the assets."""

    @dg.job(
        name=CLEANUP_JOB_NAME,
        partitions_def=partitions_def,
        tags={TAG_KIND: "cleanup"},
        config={"ops": {"cleanup_raw": {"config": {"retention_days": retention_days}}}},
        description="Gated deletion of merged raw objects for one symbol-day.",
    )
    def depth_cleanup() -> None:
        cleanup_raw()

    return depth_cleanup
