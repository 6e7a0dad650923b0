"""Raw-arrival and stream-gap sensors, evaluated against a real store and a real Dagster instance."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from depth_core.raw_format import LineKind
from depth_pipeline.config import PipelineConfig
from depth_pipeline.definitions import build_definitions
from depth_pipeline.notify import Alert, build_notifier
from depth_pipeline.resources import build_resources
from depth_store import ObjectStore, open_store
from tests.pipeline.rawgen import write_object

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
    symbol: str,
    age_seconds: float,
    seq: int,
    note: dict[str, object] | None = None,
) -> None:
    """A raw object as a live collector writes it, whose first line was received ``age_seconds`` ago."""
    ns = time.time_ns() - int(age_seconds * 1e9)
    lines = [(ns, LineKind.DEPTH, b'{"stream":"x","data":{}}')]
    if note is not None:
        lines.append((ns + 1000, LineKind.META, json.dumps(note).encode()))
    write_object(store, stream, symbol, lines, session="live", seq=seq)


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

    for symbol in SYMBOLS:
        _deliver(store, "eu-1", symbol, 5, 0)
        _deliver(store, "ap-1", symbol, 30, 0)
    first = _evaluate(sensor, config, dagster_instance, None)
    assert notifier.alerts == []
    assert "ap-1: newest object" in str(first.skip_reason)

    # ap-1 goes silent: its newest object is now older than the 60 s threshold; eu-1 keeps delivering.
    ap_newest = time.time() - config.silence_seconds - 1
    for symbol in SYMBOLS:
        _deliver(store, "eu-1", symbol, 1, 1)
    store2 = tmp_path / "store2"
    silent_store = open_store(str(store2))
    for symbol in SYMBOLS:
        _deliver(silent_store, "eu-1", symbol, 1, 0)
        _deliver(silent_store, "ap-1", symbol, time.time() - ap_newest, 0)
    silent_config = _config(str(store2))
    silent_sensor = _sensor(build_definitions(silent_config, notifier), "stream_gap_sensor")
    fired = _evaluate(silent_sensor, silent_config, dagster_instance, None)
    silent = [a for a in notifier.alerts if a.kind == "silent"]
    assert [a.stream for a in silent] == ["ap-1"]
    assert silent[0].silent_seconds is not None and 60 < silent[0].silent_seconds < 120
    assert "ALERT" in str(fired.skip_reason) and "ap-1" in str(fired.skip_reason)
    observed = [e for e in fired.asset_events if isinstance(e, dg.AssetObservation)]
    assert {e.asset_key for e in observed} == {dg.AssetKey(["raw", "ap-1"])}

    # One alert per silence episode, then "recovered" once it delivers again.
    again = _evaluate(silent_sensor, silent_config, dagster_instance, fired.cursor)
    assert [a.kind for a in notifier.alerts] == ["silent"]
    for symbol in SYMBOLS:
        _deliver(silent_store, "ap-1", symbol, 1, 1)
    _evaluate(silent_sensor, silent_config, dagster_instance, again.cursor)
    kinds = [(a.kind, a.stream, a.symbol) for a in notifier.alerts]
    # the pause between ap-1's objects is itself reported as a gap per symbol
    assert sorted(kinds[1:]) == [
        ("gap", "ap-1", "BTCUSDT"),
        ("gap", "ap-1", "ETHUSDT"),
        ("recovered", "ap-1", None),
    ]


def test_gap_sensor_reports_collector_gap_notes(tmp_path: Path, dagster_instance: dg.DagsterInstance) -> None:
    store_url = str(tmp_path / "store")
    store = open_store(store_url)
    config = _config(store_url)
    notifier = RecordingNotifier()
    sensor = _sensor(build_definitions(config, notifier), "stream_gap_sensor")
    for stream in ("eu-1", "ap-1"):
        for symbol in SYMBOLS:
            _deliver(store, stream, symbol, 3, 0)
    first = _evaluate(sensor, config, dagster_instance, None)
    _deliver(store, "eu-1", "ETHUSDT", 1, 1, note={"event": "gap", "expected": 10, "got": 15})
    _evaluate(sensor, config, dagster_instance, first.cursor)
    gaps = [a for a in notifier.alerts if a.kind == "gap"]
    assert len(gaps) == 1 and gaps[0].stream == "eu-1" and gaps[0].symbol == "ETHUSDT"
    assert '"expected": 10' in gaps[0].message


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
    _deliver(store, "eu-1", "BTCUSDT", 20, 0)
    _deliver(store, "eu-1", "BTCUSDT", 10, 1)
    first = _evaluate(sensor, config, dagster_instance, None)
    events = [e for e in first.asset_events if isinstance(e, dg.AssetMaterialization)]
    assert len(events) == 1
    assert events[0].asset_key == dg.AssetKey(["raw", "eu-1"])
    assert events[0].partition is not None and len(events[0].partition) == 10  # the date
    assert events[0].metadata["symbol"] == dg.MetadataValue.text("BTCUSDT")
    assert events[0].metadata["objects"] == dg.MetadataValue.int(2)
    second = _evaluate(sensor, config, dagster_instance, first.cursor)
    assert not second.asset_events and second.skip_reason is not None
    _deliver(store, "ap-1", "ETHUSDT", 1, 0)
    third = _evaluate(sensor, config, dagster_instance, second.cursor)
    assert [(e.asset_key, e.metadata["objects"]) for e in third.asset_events] == [
        (dg.AssetKey(["raw", "ap-1"]), dg.MetadataValue.int(1))
    ]
