"""Assets derived from ``merged_depth``: the top-25 book every second and the data-quality report.

Both read only what the merge and the validation wrote (never raw objects), so they can be rebuilt at any
time, also after the raw objects were cleaned up. The day's materialization of ``depth_quality_report``
also carries the overview picture of every symbol of the day (``depth_pipeline/overview.py``). Like the merge,
one date's symbols fan out as steps (``plan_derive`` → ``derive_symbols[bN]`` → ``record_derived``); the
symbols are those the date's latest merge published (or the run's ``day_run.symbols``). They do not take the
day's store lease: they write only ``derived/`` and ``quality/``, from the published merged day, idempotently.
"""

import base64
from typing import Any

import dagster as dg

from depth_core.layout import quality_overview_key
from depth_core.names import Market
from depth_pipeline.assets.merged import PlanConfig, batches_of, graph_signature, step_size
from depth_pipeline.keys import (
    BOOK_TOP25_1S,
    MERGED_DEPTH,
    QUALITY_REPORT,
    validated_key,
)
from depth_pipeline.outcomes import recorded_outcomes
from depth_pipeline.overview import render_overview
from depth_pipeline.partitions import date_of
from depth_pipeline.resources import DayRunResource, DepthSettingsResource, DepthStoreResource
from depth_store import ObjectStore

INLINE_REPORTS_UP_TO = 3  # a day of at most this many symbols shows their quality reports inline


def derive_one(
    store: ObjectStore, market: Market, symbol: str, date: str, streams: list[str], inline_report: bool
) -> dict[str, Any]:
    """Top-25 book and quality report of one merged symbol-day (its failure is recorded, not raised)."""
    from depth_core.quality import load_quality_input, write_quality_report
    from depth_core.topbook import write_top_day
    from depth_pipeline.overview import symbol_timeline

    try:
        top_key, table = write_top_day(store, market, symbol, date)
        inp = load_quality_input(store, market, symbol, date, streams)
        report = write_quality_report(store, inp)
        timeline = symbol_timeline(inp)
    except Exception as exc:
        return {"symbol": symbol, "ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    return {
        "symbol": symbol,
        "ok": True,
        "top_key": top_key,
        "top_rows": table.height,
        "quality_keys": dict(report.keys),
        "quality_markdown": report.markdown_with_inline_png() if inline_report else "",
        "timeline": timeline,
    }


def _published_symbols(instance: dg.DagsterInstance, date: str) -> list[str]:
    """Symbols the latest ``merged_depth`` materialization of ``date`` records as ok."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=MERGED_DEPTH, asset_partitions=[date]), limit=1
    ).records
    if not records:
        return []
    entries = recorded_outcomes(records[0].event_log_entry.asset_materialization)
    return sorted(s for s, e in entries.items() if e["ok"])


def build_derived_assets(
    partitions_def: dg.PartitionsDefinition,
    streams: list[str] | tuple[str, ...],
    *,
    symbols_per_step: int,
    parallel_steps: int = 2,
) -> dg.AssetsDefinition:
    """``book_top25_1s`` and ``depth_quality_report`` of a date, one graph-backed multi-asset."""
    stream_list = list(streams)
    ins = {"merged": dg.AssetIn(MERGED_DEPTH, dagster_type=dg.Nothing)}
    ins.update(
        {
            f"validated_{i}": dg.AssetIn(validated_key(s), dagster_type=dg.Nothing)
            for i, s in enumerate(stream_list)
        }
    )

    @dg.op(
        out=dg.DynamicOut(dict), ins={name: dg.In(dg.Nothing) for name in ins}, tags={"depth/step": "plan"}
    )
    def plan_derive(context: dg.OpExecutionContext, config: PlanConfig, day_run: DayRunResource) -> Any:
        date = date_of(context.partition_key)
        published = _published_symbols(context.instance, date)
        requested = day_run.requested()
        symbols = [s for s in requested if s in published] if requested else published
        size = step_size(len(symbols), config.symbols_per_step, config.parallel_steps)
        for i, batch in enumerate(batches_of(symbols, size)):
            yield dg.DynamicOutput(
                {"symbols": batch, "inline_reports": len(symbols) <= INLINE_REPORTS_UP_TO},
                mapping_key=f"b{i:04d}",
            )

    @dg.op(pool="depth_derive", tags={"depth/step": "derive"})
    def derive_symbols(
        context: dg.OpExecutionContext,
        batch: dict,
        store: DepthStoreResource,
        settings: DepthSettingsResource,
    ) -> list:
        date = date_of(context.partition_key)
        object_store = store.open()
        return [
            derive_one(
                object_store, settings.market_name, s, date, stream_list, bool(batch.get("inline_reports"))
            )
            for s in batch["symbols"]
        ]

    @dg.op(
        out={"book_top25_1s": dg.Out(dg.Nothing), "depth_quality_report": dg.Out(dg.Nothing)},
        tags={"depth/step": "record"},
    )
    def record_derived(
        context: dg.OpExecutionContext,
        results: list,
        store: DepthStoreResource,
        settings: DepthSettingsResource,
    ) -> Any:
        date = date_of(context.partition_key)
        outcomes = sorted((o for batch in results for o in batch), key=lambda o: o["symbol"])
        ok = [o for o in outcomes if o["ok"]]
        overview_md = ""
        if ok:  # every symbol of the day on one time axis (depth_pipeline/overview.py)
            png = render_overview(date, stream_list, [o["timeline"] for o in ok])
            key = quality_overview_key(settings.market_name, date)
            store.open().put_bytes(key, png)
            overview_md = f"![overview of {date}](data:image/png;base64,{base64.b64encode(png).decode()})\n\n"
        yield dg.Output(
            None,
            output_name="book_top25_1s",
            metadata={
                "dagster/row_count": dg.MetadataValue.int(sum(int(o["top_rows"]) for o in ok)),
                "symbols": dg.MetadataValue.int(len(ok)),
                "keys": dg.MetadataValue.json({o["symbol"]: o["top_key"] for o in ok}),
            },
        )
        inline = "\n\n".join(o["quality_markdown"] for o in ok if o.get("quality_markdown"))
        listing = "\n".join(f"- {o['symbol']}: `{o['quality_keys'].get('markdown', '')}`" for o in ok)
        yield dg.Output(
            None,
            output_name="depth_quality_report",
            metadata={
                "report": dg.MetadataValue.md(
                    overview_md + (inline or listing or f"_no merged symbol on {date}_")
                ),
                "overview_key": dg.MetadataValue.text(
                    quality_overview_key(settings.market_name, date) if ok else ""
                ),
                "symbols": dg.MetadataValue.int(len(ok)),
                "keys": dg.MetadataValue.json({o["symbol"]: o.get("quality_keys", {}) for o in ok}),
            },
        )
        failed = [o for o in outcomes if not o["ok"]]
        if failed:
            raise dg.Failure(
                description=f"derived outputs of {date} failed for "
                + "; ".join(f"{o['symbol']}: {o['reason']}" for o in failed[:20]),
                metadata={
                    "failed_symbols": dg.MetadataValue.json({o["symbol"]: o["reason"] for o in failed})
                },
            )

    def derived_day(**upstream: Any) -> Any:
        top, quality = record_derived(plan_derive(**upstream).map(derive_symbols).collect())
        return {"book_top25_1s": top, "depth_quality_report": quality}

    return dg.graph_multi_asset(
        name="derived_day",
        outs={
            "book_top25_1s": dg.AssetOut(
                key=BOOK_TOP25_1S,
                group_name="derived",
                kinds={"parquet", "polars"},
                description="The best 25 bid and ask levels once per second of each merged symbol-day, "
                "sampled from the replayed merged book, under "
                "`derived/book_top25_1s/market=/symbol=/date=/`.",
            ),
            "depth_quality_report": dg.AssetOut(
                key=QUALITY_REPORT,
                group_name="derived",
                kinds={"png", "markdown"},
                description="Per symbol-day data-quality report (PNG + markdown + JSON under "
                "`quality/market=/symbol=/date=/`): when each stream delivered, silences, id gaps, receive "
                "latency, and which stream supplied the merged day.",
            ),
        },
        ins=ins,
        partitions_def=partitions_def,
        config={
            "plan_derive": {
                "config": {"symbols_per_step": symbols_per_step, "parallel_steps": parallel_steps}
            }
        },
    )(graph_signature(derived_day, list(ins)))
