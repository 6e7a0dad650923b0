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

from collections.abc import Callable
from typing import TYPE_CHECKING

import dagster as dg

from depth_core.check_catalog import VALIDATED_CHECKS
from depth_core.names import Market
from depth_pipeline.checks import check_results, check_specs
from depth_pipeline.keys import raw_key, validated_key
from depth_pipeline.lease import day_lease
from depth_pipeline.partitions import date_of
from depth_pipeline.resources import DayRunResource, DepthSettingsResource, DepthStoreResource
from depth_store import ObjectStore

if TYPE_CHECKING:
    from depth_core.validate import SymbolDayReport  # the core loads only when a run needs it


def raw_spec(stream: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetSpec:
    """The external asset of one collector's raw objects (written by ``depth-collector``)."""
    return dg.AssetSpec(
        key=raw_key(stream),
        partitions_def=partitions_def,
        group_name="raw",
        kinds={"ndjson"},
        description=(
            f"Raw objects of collector stream `{stream}`: gzip NDJSON lines exactly as received from "
            f"Binance, under `raw/market=/stream={stream}/date=/` (layout v2, every symbol of the stream "
            "per object) or `raw/market=/stream=/symbol=/date=/` (v1). Written by the collector, recorded "
            "by the raw-arrival sensor, deleted only by the gated cleanup."
        ),
    )


def validate_stream_symbols(
    store: ObjectStore,
    market: Market,
    stream: str,
    date: str,
    symbols: list[str] | None,
    wants: Callable[[str], bool],
) -> tuple[dict[str, "SymbolDayReport"], dict[str, str]]:
    """Validate one stream-day in one pass over its raw objects (v2 and v1; each object is read once
    whatever the number of symbols it holds): every symbol its raw data holds (``symbols=None``; the
    reports are then filtered by ``wants``, ``DEPTH_SYMBOLS``) or the ones named. Returns (report per
    symbol, error per symbol that could not be validated).

    A stream-day whose validated state is the only copy of deleted raw objects and is missing fails as a
    whole (``MissingStateError``, nothing deleted); the caller turns it into a clear step failure."""
    from depth_core.validate import validate_stream_day

    result = validate_stream_day(store, market, stream, date, symbols)
    reports = {s: r for s, r in result.reports.items() if symbols is not None or wants(s)}
    return reports, {}


def objects_carried_over(report: "SymbolDayReport") -> int:
    """Raw objects of the symbol-day already deleted, whose validated rows were carried over."""
    return sum(1 for o in report.objects if o.carried)


SYMBOL_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("symbol", "string"),
        dg.TableColumn("events", "int"),
        dg.TableColumn("gaps", "int"),
        dg.TableColumn("duplicates", "int"),
        dg.TableColumn("quarantined", "int"),
        dg.TableColumn("objects", "int"),
        dg.TableColumn("carried_over", "int"),
        dg.TableColumn("error", "string"),
    ]
)


def stream_day_metadata(
    stream: str, date: str, reports: dict[str, "SymbolDayReport"], errors: dict[str, str]
) -> dict[str, dg.MetadataValue]:
    """The stream-day's materialization metadata: one table row per symbol, totals, the symbol list the
    merge step fans out over (``symbols``) and the symbols that could not be validated
    (``failed_symbols``)."""
    records = [
        dg.TableRecord(
            {
                "symbol": symbol,
                "events": r.events,
                "gaps": len(r.gaps),
                "duplicates": r.duplicates,
                "quarantined": r.quarantined,
                "objects": len(r.objects),
                "carried_over": objects_carried_over(r),
                "error": "",
            }
        )
        for symbol, r in sorted(reports.items())
    ]
    records += [
        dg.TableRecord(
            {
                "symbol": s,
                "events": 0,
                "gaps": 0,
                "duplicates": 0,
                "quarantined": 0,
                "objects": 0,
                "carried_over": 0,
                "error": e[:300],
            }
        )
        for s, e in sorted(errors.items())
    ]
    events = sum(r.events for r in reports.values())
    head = f"### {stream} · {date}\n\n{len(reports)} symbols validated, {events} events" + (
        f", **{len(errors)} not validated**: {', '.join(sorted(errors))}" if errors else ""
    )
    return {
        "summary": dg.MetadataValue.md(head),
        "symbol_outcomes": dg.MetadataValue.table(records=records, schema=SYMBOL_TABLE_SCHEMA),
        "symbols": dg.MetadataValue.json(sorted(reports)),
        "failed_symbols": dg.MetadataValue.json(dict(sorted(errors.items()))),
        "symbol_count": dg.MetadataValue.int(len(reports)),
        "events": dg.MetadataValue.int(events),
        "gap_count": dg.MetadataValue.int(sum(len(r.gaps) for r in reports.values())),
        "objects_read": dg.MetadataValue.int(sum(len(r.objects) for r in reports.values())),
        "objects_carried_over": dg.MetadataValue.int(sum(objects_carried_over(r) for r in reports.values())),
    }


def build_validated_asset(stream: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The ``validated/<stream>`` asset of one collector stream: one step per stream-day."""
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
            f"Stream `{stream}` of one day after validation, per symbol: typed Parquet of its diff-depth "
            "events (UTC day of exchange time E, neighbouring objects across midnight read), malformed "
            "lines quarantined with their reason, exact duplicates dropped. The metadata table has one row "
            "per symbol (events, gaps, duplicates, quarantined lines, objects read)."
        ),
    )
    def validated(
        context: dg.AssetExecutionContext,
        store: DepthStoreResource,
        settings: DepthSettingsResource,
        day_run: DayRunResource,
    ) -> dg.MaterializeResult:
        date = date_of(context.partition_key)
        object_store = store.open()
        from depth_core.validate import ConcurrentValidationError, MissingStateError

        with day_lease(object_store, settings.market_name, date, context):
            try:
                reports, errors = validate_stream_symbols(
                    object_store,
                    settings.market_name,
                    stream,
                    date,
                    day_run.requested() or None,
                    settings.wants,
                )
            except (MissingStateError, ConcurrentValidationError) as exc:  # nothing was deleted
                raise dg.Failure(description=f"{stream} {date}: {exc}") from exc
        from depth_core.checks import stream_day_outcomes

        results = check_results(key, VALIDATED_CHECKS, stream_day_outcomes(reports, errors))
        context.log.info(
            f"validated {stream} {date}: {len(reports)} symbols"
            + (f"; NOT validated: {errors}" if errors else "")
        )
        if errors and not reports:
            raise dg.Failure(
                description=f"no symbol of {stream} {date} could be validated: "
                + "; ".join(f"{s}: {e}" for s, e in sorted(errors.items())),
                metadata={"failed_symbols": dg.MetadataValue.json(errors)},
            )
        return dg.MaterializeResult(
            metadata=stream_day_metadata(stream, date, reports, errors), check_results=results
        )

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
