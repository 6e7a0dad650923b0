"""Raw-arrival and stream-gap sensors on layout-2 objects, evaluated against a real store and a real Dagster
instance: alerts, runless arrivals per date, gap notes of every new object, O(streams) requests per tick."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from depth_pipeline.config import PipelineConfig
from depth_pipeline.definitions import build_definitions
from depth_pipeline.notify import Alert, build_notifier
from depth_pipeline.resources import build_resources
from depth_pipeline.sensors import evaluate_stream_gaps
from depth_store import ObjectStore, open_store
from depth_store.counting import CountingStore
from tests.pipeline.v2gen import write_v2

SYMBOLS = ("BTCUSDT", "ETHUSDT")


class RecordingNotifier:
    """A real notifier implementation that keeps what it was sent."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)


def _config(store_url: str, **kw: object) -> PipelineConfig:
    return PipelineConfig(store_url=store_url, streams=("eu-1", "ap-1"), symbols=SYMBOLS, **kw)  # type: ignore[arg-type]


def _deliver(
    store: ObjectStore,
    stream: str,
    age_seconds: float,
    seq: int,
    notes: list[tuple[str, dict[str, object]]] = [],  # noqa: B006 - read only
) -> None:
    """A v2 raw object as a live collector writes it (every symbol), whose first line was received
    ``age_seconds`` ago."""
    write_v2(store, stream, time.time_ns() - int(age_seconds * 1e9), SYMBOLS, seq=seq, notes=notes)


def _sensor(defs: dg.Definitions, name: str) -> dg.SensorDefinition:
    return defs.get_repository_def().get_sensor_def(name)


def _evaluate(
    sensor: dg.SensorDefinition, config: PipelineConfig, instance: dg.DagsterInstance, cursor: str | None
) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources(config))
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_gap_sensor_fires_on_a_silent_stream_within_two_minutes(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    store_url = str(tmp_path / "store")
    store = open_store(store_url)
    config = _config(store_url)
    notifier = RecordingNotifier()
    sensor = _sensor(build_definitions(config, notifier), "stream_gap_sensor")
    # The worst case from a collector's last object to the alert is threshold + sensor interval.
    assert config.silence_seconds + config.sensor_interval_seconds <= 120
    assert sensor.minimum_interval_seconds == config.sensor_interval_seconds

    _deliver(store, "eu-1", 5, 0)
    _deliver(store, "ap-1", 30, 0)
    first = _evaluate(sensor, config, dagster_instance, None)
    assert notifier.alerts == []
    assert "ap-1: newest object" in str(first.skip_reason)

    # ap-1 goes silent: its newest object is now older than the 60 s threshold; eu-1 keeps delivering.
    store2 = tmp_path / "store2"
    silent_store = open_store(str(store2))
    _deliver(silent_store, "eu-1", 1, 0)
    _deliver(silent_store, "ap-1", config.silence_seconds + 1, 0)
    silent_config = _config(str(store2))
    silent_sensor = _sensor(build_definitions(silent_config, notifier), "stream_gap_sensor")
    fired = _evaluate(silent_sensor, silent_config, dagster_instance, None)
    silent = [a for a in notifier.alerts if a.kind == "silent"]
    assert [a.stream for a in silent] == ["ap-1"]
    assert silent[0].silent_seconds is not None and 60 < silent[0].silent_seconds < 120
    assert "ALERT" in str(fired.skip_reason) and "ap-1" in str(fired.skip_reason)
    observed = [e for e in fired.asset_events if isinstance(e, dg.AssetObservation)]
    assert {e.asset_key for e in observed} == {dg.AssetKey(["raw", "ap-1"])}
    assert {e.partition for e in observed} == {time.strftime("%Y-%m-%d", time.gmtime())}

    # One alert per silence episode, then "recovered" once it delivers again.
    again = _evaluate(silent_sensor, silent_config, dagster_instance, fired.cursor)
    assert [a.kind for a in notifier.alerts] == ["silent"]
    _deliver(silent_store, "ap-1", 1, 1)
    _evaluate(silent_sensor, silent_config, dagster_instance, again.cursor)
    kinds = [(a.kind, a.stream, a.symbol) for a in notifier.alerts]
    # the pause between ap-1's objects is itself reported as a gap of the stream
    assert sorted(kinds[1:]) == [("gap", "ap-1", None), ("recovered", "ap-1", None)]


def test_gap_sensor_reports_collector_gap_notes(tmp_path: Path, dagster_instance: dg.DagsterInstance) -> None:
    store_url = str(tmp_path / "store")
    store = open_store(store_url)
    config = _config(store_url)
    notifier = RecordingNotifier()
    sensor = _sensor(build_definitions(config, notifier), "stream_gap_sensor")
    for stream in ("eu-1", "ap-1"):
        _deliver(store, stream, 3, 0)
    first = _evaluate(sensor, config, dagster_instance, None)
    _deliver(
        store,
        "eu-1",
        1,
        1,
        notes=[
            ("ETHUSDT", {"event": "gap", "expected": 10, "got": 15}),
            ("-", {"event": "disconnect"}),
            ("BTCUSDT", {"event": "connect"}),
        ],
    )
    _evaluate(sensor, config, dagster_instance, first.cursor)
    gaps = [a for a in notifier.alerts if a.kind == "gap"]
    assert [(g.stream, g.symbol) for g in gaps] == [("eu-1", "ETHUSDT"), ("eu-1", None)]
    assert '"expected": 10' in gaps[0].message and "disconnect" in gaps[1].message


def test_gap_sensor_reads_every_new_object_across_ticks_within_its_time_budget(tmp_path: Path) -> None:
    """Out of time, a tick saves its progress and hands the unread objects to the next tick: none is skipped,
    none read twice (the old sensor read at most 200 objects a tick and dropped the rest's notes)."""
    store = CountingStore(open_store(str(tmp_path / "store")))
    for seq in range(250):
        write_v2(
            store,
            "eu-1",
            time.time_ns() - (300 - seq) * 10**8,
            SYMBOLS,
            seq=seq,
            notes=[("BTCUSDT", {"event": "gap", "n": seq})],
        )
    out_of_time = evaluate_stream_gaps(store, "spot", ["eu-1"], 3600, {}, budget_seconds=0)
    assert [a for a in out_of_time.alerts if a.kind == "gap"] == []
    store.reset()
    tick = evaluate_stream_gaps(store, "spot", ["eu-1"], 3600, json.loads(out_of_time.cursor))
    assert sorted(
        int(a.message.split('"n": ')[1].split("}")[0]) for a in tick.alerts if a.kind == "gap"
    ) == list(range(250))
    assert store.snapshot()["GET"] == 250
    again = evaluate_stream_gaps(store, "spot", ["eu-1"], 3600, json.loads(tick.cursor))
    assert [a for a in again.alerts if a.kind == "gap"] == []


def test_sensor_tick_requests_do_not_grow_with_symbols_or_retained_days(tmp_path: Path) -> None:
    """A steady tick of the gap sensor costs the same LIST requests with 2 or 200 symbols and with 0 or 3
    retained days of raw objects (the old sensors listed every stream x symbol x day prefix)."""
    figures = []
    for n_symbols, days in ((2, 0), (200, 0), (200, 3)):
        store = CountingStore(open_store(str(tmp_path / f"s{n_symbols}-{days}")))
        symbols = tuple(f"S{i:03d}USDT" for i in range(n_symbols))
        now = time.time_ns()
        seq = 0
        for day in range(days, -1, -1):
            for k in range(30):
                write_v2(store, "eu-1", now - day * 86400 * 10**9 - (40 - k) * 10**9, symbols, seq=seq)
                write_v2(store, "ap-1", now - day * 86400 * 10**9 - (40 - k) * 10**9, symbols, seq=seq)
                seq += 1
        cursor = json.loads(evaluate_stream_gaps(store, "spot", ["eu-1", "ap-1"], 3600, {}).cursor)
        for _ in range(3):  # the sweep's first pass over what is retained
            cursor = json.loads(evaluate_stream_gaps(store, "spot", ["eu-1", "ap-1"], 3600, cursor).cursor)
        for stream in ("eu-1", "ap-1"):
            write_v2(store, stream, now, symbols, seq=10_000)
        store.reset()
        evaluate_stream_gaps(store, "spot", ["eu-1", "ap-1"], 3600, cursor)
        counts = store.snapshot()
        figures.append((counts["LIST"], counts["GET"], counts["HEAD"]))
    assert figures[0] == figures[1] == figures[2] == (4, 2, 0)  # per stream: head + one sweep page; 1 GET


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: list[dict[str, object]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    bodies: list[dict[str, object]] = []
    handler = type("Handler", (_Collector,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_webhook_notifier_posts_alerts(webhook: tuple[str, list[dict[str, object]]]) -> None:
    url, bodies = webhook
    build_notifier(url).send(Alert("silent", "ap-1", "silent for 61 s (threshold 60 s)", silent_seconds=61.0))
    assert len(bodies) == 1
    assert bodies[0]["text"] == "[silent] ap-1: silent for 61 s (threshold 60 s)"
    assert bodies[0]["alert"] == {
        "kind": "silent",
        "stream": "ap-1",
        "message": "silent for 61 s (threshold 60 s)",
        "symbol": None,
        "silent_seconds": 61.0,
    }


def test_raw_arrival_sensor_records_runless_materializations(
    tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    store_url = str(tmp_path / "store")
    store = open_store(store_url)
    config = _config(store_url)
    sensor = _sensor(build_definitions(config), "raw_arrival_sensor")
    _deliver(store, "eu-1", 20, 0)
    _deliver(store, "eu-1", 10, 1)
    first = _evaluate(sensor, config, dagster_instance, None)
    events = [e for e in first.asset_events if isinstance(e, dg.AssetMaterialization)]
    assert len(events) == 1  # one per stream and date, not per symbol
    assert events[0].asset_key == dg.AssetKey(["raw", "eu-1"])
    assert events[0].partition == time.strftime("%Y-%m-%d", time.gmtime())
    assert events[0].metadata["objects"] == dg.MetadataValue.int(2)
    second = _evaluate(sensor, config, dagster_instance, first.cursor)
    assert not second.asset_events and second.skip_reason is not None
    _deliver(store, "ap-1", 1, 0)
    third = _evaluate(sensor, config, dagster_instance, second.cursor)
    assert [(e.asset_key, e.metadata["objects"]) for e in third.asset_events] == [
        (dg.AssetKey(["raw", "ap-1"]), dg.MetadataValue.int(1))
    ]
    # a restarted collector uploads spool leftovers received an hour before the newest key: recorded once
    write_v2(store, "eu-1", time.time_ns() - 3600 * 10**9, SYMBOLS, session="old", seq=5)
    found = []
    cursor = third.cursor
    for _ in range(3):
        tick = _evaluate(sensor, config, dagster_instance, cursor)
        cursor = tick.cursor
        found += [
            (e.asset_key, e.metadata["objects"], e.metadata["found_late_by_sweep"]) for e in tick.asset_events
        ]
    assert found == [(dg.AssetKey(["raw", "eu-1"]), dg.MetadataValue.int(1), dg.MetadataValue.int(1))]
