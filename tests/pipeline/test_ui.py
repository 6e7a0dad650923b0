"""UI proof: a real ``dagster-webserver`` on loopback serves the asset graph, date partitions, checks,
sensors and schedule, and a day's symbols with their outcomes (GraphQL), and headless Chromium renders the
lineage and the merged asset's page."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from depth_pipeline.definitions import build_definitions
from depth_store import open_store
from tests.fixtures.dagster import REPO_ROOT, Webserver, copy_repo_instance_config, pipeline_env
from tests.pipeline.helpers import make_config, run_partition, write_day
from tests.pipeline.rawgen import DayPlan

ARTIFACTS = REPO_ROOT / "artifacts"
MERGED_DATE = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()

ASSET_QUERY = """
{
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    isMaterializable
    partitionDefinition { type }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}
"""

REPO_QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        sensors { name sensorType }
        schedules { name cronSchedule executionTimezone }
        jobs { name }
      }
    }
  }
}
"""

MATERIALIZED_QUERY = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions }
      assetMaterializations(limit: 1) {
        partition
        metadataEntries { label ... on TableMetadataEntry { table { records } } }
      }
    }
  }
}
"""

PARTITION_KEYS_QUERY = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { partitionKeysByDimension { name partitionKeys } }
  }
}
"""


@pytest.fixture(scope="module")
def webserver() -> Iterator[Webserver]:
    root = Path(tempfile.mkdtemp(prefix="depth-ui-"))
    home = root / "home"
    home.mkdir()
    copy_repo_instance_config(home)
    env = pipeline_env(str(root / "store"), streams="eu-1,ap-1", start_date="2026-11-01")
    env["DEPTH_DERIVED_ASSETS"] = "1"
    # one merged day of two symbols in the instance, so the asset page shows the day's table of symbols
    store = open_store(str(root / "store"))
    write_day(store, DayPlan(MERGED_DATE))
    write_day(store, DayPlan(MERGED_DATE, symbol="ETHUSDT"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        config = make_config(str(root / "store"), start_date="2026-11-01")
        assert run_partition(build_definitions(config), instance, MERGED_DATE).success
    server = Webserver(home, env, root / "webserver.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_graphql_shows_graph_partitions_checks_sensors_schedule(webserver: Webserver) -> None:
    nodes = {"/".join(n["assetKey"]["path"]): n for n in webserver.graphql(ASSET_QUERY)["assetNodes"]}
    assert {"raw/eu-1", "raw/ap-1", "validated/eu-1", "validated/ap-1", "merged_depth"} <= set(nodes)
    assert {"book_top25_1s", "depth_quality_report"} <= set(nodes)
    assert not nodes["raw/eu-1"]["isMaterializable"]  # external: the collectors write it
    for stream in ("eu-1", "ap-1"):
        assert [d["path"] for d in nodes[f"validated/{stream}"]["dependencyKeys"]] == [["raw", stream]]
    merged_deps = {"/".join(d["path"]) for d in nodes["merged_depth"]["dependencyKeys"]}
    assert merged_deps == {"validated/eu-1", "validated/ap-1", "merged_depth"}  # + its own previous day
    for node in nodes.values():  # one daily dimension: the symbols of a day are inside its run
        assert node["partitionDefinition"]["type"] == "TIME_WINDOW"
    checks = {c["name"]: c["blocking"] for c in nodes["merged_depth"]["assetChecksOrError"]["checks"]}
    assert checks["gaps_missed_by_every_stream"] is True and checks["book_never_crossed"] is True
    assert "raw_data_present" in {c["name"] for c in nodes["validated/eu-1"]["assetChecksOrError"]["checks"]}

    stats = webserver.graphql(MATERIALIZED_QUERY, {"key": {"path": ["merged_depth"]}})["assetNodeOrError"]
    assert stats["partitionStats"]["numMaterialized"] == 1
    (latest,) = stats["assetMaterializations"]
    assert latest["partition"] == MERGED_DATE
    entries = {e["label"] for e in latest["metadataEntries"]}
    assert {"events", "blocking_checks_passed", "summary", "symbol_outcomes", "dagster/row_count"} <= entries

    dims = webserver.graphql(PARTITION_KEYS_QUERY, {"key": {"path": ["merged_depth"]}})["assetNodeOrError"]
    (keys,) = [d["partitionKeys"] for d in dims["partitionKeysByDimension"]]
    assert keys[0] == "2026-11-01" and MERGED_DATE in keys and all("|" not in k for k in keys)

    (repo,) = webserver.graphql(REPO_QUERY)["repositoriesOrError"]["nodes"]

    (repo,) = webserver.graphql(REPO_QUERY)["repositoriesOrError"]["nodes"]
    sensors = {s["name"]: s["sensorType"] for s in repo["sensors"]}
    assert sensors == {
        "raw_arrival_sensor": "STANDARD",
        "stream_gap_sensor": "STANDARD",
        "late_data_sensor": "STANDARD",
        "cleanup_after_merge_sensor": "RUN_STATUS",
        "reconcile_sensor": "STANDARD",
    }
    schedules = {s["name"]: (s["cronSchedule"], s["executionTimezone"]) for s in repo["schedules"]}
    assert schedules == {
        "depth_daily_schedule": ("30 0 * * *", "UTC"),
        "depth_retention_cleanup_schedule": ("30 2 * * *", "UTC"),
    }
    assert {"depth_daily", "depth_cleanup"} <= {j["name"] for j in repo["jobs"]}


def test_graphql_shows_a_days_symbols_with_their_outcomes(webserver: Webserver) -> None:
    """The day's materialization carries one table row per symbol: what the asset page shows."""
    import json

    stats = webserver.graphql(MATERIALIZED_QUERY, {"key": {"path": ["merged_depth"]}})["assetNodeOrError"]
    (latest,) = stats["assetMaterializations"]
    (table,) = [e["table"] for e in latest["metadataEntries"] if e["label"] == "symbol_outcomes"]
    rows = {r["symbol"]: r for r in map(json.loads, table["records"])}
    assert set(rows) == {"BTCUSDT", "ETHUSDT"}
    for row in rows.values():
        assert row["status"] == "ok" and row["published"] is True and row["events"] == 60
        assert "blocking passed" in row["checks"] and row["gaps"] == 0


BACKFILL_MUTATION = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

BACKFILL_QUERY = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions partitionNames assetSelection { path } }
  }
}
"""


def test_ui_accepts_a_date_range_backfill(webserver: Webserver) -> None:
    names = [f"2026-11-0{d}" for d in (2, 3, 4)]  # one run per date, every symbol inside it
    params = {
        "partitionNames": names,
        "assetSelection": [
            {"path": ["validated", "eu-1"]},
            {"path": ["validated", "ap-1"]},
            {"path": ["merged_depth"]},
        ],
        "fromFailure": False,
    }
    launched = webserver.graphql(BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = webserver.graphql(BACKFILL_QUERY, {"id": launched["backfillId"]})["partitionBackfillOrError"]
    assert backfill["status"] == "REQUESTED" and backfill["numPartitions"] == 3
    assert ["merged_depth"] in [a["path"] for a in backfill["assetSelection"]]


def chromium_binary() -> str:
    """Debian's chromium; installed with apt-get when missing and we are root, else the test skips."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root")
    install = subprocess.run(
        ["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, timeout=600, check=False
    )
    if install.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, check=False)
        install = subprocess.run(
            ["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, timeout=600, check=False
        )
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"could not install chromium: {install.stderr[-500:]}")
    return found


def _chromium(binary: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="depth-chromium-")
    try:
        return subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--window-size=1400,900",
                "--virtual-time-budget=15000",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            start_new_session=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_chromium_renders_lineage_and_merged_asset_page(webserver: Webserver) -> None:
    binary = chromium_binary()
    ARTIFACTS.mkdir(exist_ok=True)
    pages = {
        "ui-lineage.png": f"{webserver.url}/assets/merged_depth?view=lineage&lineageScope=upstream&lineageDepth=2",
        "ui-merged-depth.png": f"{webserver.url}/assets/merged_depth",
    }
    for name, url in pages.items():
        dom = _chromium(binary, url, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-1000:]
        assert "merged_depth" in dom.stdout
        if "merged-depth" in name:  # the latest materialization and its metadata are on the page
            assert MERGED_DATE in dom.stdout and "symbol_outcomes" in dom.stdout
        if "lineage" in name:  # nodes render as their last path part inside their group box
            for label in ("raw", "validated", "merged", "eu-1", "ap-1"):
                assert label in dom.stdout, label
        shot = _chromium(binary, url, f"--screenshot={ARTIFACTS / name}")
        assert shot.returncode == 0, shot.stderr[-1000:]
        assert (ARTIFACTS / name).stat().st_size > 10_000
