"""``merged_depth``: the verified, gap-free symbol-day that analysts load (interfaces §3).

Every validated stream of the symbol-day is arbitrated along the update-id line: each id range is taken
from whichever stream has it (earliest receive wins), ids no stream has are a recorded gap re-anchored
from the next usable snapshot, and the day opens with a book image carried from the previous day's end
state (hence the dependency on its own previous date partition) or from the day's first snapshot. The
Parquet and the ``_coverage_manifest.json`` (every raw object consumed, with size and etag) are written to
``merged/market=/symbol=/date=/``; the manifest is what the gated cleanup deletes by.
"""

from typing import Any

import dagster as dg

from depth_core.schema import merged_manifest_key
from depth_pipeline.checks import MERGED_CHECKS, check_results, check_specs
from depth_pipeline.keys import (
    MERGED_DEPTH,
    META_BLOCKING_PASSED,
    META_MANIFEST_ETAG,
    META_MANIFEST_KEY,
    META_NO_RAW_DATA,
    validated_key,
)
from depth_pipeline.metadata import frame_preview, report_metadata
from depth_pipeline.partitions import previous_day_mapping, split_partition_key
from depth_pipeline.resources import DepthSettingsResource, DepthStoreResource


def _markdown(report: Any, symbol: str, date: str) -> str:
    md = getattr(report, "markdown", None) or getattr(report, "summary_markdown", None)
    if callable(md):
        md = md()
    if md:
        return str(md)
    return f"**{symbol} {date}**: {getattr(report, 'rows', 0)} rows, {getattr(report, 'events', 0)} events"


def build_merged_asset(
    streams: list[str] | tuple[str, ...], partitions_def: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    """The ``merged_depth`` asset over the given streams."""

    @dg.asset(
        key=MERGED_DEPTH,
        deps=[
            *(validated_key(s) for s in streams),
            dg.AssetDep(MERGED_DEPTH, partition_mapping=previous_day_mapping()),
        ],
        partitions_def=partitions_def,
        group_name="merged",
        kinds={"parquet", "polars"},
        pool="depth_merge",
        op_tags={"depth/merge": "1"},
        check_specs=check_specs(MERGED_DEPTH, MERGED_CHECKS),
        description=(
            "Order-book deltas of one symbol-day merged across all collector streams by update id: one "
            "row per price-level change (interfaces §3), sorted by last_update_id, opening with a book "
            "image; each id range from the stream that received it first; gaps only where no stream had "
            "the ids. Beside it, `_coverage_manifest.json` lists covered ranges, gaps and every raw "
            "object consumed."
        ),
    )
    def merged_depth(
        context: dg.AssetExecutionContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.MaterializeResult:
        from depth_core.merge import merge_symbol_day  # the core loads only when a run needs it

        date, symbol = split_partition_key(context.partition_key)
        object_store = store.open()
        report = merge_symbol_day(object_store, settings.market_name, symbol, date, list(streams))
        summary = report.to_dict()
        events = int(getattr(report, "events", summary.get("events", 0)) or 0)
        if events == 0:
            raise dg.Failure(
                description=f"no raw data for {symbol} {date}: no stream of {', '.join(streams)} has a "
                "diff-depth event for this symbol-day",
                metadata={META_NO_RAW_DATA: True, "symbol": symbol, "date": date},
            )
        results, blocking_ok = check_results(MERGED_DEPTH, MERGED_CHECKS, getattr(report, "checks", []))
        manifest_key = merged_manifest_key(settings.market_name, symbol, date)
        if blocking_ok and not report.published:
            # checks passed but the version was refused (smaller than the published one, or a racing
            # publish): fail loudly; the published day is untouched
            raise dg.Failure(
                description=f"merge of {symbol} {date} not published: {report.refused_reason}",
                metadata={"refused_reason": str(report.refused_reason), "shrink": summary.get("shrink") or {},
                          "version": report.version, "symbol": symbol, "date": date},
            )
        # the summary and the figures people look for first, then every field of the report
        metadata: dict[str, dg.MetadataValue] = {
            "summary": dg.MetadataValue.md(_markdown(report, symbol, date)),
            "dagster/row_count": dg.MetadataValue.int(int(getattr(report, "rows", 0) or 0)),
            "events": dg.MetadataValue.int(events),
            "gap_count": dg.MetadataValue.int(int(summary.get("gap_count", 0) or 0)),
            "coverage": dg.MetadataValue.float(float(summary.get("coverage", 0.0) or 0.0)),
        }
        preview = getattr(report, "preview", None)
        if preview is not None:
            metadata["preview"] = frame_preview(preview)
        for name, value in report_metadata(summary, skip=("preview", "markdown", "checks")).items():
            metadata.setdefault(name, value)
        metadata.update(
            {
                META_BLOCKING_PASSED: dg.MetadataValue.bool(blocking_ok),
                META_MANIFEST_KEY: dg.MetadataValue.text(manifest_key),
                # the etag returned by this run's own manifest write (empty if it published nothing)
                META_MANIFEST_ETAG: dg.MetadataValue.text(report.manifest_etag or ""),
            }
        )
        context.log.info(
            f"merged {symbol} {date}: {events} events, blocking checks {'passed' if blocking_ok else 'FAILED'}"
        )
        return dg.MaterializeResult(metadata=metadata, check_results=results)

    return merged_depth
