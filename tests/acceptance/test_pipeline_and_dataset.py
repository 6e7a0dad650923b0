"""The Dagster code location (docs/pipeline.md), ``depth-pipeline`` and the merged dataset.

One module-scoped scenario drives the real commands on a fresh DAGSTER_HOME over a local store:
day A (2026-11-23) with a snapshot in both streams and disjoint outages, day B (2026-11-24) that only
chains into A (its image must be the carry), a day C (2026-11-22) that is never merged, and ETHUSDT
named but without raw data. Partitions are dates; a day's symbols are those its raw data holds. The checks
then read the outputs as an analyst would.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from depth_core.raw_format import LineKind, RawObjectKey, read_raw_object
from depth_store import open_store
from tests.pipeline.rawgen import DayPlan, day_start_ns, write_object, write_stream_day

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAY_A, DAY_B, DAY_C = "2026-11-23", "2026-11-24", "2026-11-22"
STREAMS = ("eu-1", "ap-1")
EU_OUTAGE, AP_OUTAGE = range(10, 14), range(30, 33)


@dataclass
class DecimalPlan(DayPlan):
    """rawgen's plan with decimals that do not survive a naive float round trip, and a level removal."""

    def event(self, i: int) -> tuple[int, bytes]:
        e_ms = day_start_ns(self.date) // 10**6 + int(self.start_offset_s * 1000) + 100 * i
        uid = self.first_id + i
        bids = [[f"{100 + (i % 5) * 0.01 + 0.03:.2f}", f"{(i % 7 + 1) * 0.00100001:.8f}"]]
        if i == 5:
            bids.append(["101.00", "0.00000000"])  # removes a level of the snapshot
        asks = [[f"{110 + (i % 5) * 0.01 + 0.13:.2f}", f"{(i % 3 + 1) * 0.1:.8f}"]]
        data = {"e": "depthUpdate", "E": e_ms, "s": self.symbol, "U": uid, "u": uid, "b": bids, "a": asks}
        frame = json.dumps(
            {"stream": f"{self.symbol.lower()}@depth@100ms", "data": data}, separators=(",", ":")
        )
        return (e_ms + self.latency_ms) * 10**6, frame.encode()


PLAN_A = DecimalPlan(DAY_A, first_id=1_000_000, events=60)
PLAN_B = DecimalPlan(DAY_B, first_id=1_000_060, events=40)
PLAN_C = DecimalPlan(DAY_C, first_id=500_000, events=20)


@dataclass
class Scenario:
    store_dir: Path
    home: Path
    env: dict[str, str]
    results: dict[str, subprocess.CompletedProcess[str]]
    raw_a: set[str]
    raw_b: set[str]
    raw_c: set[str]
    late_key: str
    raw_after_cleanup_a: set[str]


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("acceptance_pipeline")
    store_dir, home = root / "store", root / "dagster_home"
    home.mkdir()  # fresh and empty
    store = open_store(str(store_dir))
    raw_a: set[str] = set()
    for stream, skip in zip(STREAMS, (EU_OUTAGE, AP_OUTAGE), strict=True):
        raw_a |= {
            i.key for i in write_stream_day(store, stream, PLAN_A, session=stream.replace("-", ""), skip=skip)
        }
    raw_b = {
        i.key for s in STREAMS for i in write_stream_day(store, s, PLAN_B, session=s[:2], with_snapshot=False)
    }
    raw_c = {i.key for i in write_stream_day(store, "eu-1", PLAN_C, session="c")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPTH_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DEPTH_STORE_URL=str(store_dir),
        DEPTH_STREAMS=",".join(STREAMS),
        DEPTH_SYMBOLS="BTCUSDT,ETHUSDT",
        DEPTH_MARKET="spot",
        DAGSTER_TELEMETRY_DISABLED="1",
        DEPTH_DERIVED_ASSETS="0",  # documented switch; the derived 1 s grid alone takes ~20 s here
    )
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    results["run_a"] = run([str(BIN / "depth-pipeline"), "run", "--date", DAY_A, "--symbols", "BTCUSDT"], env)
    results["materialize_b"] = run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "depth_pipeline.definitions",
            "--select",
            "*",
            "--partition",
            DAY_B,
        ],
        env,
    )
    # a raw object of day A that arrives after A's merge: events eu-1 had missed
    late_lines = [(ns, LineKind.DEPTH, frame) for ns, frame in (PLAN_A.event(i) for i in EU_OUTAGE)]
    late_key = write_object(store, "eu-1", "BTCUSDT", late_lines, session="eulate").key
    results["cleanup_a"] = run(
        [str(BIN / "depth-pipeline"), "cleanup", "--date", DAY_A, "--symbols", "BTCUSDT"], env
    )
    raw_after_cleanup_a = {i.key for i in store.list("raw/")}
    # both symbols named: BTCUSDT is merged again (after the cleanup), ETHUSDT has no raw data
    results["run_b"] = run(
        [str(BIN / "depth-pipeline"), "run", "--date", DAY_B, "--symbols", "BTCUSDT,ETHUSDT"], env
    )
    results["cleanup_c"] = run(
        [str(BIN / "depth-pipeline"), "cleanup", "--date", DAY_C, "--symbols", "btcusdt"], env
    )
    return Scenario(store_dir, home, env, results, raw_a, raw_b, raw_c, late_key, raw_after_cleanup_a)


def raw_keys(s: Scenario) -> set[str]:
    return {i.key for i in open_store(str(s.store_dir)).list("raw/")}


def merged_files(s: Scenario, date: str, symbol: str = "BTCUSDT") -> list[Path]:
    return sorted(
        (s.store_dir / "merged" / "market=spot" / f"symbol={symbol}" / f"date={date}").glob("*.parquet")
    )


def merged_day(s: Scenario, date: str) -> list[dict[str, Any]]:
    tables = [pq.read_table(f) for f in merged_files(s, date)]
    assert tables, f"no merged Parquet for {date}"
    return pa.concat_tables(tables).to_pylist()


# ------------------------------------------------------------------------- the code location, the CLI


def test_workspace_loads_the_code_location_and_instance_config_is_sqlite_default() -> None:
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    modules = [e["python_module"] for e in workspace["load_from"] if "python_module" in e]
    names = [m if isinstance(m, str) else m.get("module_name") for m in modules]
    assert names == ["depth_pipeline.definitions"]
    instance = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text()) or {}
    assert not {"storage", "run_storage", "event_log_storage", "schedule_storage"} & set(instance)


def test_every_asset_is_partitioned_by_date(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEPTH_STORE_URL", str(tmp_path))
    monkeypatch.setenv("DEPTH_STREAMS", "eu-1,ap-1")
    monkeypatch.setenv("DEPTH_SYMBOLS", "BTCUSDT,ETHUSDT")
    monkeypatch.setenv("DEPTH_START_DATE", "2026-11-01")
    monkeypatch.setenv("DEPTH_MARKET", "spot")
    monkeypatch.delenv("DEPTH_DERIVED_ASSETS", raising=False)
    import importlib.util

    import depth_pipeline.definitions as module

    # executed afresh under another name: the code location as Dagster loads it, sys.modules left alone
    spec = importlib.util.spec_from_file_location("acceptance_definitions", str(module.__file__))
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    defs = fresh.defs()  # @dg.definitions: the environment is read when Dagster loads them
    assert isinstance(defs, dg.Definitions)
    graph = defs.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    assert len(keys) >= 3  # a validated asset per stream and the merge at least
    for key in keys:  # the symbols of a day are processed inside its run (docs/orchestration.md)
        pdef = graph.get(key).partitions_def
        assert isinstance(pdef, dg.DailyPartitionsDefinition), f"{key} is not partitioned by date"
        assert pdef.timezone in (None, "UTC")
        assert pdef.get_partition_keys()[0] == "2026-11-01" and DAY_B in pdef.get_partition_keys()


def partition_runs(s: Scenario, pk: str) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(s.home)) as instance:
        return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": pk})))


def test_standard_dagster_command_materializes_a_symbol_day(scenario: Scenario) -> None:
    done = scenario.results["materialize_b"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert merged_files(scenario, DAY_B)
    manifest = json.loads(
        (
            scenario.store_dir / f"merged/market=spot/symbol=BTCUSDT/date={DAY_B}/_coverage_manifest.json"
        ).read_text()
    )
    assert manifest["blocking_passed"] is True and manifest["gaps"] == []
    assert {r["stream"] for r in manifest["covered"]} <= set(STREAMS)
    runs = partition_runs(scenario, DAY_B)
    assert [r.status for r in runs if r.job_name == "__ASSET_JOB"] == [dg.DagsterRunStatus.SUCCESS]


def test_run_exits_0_when_every_run_succeeded_and_records_it(scenario: Scenario) -> None:
    done = scenario.results["run_a"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert merged_files(scenario, DAY_A)
    assert [r.status for r in partition_runs(scenario, DAY_A) if r.job_name == "depth_daily"] == [
        dg.DagsterRunStatus.SUCCESS
    ]


def test_run_reports_a_symbol_day_without_raw_data_and_exits_1(scenario: Scenario) -> None:
    done = scenario.results["run_b"]
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    eth = [ln for ln in out.splitlines() if "ETHUSDT" in ln and DAY_B in ln]
    btc = [ln for ln in out.splitlines() if "BTCUSDT" in ln and DAY_B in ln]
    assert any("no raw data" in ln.lower() for ln in eth), out
    assert btc and btc[0].startswith("ok"), f"re-merging a day after a cleanup works: {out}"
    # one run per date: the named symbol without raw data fails the run (after BTCUSDT was merged)
    assert [r.status for r in partition_runs(scenario, DAY_B)] == [
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.SUCCESS,
    ]


def test_a_symbol_day_without_raw_data_leaves_no_merged_output(scenario: Scenario) -> None:
    assert scenario.results["run_b"].returncode == 1
    folder = scenario.store_dir / f"merged/market=spot/symbol=ETHUSDT/date={DAY_B}"
    assert not folder.exists() or not any(folder.iterdir())


def test_gated_cleanup_deletes_only_merged_objects_and_keeps_late_ones(scenario: Scenario) -> None:
    done = scenario.results["cleanup_a"]
    assert done.returncode == 0, done.stdout + done.stderr
    left = raw_keys(scenario)
    assert not (scenario.raw_a & left), "every raw object of the verified merge of day A is deleted"
    assert scenario.late_key in left, "an object that arrived after the merge is kept"
    assert scenario.raw_c <= left, "an unmerged day is untouched"
    assert "kept 1 that arrived after the merge" in done.stdout, done.stdout


def test_cleanup_of_a_date_leaves_other_dates_raw_objects(scenario: Scenario) -> None:
    assert scenario.results["cleanup_a"].returncode == 0
    assert scenario.raw_b <= scenario.raw_after_cleanup_a


def test_cleanup_without_a_merge_deletes_nothing_and_says_why(scenario: Scenario) -> None:
    done = scenario.results["cleanup_c"]
    assert done.returncode == 1, done.stdout + done.stderr
    assert scenario.raw_c <= raw_keys(scenario)
    assert f"BTCUSDT {DAY_C}: deleted nothing: no merge of BTCUSDT {DAY_C} is recorded" in done.stdout, (
        done.stdout
    )


def test_nothing_but_raw_objects_under_raw(scenario: Scenario) -> None:
    store = open_store(str(scenario.store_dir))
    for info in store.list("raw/"):
        key = RawObjectKey.parse(info.key)  # raises for anything that is not a raw object key
        assert read_raw_object(store.get_bytes(key.key)).lines
    top = {p.name for p in scenario.store_dir.iterdir()}
    assert {"raw", "merged"} <= top


# ------------------------------------------------------------------------------- the merged dataset


def test_merged_schema_types_and_hive_path(scenario: Scenario) -> None:
    schema = pq.read_schema(merged_files(scenario, DAY_A)[0])
    expected = [
        "symbol",
        "exchange_time",
        "transaction_time",
        "receive_time",
        "first_update_id",
        "last_update_id",
        "prev_update_id",
        "is_snapshot",
        "side",
        "price",
        "qty",
        "source",
    ]
    assert [n for n in schema.names if n in expected] == expected
    for name in ("symbol", "side", "source"):
        assert pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(
            schema.field(name).type
        )
    for name in ("exchange_time", "transaction_time", "receive_time"):
        t = schema.field(name).type
        assert pa.types.is_timestamp(t) and t.tz in ("UTC", "+00:00", "Etc/UTC"), (name, t)
    assert schema.field("receive_time").type.unit == "ns"
    assert schema.field("exchange_time").type.unit in ("ms", "us", "ns")
    for name in ("first_update_id", "last_update_id", "prev_update_id"):
        assert schema.field(name).type == pa.int64()
    assert schema.field("is_snapshot").type == pa.bool_()
    assert schema.field("price").type == pa.float64() and schema.field("qty").type == pa.float64()


def test_rows_sorted_images_first_sources_and_event_dates(scenario: Scenario) -> None:
    for date, opening in ((DAY_A, "snapshot:"), (DAY_B, f"carry:{DAY_A}")):
        rows = merged_day(scenario, date)
        ids = [r["last_update_id"] for r in rows]
        assert ids == sorted(ids)
        assert rows[0]["is_snapshot"], f"{date} must begin with an image"
        for a, b in itertools.pairwise(rows):
            if a["last_update_id"] == b["last_update_id"] and b["is_snapshot"]:
                assert a["is_snapshot"], "an image comes before the events sharing its id"
        images = [r for r in rows if r["is_snapshot"]]
        assert all(r["source"].startswith(opening) for r in images), {r["source"] for r in images}
        if opening == "snapshot:":
            assert images[0]["source"].removeprefix("snapshot:") in STREAMS
        assert all(r["first_update_id"] == r["last_update_id"] for r in images)
        events = [r for r in rows if not r["is_snapshot"]]
        assert {r["source"] for r in events} <= set(STREAMS)
        assert all(r["exchange_time"].date().isoformat() == date for r in events)
        assert all(
            r["exchange_time"].tzinfo is not None and r["receive_time"].tzinfo is not None for r in rows
        )
        assert all(r["transaction_time"] is None and r["prev_update_id"] is None for r in rows)
        assert {r["side"] for r in rows} == {"bid", "ask"}
    rows_a = merged_day(scenario, DAY_A)
    by_id = {r["last_update_id"]: r["source"] for r in rows_a if not r["is_snapshot"]}
    assert all(by_id[PLAN_A.first_id + i] == "ap-1" for i in EU_OUTAGE)
    assert all(by_id[PLAN_A.first_id + i] == "eu-1" for i in AP_OUTAGE)
    assert set(by_id) == {PLAN_A.first_id + i for i in range(PLAN_A.events)}, "every id, no gap"
    image = [r for r in rows_a if r["is_snapshot"]]
    assert image[0]["last_update_id"] == PLAN_A.first_id - 1
    table = pa.concat_tables([pq.read_table(f) for f in merged_files(scenario, DAY_A)])
    receive_ns = table.column("receive_time").cast(pa.int64()).to_pylist()
    assert receive_ns[0] == PLAN_A.snapshot()[0], "an image's receive_time is its receive time, in ns"
    exchange_ms = table.column("exchange_time").cast(pa.int64()).to_pylist()  # unit of the column
    unit = {"ms": 10**6, "us": 10**3, "ns": 1}[table.schema.field("exchange_time").type.unit]
    assert exchange_ms[0] * unit // 10**6 == PLAN_A.snapshot()[0] // 10**6, (
        "spot image: E is its receive time"
    )
    assert receive_ns[len(image)] == PLAN_A.event(0)[0]


def test_file_names_sort_in_row_order(scenario: Scenario) -> None:
    last = -1
    for f in merged_files(scenario, DAY_A) + merged_files(scenario, DAY_B):
        ids = pq.read_table(f, columns=["last_update_id"]).column(0).to_pylist()
        assert ids[0] >= last
        last = ids[-1]


def truth_book(plans: list[DecimalPlan]) -> dict[tuple[str, Decimal], Decimal]:
    """The exchange's book after the plans' last event, from the decimal strings that were sent."""
    snap = json.loads(plans[0].snapshot()[1])
    book = {("bid", Decimal(p)): Decimal(q) for p, q in snap["bids"]}
    book |= {("ask", Decimal(p)): Decimal(q) for p, q in snap["asks"]}
    for plan in plans:
        for i in range(plan.events):
            data = json.loads(plan.event(i)[1])["data"]
            for side, levels in (("bid", data["b"]), ("ask", data["a"])):
                for p, q in levels:
                    if Decimal(q) == 0:
                        book.pop((side, Decimal(p)), None)
                    else:
                        book[(side, Decimal(p))] = Decimal(q)
    return book


def replay(rows: list[dict[str, Any]]) -> dict[tuple[str, Decimal], Decimal]:
    """Replay a day as docs/analysts.md says; floats converted through their shortest repr (the exact round
    trip)."""
    book: dict[tuple[str, Decimal], Decimal] = {}
    current_image: int | None = None
    for r in rows:
        if r["is_snapshot"]:
            if current_image != r["last_update_id"]:
                book, current_image = {}, r["last_update_id"]
        else:
            current_image = None
        key = (r["side"], Decimal(repr(r["price"])))
        if r["qty"] == 0:
            book.pop(key, None)
        else:
            book[key] = Decimal(repr(r["qty"]))
    return book


def test_each_day_replays_alone_to_the_exchange_book_with_exact_decimals(scenario: Scenario) -> None:
    assert replay(merged_day(scenario, DAY_A)) == truth_book([PLAN_A])
    assert replay(merged_day(scenario, DAY_B)) == truth_book([PLAN_A, PLAN_B])


def test_polars_pandas_and_duckdb_read_the_hive_layout(scenario: Scenario) -> None:
    import duckdb
    import pandas as pd
    import polars as pl

    root = scenario.store_dir / "merged"
    glob = f"{root}/market=*/symbol=*/date=*/*.parquet"
    total = sum(pq.read_metadata(f).num_rows for d in (DAY_A, DAY_B) for f in merged_files(scenario, d))
    frame = (
        pl.scan_parquet(glob, hive_partitioning=True)
        .filter(pl.col("date") == dt.date(2026, 11, 24))
        .collect()
    )
    assert frame.height == len(merged_day(scenario, DAY_B)) and frame["market"].unique().to_list() == ["spot"]
    con = duckdb.connect()
    n, dates = con.sql(
        f"SELECT count(*), count(DISTINCT date) FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()[0]
    assert (n, dates) == (total, 2)
    types = dict(
        (name, kind)
        for name, kind, *_ in con.sql(
            f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchall()
    )
    assert (
        types["exchange_time"] == "TIMESTAMP WITH TIME ZONE" and types["receive_time"] == "TIMESTAMPTZ_NS"
    ), types
    one_day = pd.read_parquet(root / "market=spot" / "symbol=BTCUSDT" / f"date={DAY_A}")
    assert len(one_day) == len(merged_day(scenario, DAY_A))
    assert str(one_day["receive_time"].dtype) == "datetime64[ns, UTC]"
    # the whole tree with pandas: the file's `symbol` column and the `symbol=` folder need one type
    part = ds.partitioning(
        pa.schema(
            [
                ("market", pa.string()),
                ("symbol", pq.read_schema(merged_files(scenario, DAY_A)[0]).field("symbol").type),
                ("date", pa.string()),
            ]
        ),
        flavor="hive",
    )
    assert len(pd.read_parquet(root, partitioning=part)) == total


def test_coverage_manifest_is_beside_each_day_and_documented(scenario: Scenario) -> None:
    for date in (DAY_A, DAY_B):
        path = scenario.store_dir / f"merged/market=spot/symbol=BTCUSDT/date={date}/_coverage_manifest.json"
        manifest = json.loads(path.read_text())
        assert {"covered", "gaps", "files"} <= set(manifest)
        assert all({"first_id", "last_id", "stream"} <= set(c) for c in manifest["covered"])
        assert manifest["files"] == [f.name for f in merged_files(scenario, date)] or [
            Path(f).name for f in manifest["files"]
        ] == [f.name for f in merged_files(scenario, date)]
    docs = (REPO_ROOT / "docs" / "merge.md").read_text() + (REPO_ROOT / "docs" / "analysts.md").read_text()
    assert "_coverage_manifest.json" in docs


def test_quality_report_location_is_documented() -> None:
    docs = (
        "".join(p.read_text() for p in (REPO_ROOT / "docs").glob("*.md"))
        + (REPO_ROOT / "README.md").read_text()
    )
    assert "quality/" in docs
