"""Shared steps of the pipeline tests: build the definitions, run a date (or chosen symbols of it), read
what it recorded."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from depth_core.layout import merged_manifest_key
from depth_pipeline.cleanup import decode_results
from depth_pipeline.config import PipelineConfig
from depth_pipeline.definitions import build_definitions
from depth_pipeline.jobs import cleanup_run_config, day_run_config, day_run_tags
from depth_store import ObjectStore, open_store
from tests.pipeline.rawgen import DayPlan, write_stream_day

STREAMS = ("eu-1", "ap-1")


def make_config(store_url: str, symbols: tuple[str, ...] = (), **kw: Any) -> PipelineConfig:
    """A config over ``store_url`` (``symbols``: the DEPTH_SYMBOLS filter, none by default); the derived
    assets (a full-day 1 s grid: slow) only where asked for."""
    kw.setdefault("derived_assets", False)
    return PipelineConfig(store_url=store_url, streams=STREAMS, symbols=symbols, **kw)


def write_day(store: ObjectStore, plan: DayPlan, with_snapshot: bool = True) -> list[str]:
    """Both streams with disjoint outages (so neither alone covers the day); returns the raw keys."""
    eu = write_stream_day(store, "eu-1", plan, session="eu", skip=range(10, 14), with_snapshot=with_snapshot)
    ap = write_stream_day(store, "ap-1", plan, session="ap", skip=range(30, 33), with_snapshot=with_snapshot)
    return [i.key for i in eu + ap]


def run_partition(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    date: str,
    symbol: str | None = None,
    kind: str = "merge",
) -> dg.ExecuteInProcessResult:
    """One run of ``date``: the symbol named (as ``depth-pipeline run --symbols`` does), or all of them."""
    symbols = [symbol] if symbol else None
    return defs.resolve_job_def("depth_daily").execute_in_process(
        instance=instance,
        partition_key=date,
        run_config=day_run_config(symbols),
        tags=day_run_tags(date, symbols, kind),
        raise_on_error=False,
    )


def run_cleanup(
    defs: dg.Definitions, instance: dg.DagsterInstance, date: str, symbol: str, retention_days: float = 0.0
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("depth_cleanup").execute_in_process(
        instance=instance,
        partition_key=date,
        run_config=cleanup_run_config([symbol], retention_days),
        tags=day_run_tags(date, [symbol], "cleanup"),
        raise_on_error=False,
    )


def cleanup_output(result: dg.ExecuteInProcessResult, symbol: str = "BTCUSDT") -> dict[str, Any]:
    out: dict[str, Any] = decode_results(result.output_for_node("cleanup_raw"))[symbol]
    return out


def day_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """The per-symbol outcome table of the run's ``merged_depth`` materialization, by symbol."""
    (mat,) = [
        m
        for m in result.asset_materializations_for_node("merged_depth_day")
        if m.asset_key.path == ["merged_depth"]
    ]
    table: Any = mat.metadata["symbol_outcomes"].value
    return {r.data["symbol"]: dict(r.data) for r in table.records}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data: Any = event.event_specific_data
            user = getattr(data, "user_failure_data", None)
            texts.append(user.description if user is not None else str(data.error.message))
    return "\n".join(texts)


def manifest(store: ObjectStore, date: str, symbol: str = "BTCUSDT") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(store.get_bytes(merged_manifest_key("spot", symbol, date)))
    return data


def raw_keys(store: ObjectStore) -> set[str]:
    return {i.key for i in store.list("raw/")}


def sensor(defs: dg.Definitions, name: str) -> dg.SensorDefinition:
    return defs.get_repository_def().get_sensor_def(name)


def evaluate(
    defs: dg.Definitions,
    name: str,
    config: PipelineConfig,
    instance: dg.DagsterInstance,
    cursor: str | None = None,
) -> dg.SensorResult:
    from depth_pipeline.resources import build_resources

    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources(config))
    result = sensor(defs, name)(context)
    assert isinstance(result, dg.SensorResult)
    return result


def store_for(config: PipelineConfig) -> ObjectStore:
    return open_store(config.store_url)


__all__ = ["DayPlan", "build_definitions"]
