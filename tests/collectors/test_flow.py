"""Read flow control (collectors/flow.py): a slow spool writer pauses socket reading instead of letting its
backlog grow; every frame is still stored, reading resumes, and stopping while paused flushes everything.

The collector reads the simulator's firehose (contiguous ids, backpressure instead of disconnecting a slow
reader) on real websockets; the writer is made slow by holding it at a gate (a test hook around the
spool's compressed write), so "slow" is a state the test controls, not a timing.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.config import CollectorConfig, parse_config
from collectors.spool import Spool
from collectors.wsfast import FastTextConnection
from exchange_sim.runner import SimulatorThread
from tests.fixtures.collector import InProcessCollector, depth_events, notes, read_stored, wait_until

HIGH_WATER = 256 * 1024
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


class WriterGate:
    """Holds the spool writer before each compressed write while closed (it has taken the lines by then:
    the backlog builds up behind it, as behind a slow disk)."""

    def __init__(self, spool: Spool) -> None:
        self.open = threading.Event()
        self.open.set()
        self.held = threading.Event()  # the writer is waiting at the gate
        original = spool._flush_compressed

        def gated(lines: list[bytes], now_ns: int) -> int:
            if not self.open.is_set():
                self.held.set()
                self.open.wait()
            return original(lines, now_ns)

        spool._flush_compressed = gated  # type: ignore[method-assign]

    def close(self) -> None:
        self.held.clear()
        self.open.clear()


class ReadWatch:
    """The backlog at the start of every socket read of a flow-controlled connection (a read may only
    start while it is at most the high-water mark) and at its end."""

    def __init__(self) -> None:
        self.before: list[int] = []
        self.after: list[int] = []


@pytest.fixture
def read_watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReadWatch]:
    watch = ReadWatch()
    original = FastTextConnection.data_received

    def watched(self: FastTextConnection, data: bytes) -> None:
        flow: Any = self.read_flow
        if flow is None or not flow.enabled:
            original(self, data)
            return
        watch.before.append(flow.spool.pending_bytes)
        original(self, data)
        watch.after.append(flow.spool.pending_bytes)

    monkeypatch.setattr(FastTextConnection, "data_received", watched)
    yield watch


def config_for(sim: SimulatorThread, tmp_path: Path, *extra: str) -> CollectorConfig:
    return parse_config(
        [
            "--collector-id",
            "eu-1",
            "--symbols",
            ",".join(SYMBOLS),
            "--store",
            str(tmp_path / "store"),
            "--ws-url",
            sim.ws_url,
            "--rest-url",
            sim.rest_url,
            "--spool-dir",
            str(tmp_path / "spool"),
            "--spool-max-pending-bytes",
            str(HIGH_WATER),
            "--flush-seconds",
            "0.5",
            "--snapshot-interval",
            "0",
            "--snapshot-depth",
            "100",
            "--shutdown-grace",
            "20",
            "--stall-timeout",
            "0",
            *extra,
        ],
        env={},
    )


def start(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
) -> tuple[InProcessCollector, CollectorConfig, WriterGate]:
    sim = make_simulator(symbols=SYMBOLS, firehose_rate=4000, firehose_pool=64)
    cfg = config_for(sim, tmp_path)
    c = in_process_collector(cfg)
    gate = WriterGate(c.collector.spool)
    wait_until("frames", lambda: all(st.messages > 200 for st in c.collector.symbols.values()), 30)
    return c, cfg, gate


def assert_every_frame_stored(c: InProcessCollector, cfg: CollectorConfig) -> None:
    """Each symbol's stored depth lines are the frames the collector counted, ids contiguous (the
    firehose sends every id once, in order), no gap noted and nothing counted as not spooled."""
    stored = read_stored(str(cfg.store), cfg.market, cfg.collector_id)
    for symbol in SYMBOLS:
        st = c.collector.symbols[symbol]
        events = depth_events(stored[symbol])
        assert len(events) == st.messages > 0
        assert st.dropped_lines == 0
        assert all(b.first_id == a.last_id + 1 for a, b in itertools.pairwise(events))
        assert notes(stored[symbol], "gap") == []
    assert c.collector.spool.dropped_lines == 0


def test_slow_writer_pauses_reading_bounds_the_backlog_and_loses_nothing(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
    read_watch: ReadWatch,
) -> None:
    c, cfg, gate = start(make_simulator, in_process_collector, tmp_path)
    flow = c.collector.read_flow
    for round_ in range(1, 3):
        gate.close()
        wait_until("the writer held at the gate", gate.held.is_set, 30)
        wait_until("reading paused", lambda: flow.paused, 30)
        assert flow.pauses >= round_
        assert c.collector.spool.pending_bytes > HIGH_WATER  # the writer holds, the backlog stays
        counted = sum(st.messages for st in c.collector.symbols.values())
        gate.open.set()
        wait_until("reading resumed", lambda: not flow.paused, 30)
        wait_until(
            "frames after the pause",
            lambda counted=counted: sum(st.messages for st in c.collector.symbols.values()) > counted + 500,
            30,
        )
        assert flow.paused_seconds > 0
    assert flow.timeouts == 0
    assert c.stop() == 0
    # a read starts only while the backlog is within the high-water mark, so it never exceeds the mark
    # by more than one read's lines
    assert read_watch.before and max(read_watch.before) <= HIGH_WATER
    assert max(read_watch.after) > HIGH_WATER  # (the pauses above really were flow control's)
    report = c.collector.shutdown_report
    assert report["read_pauses"] == flow.pauses >= 2 and report["read_pause_timeouts"] == 0
    assert_every_frame_stored(c, cfg)


def test_stop_while_paused_flushes_everything_and_exits(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
) -> None:
    c, cfg, gate = start(make_simulator, in_process_collector, tmp_path)
    flow = c.collector.read_flow
    gate.close()
    wait_until("reading paused", lambda: flow.paused, 30)
    result: list[int] = []
    stopper = threading.Thread(target=lambda: result.append(c.stop()))
    stopper.start()
    # stopping ends the pause at once (the connections' close handshakes need reading), writer or not
    wait_until("stop requested", c.collector.stop_event.is_set, 30)
    wait_until("reading resumed for the close", lambda: not flow.paused, 30)
    assert not flow.enabled
    gate.open.set()
    stopper.join(60)
    assert result == [0]
    assert c.collector.shutdown_report["uploaded_all"] is True
    assert not list((cfg.spool_dir / "journal").glob("*.jnl"))
    assert_every_frame_stored(c, cfg)


def test_a_writer_stuck_past_the_pause_limit_resumes_reading_and_says_so(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
) -> None:
    c, cfg, gate = start(make_simulator, in_process_collector, tmp_path)
    flow = c.collector.read_flow
    flow.max_pause_s = 0.2  # a hung disk, shortened
    gate.close()
    wait_until("the pause to time out", lambda: flow.timeouts == 1, 30)
    # reading goes on without a bound while the writer does not move (as before flow control) ...
    wait_until("reading on past the mark", lambda: c.collector.spool.pending_bytes > 4 * HIGH_WATER, 30)
    assert flow.timeouts == 1
    # ... and flow control is back once it does
    stuck_at = c.collector.spool.taken_bytes
    gate.open.set()
    wait_until("the writer to move", lambda: c.collector.spool.taken_bytes > stuck_at, 30)
    gate.close()
    wait_until("a new pause", lambda: flow.pauses >= 2, 30)
    gate.open.set()
    assert c.stop() == 0
    assert_every_frame_stored(c, cfg)
