"""Per-stream assets, made by one factory over ``DEPTH_STREAMS``.

``raw/<stream>`` is external: the collector with that id writes it (raw objects, docs/raw-format.md);
the pipeline only observes it. ``validated/<stream>`` is that stream's symbol-day after validation:
typed Parquet of the day's events (an event belongs to the UTC day of its exchange time ``E``),
malformed lines quarantined with their reason, exact duplicates dropped, plus the stream's continuity
segments, gaps, counts, receive latency and clock offset.

``validated/`` is the durable, verified copy of each stream: the gated cleanup deletes raw objects after a
verified merge but never validated output. Re-validating a day whose raw objects were deleted (late objects
arrived, the late-data sensor asked for a re-merge) carries the deleted objects' validated rows over and adds
a fresh parse of the raw objects present now (``depth_core/carryover.py``), so the re-merged day holds both.
"""

from typing import Any

import dagster as dg
import polars as pl

from depth_pipeline.checks import VALIDATED_CHECKS, check_results, check_specs
from depth_pipeline.keys import raw_key, validated_key
from depth_pipeline.metadata import PREVIEW_ROWS, frame_preview, report_metadata
from depth_pipeline.partitions import split_partition_key
from depth_pipeline.resources import DepthSettingsResource, DepthStoreResource
from depth_store import ObjectStore


def raw_spec(stream: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetSpec:
    """The external asset of one collector's raw objects (written by ``depth-collector``)."""
    return dg.AssetSpec(
        key=raw_key(stream),
        partitions_def=partitions_def,
        group_name="raw",
        kinds={"ndjson"},
        description=(
            f"Raw objects of collector stream `{stream}`: gzip NDJSON lines `<receive_ns> <kind> <text>` "
            "exactly as received from Binance, one symbol per object, under "
            f"`raw/market=/stream={stream}/symbol=/date=/`. Written by the collector, recorded by the "
            "raw-arrival sensor, deleted only by the gated cleanup."
        ),
    )


def stream_markdown(summary: dict[str, Any]) -> str:
    """A short table of what the stream delivered for the symbol-day."""
    rows = [
        ("events", summary.get("events")),
        ("update ids covered", summary.get("covered_ids")),
        ("gaps (id holes)", len(summary.get("gaps", []))),
        ("duplicates dropped", summary.get("duplicates")),
        ("snapshots", summary.get("snapshots")),
        ("lines quarantined", summary.get("quarantined")),
        (
            "receive latency p50 / p99 ms",
            f"{summary.get('latency_p50_ms')} / {summary.get('latency_p99_ms')}",
        ),
        ("clock offset ms", summary.get("clock_offset_ms")),
        ("raw objects read", len(summary.get("objects", []))),
    ]
    head = f"### {summary.get('stream')} · {summary.get('symbol')} · {summary.get('date')}\n\n"
    return head + "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def validated_preview(store: ObjectStore, prefix: str) -> pl.DataFrame | None:
    """The first events of the validated Parquet (None if there is none to show)."""
    if not prefix:
        return None
    try:
        location, options = store.scan_location(prefix.rstrip("/") + "/events.parquet")
        return pl.scan_parquet(location, storage_options=options).head(PREVIEW_ROWS).collect()
    except Exception:  # a preview is a nicety: never fail the asset over it
        return None


def _stream_outcomes(report: Any, lines_total: int) -> list[dict[str, Any]]:
    events = int(getattr(report, "events", 0) or 0)
    quarantined = int(getattr(report, "quarantined", 0) or 0)
    outcomes: list[dict[str, Any]] = list(getattr(report, "checks", []) or [])
    outcomes.append(
        {
            "name": "raw_data_present",
            "passed": events > 0,
            "blocking": False,
            "description": f"{events} events" if events else "no diff-depth event for this symbol-day",
            "metadata": {"events": events},
        }
    )
    share = quarantined / lines_total if lines_total else 0.0
    outcomes.append(
        {
            "name": "quarantine_small",
            "passed": share < 0.01,
            "blocking": False,
            "description": f"{quarantined} of {lines_total} lines quarantined",
            "metadata": {"quarantined": quarantined, "share": share},
        }
    )
    return outcomes


def build_validated_asset(stream: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The ``validated/<stream>`` asset of one collector stream."""
    key = validated_key(stream)

    @dg.asset(
        key=key,
        deps=[raw_key(stream)],
        partitions_def=partitions_def,
        group_name="validated",
        kinds={"parquet", "polars"},
        pool="depth_validate",
        check_specs=check_specs(key, VALIDATED_CHECKS),
        description=(
            f"Stream `{stream}` of one symbol-day after validation: typed Parquet of its diff-depth "
            "events (UTC day of exchange time E, neighbouring objects across midnight read), malformed "
            "lines quarantined with their reason, exact duplicates dropped; continuity segments, gaps, "
            "receive latency and clock offset in the metadata."
        ),
    )
    def validated(
        context: dg.AssetExecutionContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.MaterializeResult:
        # the core loads only when a run needs it
        from depth_core.validate import MissingStateError, validate_symbol_day

        date, symbol = split_partition_key(context.partition_key)
        object_store = store.open()
        try:
            report = validate_symbol_day(object_store, settings.market_name, stream, symbol, date)
        except MissingStateError as exc:  # nothing was deleted: the previous output stays as it is
            raise dg.Failure(description=str(exc)) from exc
        carried = sum(1 for o in report.objects if o.carried)
        summary = report.to_dict()
        lines_total = int(summary.get("lines_read", 0) or 0)
        results, _ = check_results(key, VALIDATED_CHECKS, _stream_outcomes(report, lines_total))
        metadata: dict[str, dg.MetadataValue] = {
            "summary": dg.MetadataValue.md(stream_markdown(summary)),
            "events": dg.MetadataValue.int(int(report.events)),
            "gap_count": dg.MetadataValue.int(len(summary.get("gaps", []))),
            "objects_read": dg.MetadataValue.int(len(summary.get("objects", []))),
            "objects_carried_over": dg.MetadataValue.int(carried),
        }
        preview = validated_preview(object_store, summary.get("prefix", ""))
        if preview is not None:
            metadata["preview"] = frame_preview(preview)
        for name, value in report_metadata(summary, skip=("preview", "objects", "level_parts", "files")).items():
            metadata.setdefault(name, value)
        context.log.info(
            f"validated {stream} {symbol} {date}: {report.events} events"
            + (f" ({carried} raw objects deleted after a merge carried over from validated/)" if carried else "")
        )
        return dg.MaterializeResult(metadata=metadata, check_results=results)

    return validated


def build_stream_assets(
    streams: list[str] | tuple[str, ...], partitions_def: dg.PartitionsDefinition
) -> list[dg.AssetSpec | dg.AssetsDefinition]:
    """``raw/<stream>`` and ``validated/<stream>`` for every configured stream."""
    out: list[dg.AssetSpec | dg.AssetsDefinition] = []
    for stream in streams:
        out.append(raw_spec(stream, partitions_def))
        out.append(build_validated_asset(stream, partitions_def))
    return out
