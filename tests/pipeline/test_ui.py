"""UI proof: a real ``dagster-webserver`` on loopback serves the asset graph, date partitions, checks,
sensors and schedule, and — after one day run of four symbols — the day's symbols with their outcomes and
the day's overview picture (GraphQL); headless Chromium renders the lineage, the merged asset's page, the
day's partition page with its table of symbols, and the overview in the quality report's dialog
(screenshots under ``artifacts/``; the tests skip, saying why, where Chromium is absent)."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from depth_pipeline.definitions import build_definitions
from depth_store import open_store
from tests.fixtures.chromium import chromium_binary, run_chromium, screenshot_after
from tests.fixtures.dagster import REPO_ROOT, Webserver, copy_repo_instance_config, pipeline_env
from tests.pipeline.helpers import make_config, run_partition, write_day
from tests.pipeline.rawgen import DayPlan

ARTIFACTS = REPO_ROOT / "artifacts"
_YESTERDAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
MERGED_DATE = _YESTERDAY.isoformat()
START_DATE = (_YESTERDAY - dt.timedelta(days=3)).isoformat()  # three empty dates to backfill before it
DAY_SYMBOLS = ("BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT")  # more than inline per-symbol reports (3)

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

DAY_QUERY = """
query($key: AssetKeyInput!, $date: String!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetMaterializations(partitions: [$date], limit: 1) {
        partition
        metadataEntries {
          label
          ... on TableMetadataEntry { table { records schema { columns { name } } } }
          ... on MarkdownMetadataEntry { mdStr }
          ... on TextMetadataEntry { text }
        }
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
    env = pipeline_env(str(root / "store"), streams="eu-1,ap-1", start_date=START_DATE)
    env["DEPTH_DERIVED_ASSETS"] = "1"
    # one day run of four symbols (merge, checks, quality reports and the day's overview) in the instance,
    # so the asset pages show the day's table of symbols and its overview picture
    store = open_store(str(root / "store"))
    for i, symbol in enumerate(DAY_SYMBOLS):
        write_day(store, DayPlan(MERGED_DATE, symbol=symbol, first_id=1_000_000 * (i + 1)))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        config = make_config(str(root / "store"), start_date=START_DATE, derived_assets=True)
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
    assert keys[0] == START_DATE and MERGED_DATE in keys and all("|" not in k for k in keys)

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
    """The day's materialization carries one table row per symbol: what the asset's partition page shows."""
    import json

    found = webserver.graphql(DAY_QUERY, {"key": {"path": ["merged_depth"]}, "date": MERGED_DATE})
    (day,) = found["assetNodeOrError"]["assetMaterializations"]
    assert day["partition"] == MERGED_DATE
    (table,) = [e["table"] for e in day["metadataEntries"] if e["label"] == "symbol_outcomes"]
    assert {"symbol", "status", "rows", "gaps", "coverage", "checks"} <= {
        c["name"] for c in table["schema"]["columns"]
    }
    rows = {r["symbol"]: r for r in map(json.loads, table["records"])}
    assert set(rows) == set(DAY_SYMBOLS)  # every symbol of the day named, none other
    for row in rows.values():
        assert row["status"] == "ok" and row["published"] is True and row["events"] == 60
        assert "blocking passed" in row["checks"] and row["gaps"] == 0
    (summary,) = [e["mdStr"] for e in day["metadataEntries"] if e["label"] == "summary"]
    assert f"{len(DAY_SYMBOLS)} of {len(DAY_SYMBOLS)} symbols ok" in summary


def test_graphql_shows_the_days_overview_on_the_quality_report(webserver: Webserver) -> None:
    """The day's ``depth_quality_report`` materialization shows every symbol on one picture (inline PNG)
    and names where it is stored."""
    import base64
    import io
    import re

    from PIL import Image  # matplotlib's own dependency

    found = webserver.graphql(DAY_QUERY, {"key": {"path": ["depth_quality_report"]}, "date": MERGED_DATE})
    (day,) = found["assetNodeOrError"]["assetMaterializations"]
    entries = {e["label"]: e for e in day["metadataEntries"]}
    assert entries["overview_key"]["text"] == f"quality/market=spot/date={MERGED_DATE}/overview.png"
    match = re.match(
        rf"!\[overview of {MERGED_DATE}\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)",
        entries["report"]["mdStr"],
    )
    assert match, entries["report"]["mdStr"][:200]
    image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert image.size[0] >= 1000 and image.size[1] >= 200
    for symbol in DAY_SYMBOLS:  # more symbols than are inlined: each one's report is listed by key
        assert (
            f"quality/market=spot/symbol={symbol}/date={MERGED_DATE}/quality.md" in entries["report"]["mdStr"]
        )


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
    first = dt.date.fromisoformat(START_DATE)
    names = [(first + dt.timedelta(days=d)).isoformat() for d in range(3)]  # one run per date, all symbols
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


@pytest.mark.slow
def test_chromium_renders_lineage_and_merged_asset_page(webserver: Webserver) -> None:
    binary = chromium_binary()
    ARTIFACTS.mkdir(exist_ok=True)
    pages = {
        "ui-lineage.png": (
            f"{webserver.url}/assets/merged_depth?view=lineage&lineageScope=upstream&lineageDepth=2"
        ),
        "ui-merged-depth.png": f"{webserver.url}/assets/merged_depth",
    }
    for name, url in pages.items():
        dom = run_chromium(binary, url, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-1000:]
        assert "merged_depth" in dom.stdout
        if "merged-depth" in name:  # the latest materialization and its metadata are on the page
            assert MERGED_DATE in dom.stdout and "symbol_outcomes" in dom.stdout
        if "lineage" in name:  # nodes render as their last path part inside their group box
            for label in ("raw", "validated", "merged", "eu-1", "ap-1"):
                assert label in dom.stdout, label
        shot = run_chromium(binary, url, f"--screenshot={ARTIFACTS / name}")
        assert shot.returncode == 0, shot.stderr[-1000:]
        assert (ARTIFACTS / name).stat().st_size > 10_000


def _assert_real_picture(path: Path, size: tuple[int, int]) -> None:
    """A screenshot of the page, not a blank or half-drawn one: its size, bytes, colours and ink."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    assert image.size == size and path.stat().st_size > 30_000
    pixels = np.asarray(image.resize((size[0] // 4, size[1] // 4))).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    ink = float((pixels.min(axis=1) < 200).mean())  # text, lines, bars
    assert colours > 50 and ink > 0.03, (colours, ink)


@pytest.mark.slow
def test_chromium_shows_the_days_partition_page_with_its_symbols(
    webserver: Webserver, tmp_path: Path
) -> None:
    """The partition page of the day on ``merged_depth``: its latest materialization and the table of symbols
    (a screenshot in tmp and ``artifacts/ui-day-partition.png``)."""
    binary = chromium_binary()
    url = f"{webserver.url}/assets/merged_depth?view=partitions&partition={MERGED_DATE}"
    size = (1400, 1200)  # tall enough for the four rows of the table
    dom = run_chromium(binary, url, "--dump-dom", size=size)
    assert dom.returncode == 0, dom.stderr[-1000:]
    assert "symbol_outcomes" in dom.stdout and MERGED_DATE in dom.stdout
    for symbol in DAY_SYMBOLS:
        assert f">{symbol}<" in dom.stdout, symbol  # a cell of the table
    shot_path = tmp_path / "ui-day-partition.png"
    shot = run_chromium(binary, url, f"--screenshot={shot_path}", size=size)
    assert shot.returncode == 0, shot.stderr[-1000:]
    _assert_real_picture(shot_path, size)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot_path, ARTIFACTS / shot_path.name)


OPEN_REPORT_JS = """
new Promise((resolve, reject) => {
  const until = Date.now() + 45000;
  let clicked = false;
  const tick = () => {
    const link = [...document.querySelectorAll("*")]
      .find(e => e.childElementCount === 0 && e.textContent.trim() === "[Show Markdown]");
    if (link && !clicked) { link.click(); clicked = true; }
    const img = [...document.querySelectorAll("img")]
      .find(i => i.src.startsWith("data:image/png") && i.complete && i.naturalWidth > 0);
    if (img) { resolve([img.naturalWidth, img.naturalHeight]); return; }
    if (Date.now() > until) {
      reject(new Error("no overview picture; report link clicked: " + clicked));
      return;
    }
    setTimeout(tick, 100);
  };
  tick();
})
"""


@pytest.mark.slow
def test_chromium_shows_the_days_overview_in_the_quality_report(webserver: Webserver, tmp_path: Path) -> None:
    """The quality report's partition page, its report opened (a click over the DevTools protocol): the
    day's overview picture of every symbol is on screen (``artifacts/ui-day-overview.png``)."""
    binary = chromium_binary()
    url = f"{webserver.url}/assets/depth_quality_report?view=partitions&partition={MERGED_DATE}"
    shot_path = tmp_path / "ui-day-overview.png"
    width, height = screenshot_after(binary, url, OPEN_REPORT_JS, shot_path, size=(1400, 900))
    assert width >= 1000 and height >= 200  # the overview PNG as the dialog loaded it
    _assert_real_picture(shot_path, (1400, 900))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot_path, ARTIFACTS / shot_path.name)
