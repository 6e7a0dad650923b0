"""Assets derived from ``merged_depth``: the top-25 book every second and the data-quality report.

Both read only what the merge and the validation wrote (never raw objects), so they can be rebuilt at
any time, also after the raw objects were cleaned up.
"""

import dagster as dg

from depth_pipeline.keys import BOOK_TOP25_1S, MERGED_DEPTH, QUALITY_REPORT, validated_key
from depth_pipeline.metadata import frame_preview, report_metadata
from depth_pipeline.partitions import split_partition_key
from depth_pipeline.resources import DepthSettingsResource, DepthStoreResource


def _top_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=BOOK_TOP25_1S,
        deps=[MERGED_DEPTH],
        partitions_def=partitions_def,
        group_name="derived",
        kinds={"parquet", "polars"},
        pool="depth_derive",
        description=(
            "The best 25 bid and ask levels (price, qty) once per second of the symbol-day, sampled from the "
            "replayed merged book: a small, ready-to-use table under "
            "`derived/book_top25_1s/market=/symbol=/date=/` for analysts who do not need every change."
        ),
    )
    def book_top25_1s(
        context: dg.AssetExecutionContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.MaterializeResult:
        from depth_core.topbook import write_top_day  # the core loads only when a run needs it

        date, symbol = split_partition_key(context.partition_key)
        key, table = write_top_day(store.open(), settings.market_name, symbol, date)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(table.height),
                "key": dg.MetadataValue.text(key),
                "preview": frame_preview(table.select(table.columns[:8])),
            }
        )

    return book_top25_1s


def _quality_asset(
    streams: list[str] | tuple[str, ...], partitions_def: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(
        key=QUALITY_REPORT,
        deps=[MERGED_DEPTH, *(validated_key(s) for s in streams)],
        partitions_def=partitions_def,
        group_name="derived",
        kinds={"png", "markdown"},
        pool="depth_derive",
        description=(
            "Per symbol-day data-quality report: when each stream delivered, its silences and id gaps, "
            "receive latency over the day, and which stream supplied the merged day, as a PNG and markdown "
            "under `quality/market=/symbol=/date=/`."
        ),
    )
    def depth_quality_report(
        context: dg.AssetExecutionContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.MaterializeResult:
        from depth_core.quality import load_quality_input, write_quality_report

        date, symbol = split_partition_key(context.partition_key)
        object_store = store.open()
        inp = load_quality_input(object_store, settings.market_name, symbol, date, list(settings.streams))
        report = write_quality_report(object_store, inp)
        metadata = report_metadata(report.summary)
        metadata["report"] = dg.MetadataValue.md(report.markdown_with_inline_png())
        metadata.update({f"{name}_key": dg.MetadataValue.text(k) for name, k in report.keys.items()})
        return dg.MaterializeResult(metadata=metadata)

    return depth_quality_report


def build_derived_assets(
    partitions_def: dg.PartitionsDefinition, streams: list[str] | tuple[str, ...]
) -> list[dg.AssetsDefinition]:
    """``book_top25_1s`` and ``depth_quality_report`` on the given partitions."""
    return [_top_asset(partitions_def), _quality_asset(streams, partitions_def)]
