"""GraphQL asset-page and partition-status query times at 600 symbols x 3 years: ``date x symbol``
multi-partitions (the earlier model) against date-only partitions (the current one).

    .venv/bin/python -m benchmarks.bench_partitions_ui [--symbols 600] [--days 1096] [--materialized-days 10]

For each model a small code location with our asset shape (raw/<stream> external, validated/<stream>,
merged_depth with its previous-day dependency) is served by a real ``dagster-webserver`` on a fresh
SQLite instance holding materializations of the last ``--materialized-days`` days (every symbol); the UI's
queries are then timed (median of 5): the asset page (definition, partition keys, checks, the latest
materialization) and the partition-status bar (``assetPartitionStatuses``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

ASSET_PAGE = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      id assetKey { path } description
      partitionDefinition { type description }
      partitionKeysByDimension { name partitionKeys }
      assetChecksOrError { ... on AssetChecks { checks { name } } }
      assetMaterializations(limit: 1) { partition metadataEntries { label } }
    }
  }
}
"""

PARTITION_STATUS = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { status startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges { primaryDimStartKey primaryDimEndKey
                   secondaryDim { ... on DefaultPartitionStatuses { materializedPartitions } } }
        }
      }
    }
  }
}
"""

CODE = """
import dagster as dg
import os

SYMBOLS = [f"S{{i:04d}}USDT" for i in range({symbols})]
START = "{start}"
dates = dg.DailyPartitionsDefinition(start_date=START, end_date="{end}", timezone="UTC")
if "{model}" == "multi":
    parts = dg.MultiPartitionsDefinition({{"date": dates, "symbol": dg.StaticPartitionsDefinition(SYMBOLS)}})
    prev = dg.MultiPartitionMapping({{
        "date": dg.DimensionPartitionMapping("date", dg.TimeWindowPartitionMapping(
            start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)),
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping())}})
else:
    parts = dates
    prev = dg.TimeWindowPartitionMapping(
        start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)

raw = [dg.AssetSpec(["raw", s], partitions_def=parts) for s in ("eu-1", "ap-1")]

def validated(stream):
    @dg.asset(key=["validated", stream], deps=[["raw", stream]], partitions_def=parts,
              check_specs=[dg.AssetCheckSpec("raw_data_present", asset=["validated", stream])])
    def _v():
        return None
    return _v

@dg.asset(key="merged_depth", partitions_def=parts,
          deps=[["validated", "eu-1"], ["validated", "ap-1"],
                dg.AssetDep("merged_depth", partition_mapping=prev)],
          check_specs=[dg.AssetCheckSpec("gaps_missed_by_every_stream", asset="merged_depth")])
def merged_depth():
    return None

defs = dg.Definitions(assets=[*raw, validated("eu-1"), validated("ap-1"), merged_depth])
"""


def _post(url: str, query: str, variables: dict[str, object]) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        payload: dict[str, Any] = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(payload["errors"])
    return payload


def _timed(url: str, query: str, key: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        _post(url, query, {"key": {"path": key}})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _seed(home: Path, workdir: Path, model: str, symbols: int, days: list[str]) -> None:
    """Record a materialization of merged_depth for every (day, symbol) of ``days`` (one per day: date)."""
    script = textwrap.dedent(f"""
        import dagster as dg
        with dg.DagsterInstance.get() as instance:
            for day in {days!r}:
                if "{model}" == "multi":
                    for i in range({symbols}):
                        key = dg.MultiPartitionKey({{"date": day, "symbol": f"S{{i:04d}}USDT"}})
                        instance.report_runless_asset_event(
                            dg.AssetMaterialization("merged_depth", partition=key))
                else:
                    instance.report_runless_asset_event(dg.AssetMaterialization("merged_depth", partition=day,
                        metadata={{"symbols": {symbols}}}))
    """)
    subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env={**os.environ, "DAGSTER_HOME": str(home)}, check=True
    )


def measure(
    model: str, symbols: int, start: str, end: str, materialized: list[str]
) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory(prefix=f"bench-ui-{model}-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        (root / "bench_location.py").write_text(
            CODE.format(symbols=symbols, start=start, end=end, model=model)
        )
        seeded = time.perf_counter()
        _seed(home, root, model, symbols, materialized)
        seed_s = time.perf_counter() - seeded
        port = 34000 + (os.getpid() % 1000)
        exe = Path(sys.executable).parent / "dagster-webserver"
        env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(root)}
        proc = subprocess.Popen(
            [str(exe), "-m", "bench_location", "-h", "127.0.0.1", "-p", str(port)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(f"{url}/server_info", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("webserver did not start") from None
                    time.sleep(0.25)  # polling a server's readiness
            _post(url, "{ assetNodes { id } }", {})  # load the code location once
            return {
                "partition_keys_per_asset": len(
                    _post(url, ASSET_PAGE, {"key": {"path": ["merged_depth"]}})["data"]["assetNodeOrError"][
                        "partitionKeysByDimension"
                    ][0]["partitionKeys"]
                )
                * (symbols if model == "multi" else 1),
                "asset_page_s": _timed(url, ASSET_PAGE, ["merged_depth"]),
                "partition_status_s": _timed(url, PARTITION_STATUS, ["merged_depth"]),
                "seed_events": len(materialized) * (symbols if model == "multi" else 1),
                "seed_s": seed_s,
            }
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--days", type=int, default=1096)
    parser.add_argument("--materialized-days", type=int, default=10)
    args = parser.parse_args()
    import datetime as dt

    start = dt.date(2024, 1, 1)
    end = start + dt.timedelta(days=args.days)
    materialized = [(end - dt.timedelta(days=i + 1)).isoformat() for i in range(args.materialized_days)]
    for model in ("multi", "date"):
        result = measure(model, args.symbols, start.isoformat(), end.isoformat(), materialized)
        label = "date x symbol" if model == "multi" else "date only"
        print(
            f"{label:14s} "
            + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
