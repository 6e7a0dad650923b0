"""The pipeline on S3 (a real moto server over HTTP) and on the production instance config
(deploy/dagster-postgres.yaml) backed by a real PostgreSQL cluster started for the tests."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest

from depth_pipeline.definitions import build_definitions
from depth_store import open_store
from tests.pipeline.helpers import (
    cleanup_output,
    make_config,
    manifest,
    raw_keys,
    run_cleanup,
    run_partition,
    write_day,
)
from tests.pipeline.rawgen import DayPlan

REPO = Path(__file__).resolve().parents[2]
DATE = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)).isoformat()


def test_merge_and_cleanup_on_s3(s3_env: str, dagster_instance: dg.DagsterInstance) -> None:
    config = make_config(s3_env)
    store = open_store(s3_env)
    written = set(write_day(store, DayPlan(DATE)))
    defs = build_definitions(config)
    merge = run_partition(defs, dagster_instance, DATE, "BTCUSDT")
    assert merge.success
    assert {o["key"] for o in manifest(store, DATE)["raw_objects"]} == written
    assert all(o["etag"] for o in manifest(store, DATE)["raw_objects"])
    cleanup = run_cleanup(defs, dagster_instance, DATE, "BTCUSDT")
    assert cleanup.success and sorted(cleanup_output(cleanup)["deleted"]) == sorted(written)
    assert raw_keys(store) == set()


def test_postgres_backed_production_instance_runs_the_pipeline(
    tmp_path: Path, postgres_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = urlparse(postgres_db_url)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused-with-trust-auth")
    monkeypatch.setenv("DAGSTER_PG_DB", url.path.lstrip("/"))
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    config = make_config(str(tmp_path / "store"))
    store = open_store(config.store_url)
    written = set(write_day(store, DayPlan(DATE)))
    defs = build_definitions(config)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        merge = run_partition(defs, instance, DATE, "BTCUSDT")
        assert merge.success
        cleanup = run_cleanup(defs, instance, DATE, "BTCUSDT")
        assert cleanup.success
        assert sorted(cleanup_output(cleanup)["deleted"]) == sorted(written)
    with dg.DagsterInstance.from_config(
        str(home)
    ) as reopened:  # recorded in PostgreSQL, seen by a new process
        statuses = sorted((r.job_name, r.status.value) for r in reopened.get_runs())
        assert statuses == [("depth_cleanup", "SUCCESS"), ("depth_daily", "SUCCESS")]
        assert reopened.get_materialized_partitions(dg.AssetKey("merged_depth")) == {DATE}
    assert raw_keys(store) == set()
