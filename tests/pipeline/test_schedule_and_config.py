"""The daily schedule asks for the previous UTC day, one run per symbol; configuration errors are named."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from depth_pipeline.config import ConfigError, PipelineConfig
from depth_pipeline.definitions import build_definitions


def test_schedule_requests_previous_day_one_run_per_symbol(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = PipelineConfig.from_env(
        {"DEPTH_STORE_URL": str(tmp_path), "DEPTH_SYMBOLS": "btcusdt,ETHUSDT", "DEPTH_SCHEDULE_TIME": "01:15"}
    )
    repository = build_definitions(config).get_repository_def()
    schedule = repository.get_schedule_def("depth_daily_schedule")
    assert schedule.cron_schedule == "15 1 * * *" and schedule.execution_timezone == "UTC"
    tick = dt.datetime(2026, 11, 25, 1, 15, tzinfo=dt.UTC)
    context = dg.build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=tick, repository_def=repository
    )
    requests = schedule.evaluate_tick(context).run_requests or []
    assert [r.partition_key for r in requests] == ["2026-11-24|BTCUSDT", "2026-11-24|ETHUSDT"]
    assert len({r.run_key for r in requests}) == 2


def test_retention_cleanup_schedule_requests_days_past_retention(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    tick = dt.datetime(2026, 11, 25, 2, 30, tzinfo=dt.UTC)
    for retention, expected in ((0.0, None), (1.0, "2026-11-23"), (2.5, "2026-11-21")):
        config = PipelineConfig(store_url=str(tmp_path), symbols=("BTCUSDT",), retention_days=retention)
        repository = build_definitions(config).get_repository_def()
        schedule = repository.get_schedule_def("depth_retention_cleanup_schedule")
        context = dg.build_schedule_context(
            instance=dagster_instance, scheduled_execution_time=tick, repository_def=repository
        )
        requests = schedule.evaluate_tick(context).run_requests or []
        assert [r.partition_key for r in requests] == ([] if expected is None else [f"{expected}|BTCUSDT"])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEPTH_STREAMS": "eu-1,EU 2"}, "invalid collector id"),
        ({"DEPTH_SYMBOLS": "BTC/USDT"}, "invalid symbol"),
        ({"DEPTH_MARKET": "coinm"}, "invalid market"),
        ({"DEPTH_SCHEDULE_TIME": "25:00"}, "out of range"),
        ({"DEPTH_START_DATE": "2024-02-30"}, "invalid date"),
    ],
)
def test_invalid_configuration_is_refused_with_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.from_env(env)


def test_defaults() -> None:
    config = PipelineConfig.from_env({})
    assert (config.streams, config.symbols, config.market) == (("eu-1", "ap-1"), ("BTCUSDT",), "spot")
    assert (config.schedule_hour, config.schedule_minute, config.retention_days) == (0, 30, 0.0)
    assert config.silence_seconds + config.sensor_interval_seconds <= 120
