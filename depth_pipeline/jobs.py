"""Jobs and run requests: the daily asset job (validate every stream-day, merge the day's symbols fanned out
as steps, derive), the gated cleanup job, and the one way to ask for a run of a date.

Both jobs are partitioned by ``date``: one run per date, whatever its number of symbols. A run of chosen
symbols of a date sets ``resources.day_run.config.symbols`` (the launchpad, ``depth-pipeline run --symbols``,
the sensors through :func:`day_run_request`). Every run carries the tag ``depth/date``: the run queue lets
one run per date go at a time (dagster.yaml), and the store lease (``depth_pipeline.lease``) guards the
runs that do not go through the queue.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from depth_core.names import parse_symbols, validate_date
from depth_pipeline.cleanup import cleanup_day, encode_results, symbols_merged_on
from depth_pipeline.config import PipelineConfig
from depth_pipeline.keys import TAG_DATE, TAG_KIND, TAG_SYMBOLS
from depth_pipeline.lease import day_lease
from depth_pipeline.partitions import date_of
from depth_pipeline.resources import DepthSettingsResource, DepthStoreResource

DAILY_JOB_NAME = "depth_daily"
CLEANUP_JOB_NAME = "depth_cleanup"


def day_run_config(symbols: Sequence[str] | None = None, allow_shrink: str = "") -> dict[str, Any]:
    """Run config of a day run: which symbols (None or empty: every symbol of the day) and an operator's
    reason to publish a smaller re-merge (empty: refuse)."""
    config: dict[str, Any] = {"symbols": parse_symbols(",".join(symbols)) if symbols else []}
    if allow_shrink:
        config["allow_shrink"] = allow_shrink
    return {"resources": {"day_run": {"config": config}}}


def day_run_tags(date: str, symbols: Sequence[str] | None = None, kind: str = "merge") -> dict[str, str]:
    """Tags of every run of a date: what it is, which date (the queue's one-run-per-date key), which
    symbols."""
    return {
        TAG_KIND: kind,
        TAG_DATE: validate_date(date),
        TAG_SYMBOLS: ",".join(parse_symbols(",".join(symbols))) if symbols else "*",
    }


def day_run_request(
    date: str,
    symbols: Sequence[str] | None = None,
    *,
    reason: str = "merge",
    allow_shrink: str = "",
    run_key: str | None = None,
    tags: dict[str, str] | None = None,
) -> dg.RunRequest:
    """A request for the daily job on ``date`` (all its symbols, or the ones named), for schedules and
    sensors. ``reason`` becomes the ``depth/kind`` tag (``merge``, ``remerge``, ``reconcile`` ...);
    ``run_key`` defaults to one per date, reason and symbol set, so a tick is never doubled."""
    date = validate_date(date)
    chosen = parse_symbols(",".join(symbols)) if symbols else []
    key = run_key or f"{reason}:{date}:{','.join(chosen) or '*'}"
    return dg.RunRequest(
        run_key=key,
        partition_key=date,
        run_config=day_run_config(chosen, allow_shrink),
        tags={**day_run_tags(date, chosen, reason), **(tags or {})},
        job_name=DAILY_JOB_NAME,
    )


def cleanup_run_request(
    date: str,
    symbols: Sequence[str] | None = None,
    *,
    run_key: str | None = None,
    retention_days: float = 0.0,
) -> dg.RunRequest:
    """A request for the gated cleanup of ``date`` (the symbols named, or every symbol merged that day)."""
    date = validate_date(date)
    chosen = parse_symbols(",".join(symbols)) if symbols else []
    return dg.RunRequest(
        run_key=run_key or f"cleanup:{date}:{','.join(chosen) or '*'}",
        partition_key=date,
        run_config=cleanup_run_config(chosen, retention_days),
        tags=day_run_tags(date, chosen, "cleanup"),
        job_name=CLEANUP_JOB_NAME,
    )


def build_executor(config: PipelineConfig) -> dg.ExecutorDefinition:
    """``multiprocess`` (one box: up to ``max_parallel_steps`` step processes; 1 runs in-process) or
    ``k8s`` (dagster-k8s ``k8s_job_executor``: a pod per step with the step requests, deploy/k8s/)."""
    max_parallel_steps = config.max_parallel_steps
    if config.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        resources = {
            "requests": {"cpu": config.step_cpu, "memory": config.step_memory},
            "limits": {"memory": config.step_memory_limit},
        }
        return k8s_job_executor.configured(
            {
                "max_concurrent": max_parallel_steps,
                "step_k8s_config": {"container_config": {"resources": resources}},
            },
            name="depth_k8s_executor",
        )
    if max_parallel_steps <= 1:
        return dg.in_process_executor
    return dg.multiprocess_executor.configured(
        {"max_concurrent": max_parallel_steps}, name="depth_multiprocess_executor"
    )


def build_daily_job(
    selection: dg.AssetSelection, executor: dg.ExecutorDefinition
) -> UnresolvedAssetJobDefinition:
    """Validate every stream-day, merge the day's symbols (fanned out as steps) and derive, for one date."""
    return dg.define_asset_job(
        DAILY_JOB_NAME,
        selection=selection,
        executor_def=executor,
        tags={TAG_KIND: "merge"},
        description="One date: validate every stream-day, merge every symbol of the day (or the ones in "
        "resources.day_run.config.symbols) in parallel steps, derive, and record one row per symbol.",
    )


class CleanupConfig(dg.Config):
    """``symbols``: clean these symbols of the date (empty: every symbol a merge of the date recorded);
    ``retention_days``: keep merged raw objects this long after the merge (0 deletes at once)."""

    symbols: list[str] = []
    retention_days: float = 0.0


def cleanup_run_config(symbols: Sequence[str] | None = None, retention_days: float = 0.0) -> dict[str, Any]:
    config = {"symbols": list(symbols or []), "retention_days": retention_days}
    return {"ops": {"cleanup_raw": {"config": config}}}


@dg.op(
    out=dg.Out(dict),
    description="Delete the raw objects of each symbol-day's verified merge (manifest key + size/etag, one "
    "LIST per folder, DeleteObjects in batches), keeping anything that arrived later; deletes nothing of a "
    "symbol-day unless its merge succeeded with blocking checks passed.",
)
def cleanup_raw(
    context: dg.OpExecutionContext,
    config: CleanupConfig,
    store: DepthStoreResource,
    settings: DepthSettingsResource,
) -> Any:
    date = date_of(context.partition_key)
    object_store = store.open()
    symbols = (
        parse_symbols(",".join(config.symbols))
        if config.symbols
        else symbols_merged_on(context.instance, date)
    )
    if not symbols:
        raise dg.Failure(description=f"no merge of {date} is recorded: nothing may be deleted")
    with day_lease(object_store, settings.market_name, date, context, release=True):
        day = cleanup_day(
            context.instance,
            object_store,
            settings.market_name,
            settings.streams,
            date,
            symbols,
            retention_days=config.retention_days,
        )
    context.log.info(day.summary())
    for result in day.results.values():
        context.log.info(result.summary())
    results = {s: r.to_dict() for s, r in day.results.items()}
    for key, why in day.delete_errors.items():
        context.log.error(f"the store refused to delete {key}: {why}")
    refused = {s: r for s, r in results.items() if not r["ok"] or r["kept_changed"]}
    # the per-symbol results are the output (stored even when the step then fails: the CLI prints them)
    yield dg.Output(
        encode_results(day.results),  # decode_results gives back symbol -> the dicts above
        metadata={
            "symbols": len(results),
            "deleted": sum(len(r["deleted"]) for r in results.values()),
            "already_absent": sum(len(r["already_absent"]) for r in results.values()),
            "kept_later_arrivals": sum(len(r["kept_later_arrivals"]) for r in results.values()),
            "kept_other_date_pending": sum(len(r["kept_other_date_pending"]) for r in results.values()),
            "kept_retention": sum(len(r["kept_retention"]) for r in results.values()),
            "refused": dg.MetadataValue.json({s: r["reason"] for s, r in refused.items()}),
            "summary": day.summary(),
            "store_requests": dg.MetadataValue.json(day.requests),
        },
    )
    if refused or day.delete_errors:
        from depth_pipeline.cleanup import CleanupResult

        raise dg.Failure(
            description="; ".join(CleanupResult(**r).summary() for r in refused.values())
            or f"the store refused to delete {len(day.delete_errors)} objects",
            metadata={"refused": dg.MetadataValue.json({s: r["reason"] for s, r in refused.items()})},
        )


def build_cleanup_job(partitions_def: dg.PartitionsDefinition, retention_days: float) -> dg.JobDefinition:
    """The cleanup of one date (its symbols in one step: deletions are cheap next to merges)."""

    @dg.job(
        name=CLEANUP_JOB_NAME,
        partitions_def=partitions_def,
        tags={TAG_KIND: "cleanup"},
        config=cleanup_run_config(None, retention_days),
        executor_def=dg.in_process_executor,
        description="Gated deletion of merged raw objects for one date "
        "(every merged symbol or the ones named).",
    )
    def depth_cleanup() -> None:
        cleanup_raw()

    return depth_cleanup
