"""The daily schedule asks for the previous UTC day, one run for all its symbols; configuration errors are
named."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import pytest

from depth_pipeline.config import ConfigError, PipelineConfig
from depth_pipeline.definitions import build_definitions
from depth_pipeline.resources import DepthSettingsResource, DepthStoreResource, build_resources


def test_schedule_requests_previous_day_one_run_for_all_symbols(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    config = PipelineConfig.from_env(
        {
            "DEPTH_STORE_URL": str(tmp_path),
            "DEPTH_SYMBOLS": "btcusdt,ETHUSDT",
            "DEPTH_SCHEDULE_TIME": "01:15",
            "DEPTH_START_DATE": "2026-11-01",
        }
    )
    repository = build_definitions(config).get_repository_def()
    schedule = repository.get_schedule_def("depth_daily_schedule")
    assert schedule.cron_schedule == "15 1 * * *" and schedule.execution_timezone == "UTC"
    tick = dt.datetime(2026, 11, 25, 1, 15, tzinfo=dt.UTC)
    context = dg.build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=tick, repository_def=repository
    )
    requests = schedule.evaluate_tick(context).run_requests or []
    assert [r.partition_key for r in requests] == ["2026-11-24"]
    # every symbol the day's raw data holds (DEPTH_SYMBOLS filters inside the run), one writer per date
    assert requests[0].run_config == {"resources": {"day_run": {"config": {"symbols": []}}}}
    assert requests[0].tags["depth/date"] == "2026-11-24" and requests[0].tags["depth/symbols"] == "*"


def test_retention_cleanup_schedule_requests_days_past_retention(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    tick = dt.datetime(2026, 11, 25, 2, 30, tzinfo=dt.UTC)
    for retention, expected in ((0.0, None), (1.0, "2026-11-23"), (2.5, "2026-11-21")):
        config = PipelineConfig(store_url=str(tmp_path), start_date="2026-11-01", retention_days=retention)
        repository = build_definitions(config).get_repository_def()
        schedule = repository.get_schedule_def("depth_retention_cleanup_schedule")
        context = dg.build_schedule_context(
            instance=dagster_instance, scheduled_execution_time=tick, repository_def=repository
        )
        requests = schedule.evaluate_tick(context).run_requests or []
        assert [r.partition_key for r in requests] == ([] if expected is None else [expected])


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
    # no symbol list: every symbol the day's raw data holds; no start date: the store's first data date
    assert (config.streams, config.symbols, config.market) == (("eu-1", "ap-1"), (), "spot")
    assert config.start_date is None and config.symbols_per_step == 0 and config.executor == "multiprocess"
    assert (config.schedule_hour, config.schedule_minute, config.retention_days) == (0, 30, 0.0)
    assert config.silence_seconds + config.sensor_interval_seconds <= 120


def test_partitions_start_at_the_stores_data_and_stay_under_100k_keys(tmp_path: Path) -> None:
    """A new install's dates start the day before its first raw folder (an object filed under a date may
    hold the previous day's events), a run's marker keeps them there after cleanup, and three years of
    days are about a thousand keys per asset whatever the number of symbols."""
    from depth_pipeline.daydata import first_date, record_first_date
    from depth_store import open_store
    from tests.pipeline.helpers import write_day
    from tests.pipeline.rawgen import DayPlan

    store = open_store(str(tmp_path / "store"))
    assert first_date(store, "spot", ["eu-1", "ap-1"]) is None
    write_day(store, DayPlan("2026-11-20"))
    assert first_date(store, "spot", ["eu-1", "ap-1"]) == "2026-11-19"
    config = PipelineConfig(store_url=str(tmp_path / "store"))
    partitions = build_definitions(config).resolve_job_def("depth_daily").partitions_def
    assert partitions is not None and partitions.get_partition_keys()[0] == "2026-11-19"
    record_first_date(store, "spot", "2026-11-15")
    assert first_date(store, "spot", ["eu-1", "ap-1"]) == "2026-11-15"
    three_years = dg.DailyPartitionsDefinition(start_date="2023-12-06", timezone="UTC", end_offset=1)
    assert len(three_years.get_partition_keys()) < 1_200  # per asset, for 1 or 600 symbols alike


def test_the_demos_partitions_start_at_its_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``make demo`` then ``make ui``: the demo's settings (``demo.env``) give date partitions that start at
    the demo's data — one date for a capture merged today, not 2,140 "missing" dates back to 2024-01-01 —
    even when the shell exports a DEPTH_START_DATE meant for another store."""
    from depth_pipeline.daydata import record_first_date
    from depth_pipeline.demo.run import pipeline_env
    from depth_store import open_store
    from tests.pipeline.helpers import write_day
    from tests.pipeline.rawgen import DayPlan

    monkeypatch.setenv("DEPTH_START_DATE", "2024-01-01")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    env = pipeline_env(tmp_path / "store", ["BTCUSDT", "ETHUSDT"], tmp_path / "home")
    config = PipelineConfig.from_env({**os.environ, **env})
    assert config.start_date is None

    def dates() -> list[str]:
        partitions = build_definitions(config).resolve_job_def("depth_daily").partitions_def
        assert partitions is not None
        return partitions.get_partition_keys()

    store = open_store(str(tmp_path / "store"))
    write_day(store, DayPlan(today))  # the capture's raw objects, filed under today
    record_first_date(store, "spot", today)  # what the demo's `depth-pipeline run --date today` records
    assert dates() == [today]
    earlier = (dt.date.fromisoformat(today) - dt.timedelta(days=3)).isoformat()
    record_first_date(store, "spot", earlier)  # a capture that spanned days starts at its first
    assert dates()[0] == earlier and len(dates()) == 4


def test_definitions_read_the_environment_when_loaded_and_resources_name_their_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``defs`` is a ``@dg.definitions`` function: importing the module reads nothing; loading it does.
    The store URL and market resources are ``dg.EnvVar`` fields that a run resolves from its environment."""
    import importlib

    import depth_pipeline.definitions as module

    monkeypatch.setenv("DEPTH_STREAMS", "not a valid stream id!")
    importlib.reload(module)  # no error: the environment is not read at import
    with pytest.raises(ConfigError, match="stream"):
        module.defs()
    monkeypatch.setenv("DEPTH_STREAMS", "eu-1,ap-1")
    monkeypatch.setenv("DEPTH_STORE_URL", str(tmp_path))
    monkeypatch.setenv("DEPTH_START_DATE", "2026-11-01")
    monkeypatch.setenv("DEPTH_MARKET", "usdm")
    assert isinstance(module.defs(), dg.Definitions)

    resources = build_resources(PipelineConfig.from_env())
    assert (
        isinstance(resources["store"].url, dg.EnvVar)
        and resources["store"].url.env_var_name == "DEPTH_STORE_URL"
    )
    assert isinstance(resources["settings"].market, dg.EnvVar)
    # a configuration built in code (tests, benchmarks) keeps its values
    assert build_resources(PipelineConfig(store_url=str(tmp_path / "other")))["store"].url == str(
        tmp_path / "other"
    )

    @dg.asset
    def seen(store: DepthStoreResource, settings: DepthSettingsResource) -> dict[str, str]:
        return {"url": store.url, "market": settings.market_name}

    result = dg.materialize([seen], resources={k: resources[k] for k in ("store", "settings")})
    assert result.output_for_node("seen") == {"url": str(tmp_path), "market": "usdm"}


def test_steps_are_sized_to_the_parallel_slots_and_dealt_in_turn() -> None:
    """auto (DEPTH_SYMBOLS_PER_STEP unset or "auto"): 2 steps per parallel slot, 25 to 100 symbols a step; a
    number is taken as is; symbols are dealt to the steps in turn, each step at most that many."""
    from depth_pipeline.assets.merged import batches_of, step_size

    assert PipelineConfig.from_env({"DEPTH_SYMBOLS_PER_STEP": "auto"}).symbols_per_step == 0
    assert PipelineConfig.from_env({"DEPTH_SYMBOLS_PER_STEP": "40"}).symbols_per_step == 40
    assert [step_size(n, 0, 2) for n in (1, 100, 400, 1000)] == [25, 25, 100, 100]
    assert step_size(400, 0, 32) == 25 and step_size(400, 40, 2) == 40
    symbols = [f"S{i:03d}" for i in range(10)]
    batches = batches_of(symbols, 4)
    assert batches == [symbols[0::3], symbols[1::3], symbols[2::3]] and max(map(len, batches)) <= 4
    assert sorted(s for b in batches for s in b) == symbols and batches_of([], 25) == []
