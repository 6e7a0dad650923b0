"""``merged_depth``: one run per date, the day's symbols fanned out as steps.

Every validated stream of a symbol-day is arbitrated along the update-id line (``depth_core.merge``): each
id range from whichever stream has it (earliest receive wins), ids no stream has are a recorded gap, and
the day opens with the book carried from the previous day (hence the dependency on its own previous date)
or the day's first usable snapshot. The Parquet and ``_coverage_manifest.json`` go to
``merged/market=/symbol=/date=/``; the manifest is what the gated cleanup deletes by.

The asset is graph-backed so that one date's symbols run as parallel steps (docs/orchestration.md):

    plan_day ──► merge_symbols[b0] ─┐
             ├─► merge_symbols[b1] ─┼─► record_day ──► merged_depth and the day's checks
             └─► ...               ─┘

``plan_day`` takes the day's symbols (the run's ``day_run.symbols``, else every symbol the validated
streams reported, filtered by ``DEPTH_SYMBOLS``) and yields batches of ``DEPTH_SYMBOLS_PER_STEP``;
``merge_symbols`` merges each symbol of a batch in one process, so process start, imports and
numba's cached compilation are paid once per batch, not per symbol; ``record_day`` writes the day's
materializations: one table row per symbol (rows, gaps, coverage, checks, published or why not) and one
result per declared check, summarised over the symbols (the failing ones named). A symbol that failed
fails the run after everything else was recorded.
"""

import inspect
import logging
import traceback
from collections.abc import Mapping
from typing import Any

import dagster as dg

from depth_core.check_catalog import MERGED_CHECKS, CheckDecl
from depth_core.layout import STEP_IO_ROOT
from depth_core.names import Market
from depth_pipeline.checks import check_specs, severity
from depth_pipeline.cleanup import symbols_merged_on
from depth_pipeline.daydata import record_first_date
from depth_pipeline.keys import (
    MERGED_DEPTH,
    META_BLOCKING_PASSED,
    META_MANIFEST_ETAG,
    META_MANIFEST_KEY,
    META_NO_RAW_DATA,
    META_SYMBOL_OUTCOMES,
    validated_key,
)
from depth_pipeline.lease import day_lease, release_day_lease
from depth_pipeline.metadata import report_metadata
from depth_pipeline.outcomes import (
    CheckSummary,
    StreamDayRecord,
    SymbolOutcome,
    recorded_stream_day,
    symbol_record,
)
from depth_pipeline.partitions import date_of, previous_day_mapping
from depth_pipeline.resources import DayRunResource, DepthSettingsResource, DepthStoreResource
from depth_store import ObjectStore

log = logging.getLogger("depth_pipeline")


OUTCOME_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("symbol", "string"),
        dg.TableColumn("status", "string", description="ok, FAILED, no raw data, not validated"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("events", "int"),
        dg.TableColumn("gaps", "int"),
        dg.TableColumn("coverage", "float"),
        dg.TableColumn("checks", "string", description="blocking checks passed, or the failed ones"),
        dg.TableColumn("published", "bool"),
        dg.TableColumn("reason", "string", description="why the symbol-day failed or was not published"),
    ]
)


def merge_one(
    store: ObjectStore,
    market: Market,
    symbol: str,
    date: str,
    streams: list[str],
    *,
    allow_shrink: str = "",
) -> SymbolOutcome:
    """Merge one symbol-day; the outcome as plain JSON (never raises for the symbol's own failure: the
    day records it and goes on with the other symbols)."""
    from depth_core.merge import merge_symbol_day  # the core loads only when a run needs it

    out: SymbolOutcome = {"symbol": symbol, "ok": False, "published": False, "reason": ""}
    try:
        report = merge_symbol_day(store, market, symbol, date, streams, allow_shrink=allow_shrink or None)
    except Exception as exc:
        log.error("merge of %s %s failed:\n%s", symbol, date, traceback.format_exc())
        out["reason"] = f"merge failed: {type(exc).__name__}: {exc}"
        return out
    out["rows"] = int(report.rows)
    out["events"] = int(report.events)
    out["events_received"] = int(report.events_received)
    out["gaps"] = report.gap_count
    out["coverage"] = float(report.coverage)
    out["opening"] = report.opening
    out["problems"] = list(report.problems)
    checks: list[CheckSummary] = [
        {"name": c.name, "passed": c.passed, "blocking": c.blocking, "description": c.description}
        for c in report.checks
    ]
    out["checks"] = checks
    received = int(report.events_received)
    out[META_BLOCKING_PASSED] = report.blocking_passed and received > 0
    if received == 0:
        out[META_NO_RAW_DATA] = True
        out["reason"] = (
            f"no raw data: no stream of {', '.join(streams)} has a diff-depth event for {symbol} {date}"
        )
        return out
    out["published"] = report.published
    out["refused_reason"] = report.refused_reason or ""
    etag = report.manifest_etag
    if etag is None and report.manifest_key:
        info = store.head(report.manifest_key)
        etag = info.etag if info else None
    out[META_MANIFEST_KEY] = report.manifest_key
    out[META_MANIFEST_ETAG] = etag or ""
    if not report.blocking_passed:
        failed = [c["name"] for c in checks if c["blocking"] and not c["passed"]]
        out["reason"] = "blocking checks failed: " + ", ".join(failed)
        return out
    if not report.published:
        out["reason"] = f"not published: {report.refused_reason or 'refused by the publish step'}"
        return out
    out["ok"] = True
    return out


def _status(outcome: SymbolOutcome) -> str:
    if outcome.get("ok"):
        return "ok"
    if outcome.get(META_NO_RAW_DATA):
        return "no raw data"
    if outcome.get("not_validated"):
        return "not validated"
    return "FAILED"


def _checks_text(outcome: SymbolOutcome) -> str:
    checks = outcome.get("checks", [])
    if not checks:
        return "-"
    failed = [c["name"] for c in checks if not c["passed"] and c["blocking"]]
    warned = [c["name"] for c in checks if not c["passed"] and not c["blocking"]]
    blocking = [c for c in checks if c["blocking"]]
    text = f"{len(blocking) - len(failed)}/{len(blocking)} blocking passed"
    if failed:
        text += "; FAILED " + ", ".join(failed)
    if warned:
        text += "; warn " + ", ".join(warned)
    return text


def outcome_table(outcomes: list[SymbolOutcome]) -> dg.MetadataValue:
    """One row per symbol-day: what the UI shows on the day's materialization."""
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "symbol": o["symbol"],
                    "status": _status(o),
                    "rows": int(o.get("rows", 0) or 0),
                    "events": int(o.get("events", 0) or 0),
                    "gaps": int(o.get("gaps", 0) or 0),
                    "coverage": round(float(o.get("coverage", 0.0) or 0.0), 6),
                    "checks": _checks_text(o),
                    "published": bool(o.get("published")),
                    "reason": str(o.get("reason") or "")[:300],
                }
            )
            for o in outcomes
        ],
        schema=OUTCOME_SCHEMA,
    )


def day_check_results(
    asset_key: dg.AssetKey, catalog: Mapping[str, CheckDecl], outcomes: list[SymbolOutcome]
) -> list[dg.AssetCheckResult]:
    """One result per declared check for the whole day: it passes only if it passed for every symbol
    that was merged; the symbols it failed for are named (description and metadata)."""
    results = []
    merged = [o for o in outcomes if o.get("checks")]
    for decl in catalog.values():
        failing: dict[str, str] = {}
        evaluated = 0
        for o in merged:
            mine = [c for c in o.get("checks", []) if c["name"] == decl.name]
            bad = [c for c in mine if not c["passed"]]
            evaluated += bool(mine)
            if bad:
                failing[o["symbol"]] = "; ".join(f"{c['name']}: {c['description']}" for c in bad)
        if failing:
            description = f"failed for {len(failing)} of {len(merged)} symbols: " + "; ".join(
                f"{s} ({why})" for s, why in list(failing.items())[:10]
            )
        elif evaluated:
            description = f"passed for all {evaluated} symbols where it applies"
        else:
            description = "not evaluated for this day (does not apply)"
        results.append(
            dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=decl.name,
                passed=not failing,
                severity=severity(decl),
                description=description[:2000],
                metadata=report_metadata(
                    {
                        "failed_symbols": sorted(failing),
                        "symbols_evaluated": evaluated,
                        "symbols": len(merged),
                    }
                ),
            )
        )
    return results


def _latest_stream_day(instance: dg.DagsterInstance, stream: str, date: str) -> StreamDayRecord:
    """``symbols`` and ``failed_symbols`` of the latest ``validated/<stream>`` materialization of ``date``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=validated_key(stream), asset_partitions=[date]), limit=1
    ).records
    return recorded_stream_day(records[0].event_log_entry.asset_materialization if records else None)


AUTO_STEP_MIN = (
    25  # symbols a step takes at least when sized automatically (a step process costs ≈ 2.5 CPU-s)
)
AUTO_STEP_MAX = 100  # ... and at most (what one failed step process takes with it)
STEPS_PER_SLOT = 2  # steps per parallel step slot when sized automatically (evens out the slots' finish)


class PlanConfig(dg.Config):
    """How many symbols one step takes: ``symbols_per_step`` (``DEPTH_SYMBOLS_PER_STEP``), or 0 (the
    default, "auto"): see :func:`step_size`; ``parallel_steps`` is ``DEPTH_MAX_PARALLEL_STEPS``."""

    symbols_per_step: int = 0
    parallel_steps: int = 2


def step_size(n_symbols: int, symbols_per_step: int, parallel_steps: int) -> int:
    """Symbols per step: the configured number, or automatically ``STEPS_PER_SLOT`` steps per parallel slot,
    from ``AUTO_STEP_MIN`` to ``AUTO_STEP_MAX`` symbols a step — every step is a process (or a pod) paying its
    start, imports and the code location's definitions, so a 400-symbol day on 2 slots runs 4 merge steps of
    100, not 16 of 25 (measured: BENCHMARKS.md, universe pipeline)."""
    if symbols_per_step > 0:
        return symbols_per_step
    wanted = -(-n_symbols // (STEPS_PER_SLOT * max(1, parallel_steps)))
    return min(AUTO_STEP_MAX, max(AUTO_STEP_MIN, wanted))


def batches_of(symbols: list[str], size: int) -> list[list[str]]:
    """The day's symbols in ``ceil(n / size)`` steps of at most ``size``, dealt in turn (symbol i to step
    i mod steps): neighbours in name order — often alike in activity — go to different steps, so steps take
    about equally long. Deterministic: a re-run of one date batches alike."""
    steps = -(-len(symbols) // max(1, size))
    return [symbols[i::steps] for i in range(steps)]


def graph_signature(fn: Any, names: list[str]) -> Any:
    """Give a ``**kwargs`` graph function the named parameters Dagster maps the asset inputs onto."""
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    )
    return fn


def build_merged_asset(
    streams: list[str] | tuple[str, ...],
    partitions_def: dg.PartitionsDefinition,
    *,
    symbols_per_step: int,
    parallel_steps: int = 2,
) -> dg.AssetsDefinition:
    """``merged_depth`` over ``streams``: a graph-backed asset fanning the day's symbols out as steps."""
    stream_list = list(streams)
    ins: dict[str, dg.AssetIn] = {
        f"validated_{i}": dg.AssetIn(validated_key(s), dagster_type=dg.Nothing)
        for i, s in enumerate(stream_list)
    }
    ins["previous_day"] = dg.AssetIn(
        MERGED_DEPTH, partition_mapping=previous_day_mapping(), dagster_type=dg.Nothing
    )

    @dg.op(
        out={"batches": dg.DynamicOut(dict), "skipped": dg.Out(list)},
        ins={name: dg.In(dg.Nothing) for name in ins},
        tags={"depth/step": "plan"},
    )
    def plan_day(
        context: dg.OpExecutionContext,
        config: PlanConfig,
        store: DepthStoreResource,
        settings: DepthSettingsResource,
        day_run: DayRunResource,
    ) -> Any:
        """The day's symbols in batches; symbols a stream could not validate are recorded, not merged."""
        date = date_of(context.partition_key)
        object_store = store.open()
        with day_lease(object_store, settings.market_name, date, context):
            record_first_date(object_store, settings.market_name, date)
        requested = day_run.requested()
        known: set[str] = set()
        failed: dict[str, str] = {}
        for stream in stream_list:
            day = _latest_stream_day(context.instance, stream, date)
            known.update(day["symbols"])
            for symbol, why in day["failed"].items():
                failed[symbol] = f"{stream}: {why}"
        # and every symbol an earlier run of the date recorded: a re-run of a whole date after its raw objects
        # were cleaned up re-merges them from validated/ (it never reports a merged day as "no raw data")
        known.update(symbols_merged_on(context.instance, date))
        symbols = requested or sorted(s for s in known | set(failed) if settings.wants(s))
        skipped: list[SymbolOutcome] = [
            {
                "symbol": s,
                "ok": False,
                "not_validated": True,
                "published": False,
                "reason": f"not validated ({failed[s]}); its published day is unchanged",
            }
            for s in symbols
            if s in failed
        ]
        todo = [s for s in symbols if s not in failed]
        size = step_size(len(todo), config.symbols_per_step, config.parallel_steps)
        batches = batches_of(todo, size)
        context.log.info(
            f"{date}: {len(todo)} symbols to merge in {len(batches)} steps of up to {size}"
            + (
                f"; {len(skipped)} not validated: {', '.join(s['symbol'] for s in skipped)}"
                if skipped
                else ""
            )
        )
        for i, batch in enumerate(batches):
            yield dg.DynamicOutput({"symbols": batch}, output_name="batches", mapping_key=f"b{i:04d}")
        yield dg.Output(skipped, output_name="skipped")

    @dg.op(pool="depth_merge", tags={"depth/step": "merge"})
    def merge_symbols(
        context: dg.OpExecutionContext,
        batch: dict,
        store: DepthStoreResource,
        settings: DepthSettingsResource,
        day_run: DayRunResource,
    ) -> list:
        """Merge each symbol of the batch in this one process (imports and numba paid once per batch)."""
        date = date_of(context.partition_key)
        object_store = store.open()
        outcomes = []
        with day_lease(object_store, settings.market_name, date, context):
            for symbol in batch["symbols"]:
                outcome = merge_one(
                    object_store,
                    settings.market_name,
                    symbol,
                    date,
                    stream_list,
                    allow_shrink=day_run.allow_shrink,
                )
                context.log.info(
                    f"{'ok  ' if outcome['ok'] else 'FAIL'} {symbol} {date}: "
                    f"{outcome.get('rows', 0)} rows, {outcome.get('gaps', 0)} gaps"
                    + (f" — {outcome['reason']}" if outcome.get("reason") else "")
                )
                outcomes.append(outcome)
        return outcomes

    check_out_names = [f"merged_depth_{name}" for name in MERGED_CHECKS]

    @dg.op(
        out={"merged_depth": dg.Out(dg.Nothing), **{n: dg.Out(dg.Nothing) for n in check_out_names}},
        tags={"depth/step": "record"},
    )
    def record_day(
        context: dg.OpExecutionContext,
        results: list,
        skipped: list,
        store: DepthStoreResource,
        settings: DepthSettingsResource,
    ) -> Any:
        """The day's materialization (a row per symbol) and checks; fails the run if a symbol failed."""
        date = date_of(context.partition_key)
        object_store = store.open()
        outcomes: list[SymbolOutcome] = sorted(
            [o for batch in results for o in batch] + list(skipped), key=lambda o: o["symbol"]
        )
        try:
            if not outcomes:
                raise dg.Failure(
                    description=f"no raw data for {date}: no stream of {', '.join(stream_list)} holds a "
                    "symbol for this day" + (" that DEPTH_SYMBOLS lets through" if settings.symbols else ""),
                    metadata={META_NO_RAW_DATA: True, "date": date},
                )
            yield from _day_outputs(date, outcomes)
        finally:  # the run's last writing step: let the next run of the date in
            release_day_lease(object_store, settings.market_name, date, context.run.run_id)
            _drop_step_results(object_store, context.run.run_id)
        failed = [o for o in outcomes if not o.get("ok")]
        if failed:
            raise dg.Failure(
                description=f"{len(failed)} of {len(outcomes)} symbols of {date} failed: "
                + "; ".join(f"{o['symbol']}: {o.get('reason')}" for o in failed[:20]),
                metadata={
                    "failed_symbols": dg.MetadataValue.json({o["symbol"]: o.get("reason") for o in failed}),
                    META_NO_RAW_DATA: all(o.get(META_NO_RAW_DATA) for o in failed),
                },
            )

    def merged_day(**upstream: Any) -> Any:
        plan = plan_day(**upstream)
        recorded = record_day(plan.batches.map(merge_symbols).collect(), plan.skipped)
        return dict(zip(["merged_depth", *check_out_names], recorded, strict=True))

    return dg.graph_multi_asset(
        name="merged_depth_day",
        outs={
            "merged_depth": dg.AssetOut(
                key=MERGED_DEPTH,
                group_name="merged",
                kinds={"parquet", "polars"},
                description=(
                    "Order-book deltas of each symbol-day of the date merged across all collector streams by "
                    "update id: one row per price-level change (columns: docs/analysts.md), sorted by "
                    "last_update_id, opening with a book image; each id range from the stream that received "
                    "it first; gaps only where no stream had the ids. Per symbol under "
                    "`merged/market=/symbol=/date=/` with `_coverage_manifest.json`. The materialization's "
                    "table `symbol_outcomes` has one row per symbol-day (rows, events, gaps, coverage, "
                    "checks, published or why not)."
                ),
            )
        },
        ins=ins,
        partitions_def=partitions_def,
        check_specs=check_specs(MERGED_DEPTH, MERGED_CHECKS),
        config={
            "plan_day": {"config": {"symbols_per_step": symbols_per_step, "parallel_steps": parallel_steps}}
        },
    )(graph_signature(merged_day, list(ins)))


def _day_outputs(date: str, outcomes: list[SymbolOutcome]) -> Any:
    ok = [o for o in outcomes if o.get("ok")]
    failed = [o for o in outcomes if not o.get("ok")]
    summary = f"### merged_depth · {date}\n\n{len(ok)} of {len(outcomes)} symbols ok" + (
        f"; **failed**: {', '.join(o['symbol'] for o in failed)}" if failed else ""
    )
    machine = {o["symbol"]: symbol_record(o) for o in outcomes}
    yield dg.Output(
        None,
        output_name="merged_depth",
        metadata={
            "summary": dg.MetadataValue.md(summary),
            "symbol_outcomes": outcome_table(outcomes),
            META_SYMBOL_OUTCOMES: dg.MetadataValue.json(machine),
            "symbols": dg.MetadataValue.int(len(outcomes)),
            "symbols_ok": dg.MetadataValue.int(len(ok)),
            "failed_symbols": dg.MetadataValue.json(sorted(o["symbol"] for o in failed)),
            "dagster/row_count": dg.MetadataValue.int(sum(int(o.get("rows", 0) or 0) for o in outcomes)),
            "events": dg.MetadataValue.int(sum(int(o.get("events", 0) or 0) for o in outcomes)),
            "gap_count": dg.MetadataValue.int(sum(int(o.get("gaps", 0) or 0) for o in outcomes)),
            META_BLOCKING_PASSED: dg.MetadataValue.bool(all(o.get(META_BLOCKING_PASSED) for o in outcomes)),
        },
    )
    yield from day_check_results(MERGED_DEPTH, MERGED_CHECKS, outcomes)


def _drop_step_results(store: ObjectStore, run_id: str) -> None:
    """The steps' results (small JSON) are not needed once the day is recorded."""
    for info in list(store.list(f"{STEP_IO_ROOT}/run={run_id}/merged_depth_day.")):
        store.delete(info.key)
