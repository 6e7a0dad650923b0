"""The collector against the exchange simulator, in-process: what it stored vs the simulator's truth."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from collectors.config import CollectorConfig, parse_config
from depth_core.raw_format import LineKind
from exchange_sim.runner import SimulatorThread
from tests.collectors.truth import compare_with_truth, stored_texts_match_truth
from tests.fixtures.collector import InProcessCollector, notes, read_stored, wait_until


def config_for(
    sim: SimulatorThread, tmp_path: Path, *extra: str, market: str = "spot", symbols: str = "BTCUSDT,ETHUSDT"
) -> CollectorConfig:
    return parse_config(
        [
            "--collector-id",
            "eu-1",
            "--symbols",
            symbols,
            "--store",
            str(tmp_path / "store"),
            "--market",
            market,
            "--ws-url",
            sim.ws_url,
            "--rest-url",
            sim.rest_url,
            "--spool-dir",
            str(tmp_path / "spool"),
            "--flush-seconds",
            "0.5",
            "--snapshot-interval",
            "0",
            "--shutdown-grace",
            "20",
            "--stall-timeout",
            "0",
            *extra,
        ],
        env={},
    )


def depth_count(c: InProcessCollector) -> int:
    return min(st.messages for st in c.collector.symbols.values())


def wait_messages(c: InProcessCollector, more: int, timeout: float = 20) -> None:
    target = depth_count(c) + more
    wait_until(f"{more} more depth frames", lambda: depth_count(c) >= target, timeout)


def wait_snapshots_done(c: InProcessCollector) -> None:
    """Snapshots requested so far (after a gap, a reconnect) have been taken or failed."""
    wait_until("queued snapshots", lambda: c.collector.snapshots_pending == 0, 30)


def stop_and_read(c: InProcessCollector, cfg: CollectorConfig) -> dict[str, Any]:
    assert c.stop() == 0
    assert c.collector.shutdown_report["uploaded_all"] is True
    assert not list((cfg.spool_dir / "journal").glob("*.jnl"))
    assert not list((cfg.spool_dir / "outbox").rglob("*.ndjson.gz"))
    return read_stored(str(cfg.store), cfg.market, cfg.collector_id)


def check_symbol(sim: SimulatorThread, stored: dict[str, Any], symbol: str, *, expect_loss: bool) -> Any:
    lines = stored[symbol]
    truth = sim.control.truth(symbol)
    cmp = compare_with_truth(lines, truth)
    assert cmp.unexplained == [], f"{symbol}: truth events lost without a gap note: {cmp.unexplained[:5]}"
    assert cmp.false_gaps == [], f"{symbol}: gap notes where nothing is missing: {cmp.false_gaps}"
    if not expect_loss:
        assert cmp.missing == [], f"{symbol}: lost {len(cmp.missing)} events: {cmp.missing[:5]}"
    assert cmp.covered > 20
    assert cmp.snapshots >= 1
    return cmp


class Bystander:
    """Another client of the same streams, as the real exchange always has: the simulator derives usdm
    ``pu`` only from events published to some subscriber, so without one the ids published while the
    collector reconnects would be invisible to the ``pu`` chain (a simulator artefact, not Binance's)."""

    def __init__(self, sim: SimulatorThread, symbols: list[str], market: str) -> None:
        from websockets.sync.client import connect

        before = {c["id"] for c in sim.control.connections()}
        names = "/".join(f"{s.lower()}@depth@100ms" for s in symbols)
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(f"{sim.ws_url}/stream?streams={names}", compression=None))
        self.frames = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        wait_until(
            "the bystander to subscribe",
            lambda: len({c["id"] for c in sim.control.connections()} - before) == 1,
            10,
        )
        self.conn_id = ({c["id"] for c in sim.control.connections()} - before).pop()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self.ws:
                self.frames += 1

    def close(self) -> None:
        self._stack.close()
        self.thread.join(5)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_abrupt_close_reconnects_records_gap_and_snapshots(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
    market: str,
) -> None:
    sim = make_simulator(market=market)
    bystander = Bystander(sim, ["BTCUSDT", "ETHUSDT"], market)
    try:
        cfg = config_for(sim, tmp_path, market=market)
        c = in_process_collector(cfg)
        wait_messages(c, 30)
        ours = [x["id"] for x in sim.control.connections() if x["id"] != bystander.conn_id]
        assert len(ours) == 1
        sim.control.fault("close", ours[0])
        wait_until("a reconnect", lambda: c.collector.reconnects["unplanned"] >= 1, 20)
        wait_messages(c, 30)
        wait_snapshots_done(c)
        stored = stop_and_read(c, cfg)
    finally:
        bystander.close()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        check_symbol(sim, stored, symbol, expect_loss=True)
        lines = stored[symbol]
        assert stored_texts_match_truth(lines, sim.control.truth(symbol)) > 20 or market == "usdm"
        events = [n["event"] for n in notes(lines)]
        assert events.count("connect") == 2 and events.count("disconnect") == 2
        reasons = [r for n in notes(lines, "snapshot") for r in n["reason"].split(",")]
        assert "start" in reasons and "reconnect" in reasons
        # a snapshot line follows its note and is the REST body as received
        assert any(ln.kind == LineKind.SNAPSHOT and ln.text.startswith(b'{"lastUpdateId":') for ln in lines)


def test_stall_is_detected_and_the_connection_replaced(
    simulator: SimulatorThread, in_process_collector: Callable[..., InProcessCollector], tmp_path: Path
) -> None:
    cfg = config_for(simulator, tmp_path, "--stall-timeout", "1")
    c = in_process_collector(cfg)
    wait_messages(c, 20)
    simulator.control.fault("stall", "all", seconds=4)
    wait_until("a reconnect after the stall", lambda: c.collector.reconnects["unplanned"] >= 1, 20)
    wait_messages(c, 20)
    wait_snapshots_done(c)
    stored = stop_and_read(c, cfg)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        cmp = check_symbol(simulator, stored, symbol, expect_loss=True)
        assert cmp.missing and cmp.gap_notes  # the stall hid events: noted, and snapshotted
        assert any(n["reason"] == "stall" for n in notes(stored[symbol], "disconnect"))
        assert any("gap" in n["reason"].split(",") for n in notes(stored[symbol], "snapshot"))


def test_malformed_frame_is_recorded_and_collection_continues(
    simulator: SimulatorThread, in_process_collector: Callable[..., InProcessCollector], tmp_path: Path
) -> None:
    cfg = config_for(simulator, tmp_path)
    c = in_process_collector(cfg)
    wait_messages(c, 10)
    simulator.control.fault("malformed", "all", count=2)
    wait_until("the malformed frames", lambda: c.collector.malformed_frames >= 2, 10)
    wait_messages(c, 20)
    assert c.collector.reconnects["unplanned"] == 0
    stored = stop_and_read(c, cfg)
    # layout 2 writes a note that names no symbol once, stream-wide: read_stored gives it to every symbol
    bad = list(
        {
            (ln.receive_ns, ln.text): n
            for sym in stored
            for ln in stored[sym]
            for n in notes([ln], "malformed_frame")
        }.values()
    )
    assert len(bad) == 2
    assert all(n["text"] == '{"stream":"malformed","data":{"e":"depthUpdate","E":' for n in bad)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        check_symbol(simulator, stored, symbol, expect_loss=False)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_silent_drop_is_detected_snapshotted_and_collection_continues(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
    market: str,
) -> None:
    sim = make_simulator(market=market)
    cfg = config_for(sim, tmp_path, market=market)
    c = in_process_collector(cfg)
    wait_messages(c, 10)
    last = sim.control.last_update_id("BTCUSDT")
    step = 5 if market == "spot" else 5000  # usdm ids advance much faster per event
    sim.control.fault("drop_ids", "all", symbol="BTCUSDT", from_id=last + 10 * step, to_id=last + 20 * step)
    wait_until("the gap", lambda: c.collector.symbols["BTCUSDT"].continuity.gaps >= 1, 20)
    wait_messages(c, 20)
    wait_snapshots_done(c)
    assert c.collector.reconnects["unplanned"] == 0
    stored = stop_and_read(c, cfg)
    cmp = check_symbol(sim, stored, "BTCUSDT", expect_loss=True)
    assert len(cmp.gap_notes) == 1 and cmp.missing
    lo, hi = cmp.gap_notes[0]
    assert lo <= last + 20 * step and hi >= last + 10 * step
    assert any("gap" in n["reason"].split(",") for n in notes(stored["BTCUSDT"], "snapshot"))
    check_symbol(sim, stored, "ETHUSDT", expect_loss=False)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_max_connection_age_make_before_break_loses_no_id(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
    market: str,
) -> None:
    sim = make_simulator(market=market)
    cfg = config_for(sim, tmp_path, "--max-connection-age", "1.5", market=market)
    c = in_process_collector(cfg)
    wait_until("two planned reconnects", lambda: c.collector.reconnects["planned"] >= 2, 30)
    wait_messages(c, 10)
    assert c.collector.reconnects["unplanned"] == 0
    stored = stop_and_read(c, cfg)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        check_symbol(sim, stored, symbol, expect_loss=False)
        assert not notes(stored[symbol], "gap")
        planned = [
            n
            for n in notes(stored[symbol], "disconnect")
            if n["planned"] and n["reason"] == "planned_max_age"
        ]
        assert len(planned) >= 2
        # the overlaps proved continuity: no re-snapshot, only the one at start
        assert [n["reason"] for n in notes(stored[symbol], "snapshot")] == ["start"]


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_server_shutdown_notice_make_before_break_loses_no_id(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
    market: str,
) -> None:
    sim = make_simulator(market=market)
    cfg = config_for(sim, tmp_path, market=market)
    c = in_process_collector(cfg)
    wait_messages(c, 10)
    sim.control.fault("shutdown_notice", "all", close_after_s=3)
    wait_until("the planned reconnect", lambda: c.collector.reconnects["planned"] >= 1, 20)
    wait_messages(c, 10)
    assert c.collector.server_shutdowns == 1 and c.collector.reconnects["unplanned"] == 0
    stored = stop_and_read(c, cfg)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        check_symbol(sim, stored, symbol, expect_loss=False)
        assert notes(stored[symbol], "server_shutdown")
        assert any(n["reason"] == "planned_server_shutdown" for n in notes(stored[symbol], "disconnect"))


def test_429_retry_after_is_honoured_and_no_ban_follows(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
) -> None:
    # the exchange allows 2 snapshots of weight 250 per 3 s window and bans on the 2nd violation in a window
    sim = make_simulator(
        weight_limit_per_minute=500, weight_window_s=3.0, ban_after_violations=1, ban_seconds=30
    )
    cfg = config_for(sim, tmp_path, "--snapshot-interval", "0.5", "--rest-weight-per-minute", "100000")
    c = in_process_collector(cfg)
    wait_until("a 429", lambda: c.collector.budget.rate_limited >= 1, 20)
    ok_before = sum(st.snapshots for st in c.collector.symbols.values())
    wait_until(
        "snapshots after the 429",
        lambda: sum(st.snapshots for st in c.collector.symbols.values()) >= ok_before + 2,
        20,
    )
    wait_messages(c, 10)
    assert c.collector.budget.banned == 0  # honouring Retry-After never earns the 418
    assert not sim.sim.weights.banned_until
    stored = stop_and_read(c, cfg)
    errors = [n for sym in stored for n in notes(stored[sym], "snapshot_error")]
    assert errors and all(n["status"] == 429 for n in errors)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        check_symbol(sim, stored, symbol, expect_loss=False)


def test_418_ban_pauses_every_rest_call_until_retry_after(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
) -> None:
    sim = make_simulator(
        weight_limit_per_minute=500, weight_window_s=2.0, ban_after_violations=0, ban_seconds=3
    )
    cfg = config_for(sim, tmp_path, "--snapshot-interval", "0.3", "--rest-weight-per-minute", "100000")
    c = in_process_collector(cfg)
    wait_until("a 418", lambda: c.collector.budget.banned >= 1, 20)
    ok_before = sum(st.snapshots for st in c.collector.symbols.values())
    wait_until(
        "snapshots after the ban",
        lambda: sum(st.snapshots for st in c.collector.symbols.values()) > ok_before,
        20,
    )
    wait_messages(c, 10)
    stored = stop_and_read(c, cfg)
    rest_notes = sorted(
        (ln.receive_ns, orjson.loads(ln.text))
        for sym in stored
        for ln in stored[sym]
        if ln.kind == LineKind.META and b'"event":"snapshot' in ln.text
    )
    first_ban = next(ns for ns, n in rest_notes if n["event"] == "snapshot_error" and n.get("status") == 418)
    after = [n for ns, n in rest_notes if ns > first_ban]
    # the next call went out only after Retry-After (3 s): no second 418 from calling into the ban
    assert after[0]["event"] == "snapshot", after[:3]
    assert after[0]["sent_ns"] - first_ban >= 2.9e9
    for symbol in ("BTCUSDT", "ETHUSDT"):
        check_symbol(sim, stored, symbol, expect_loss=False)


def test_book_ticker_and_metrics_and_healthz(
    simulator: SimulatorThread, in_process_collector: Callable[..., InProcessCollector], tmp_path: Path
) -> None:
    import urllib.request

    from collectors.metrics import MetricsServer

    cfg = config_for(simulator, tmp_path, "--book-ticker", "--clock-offset-warn", "0")
    c = in_process_collector(cfg)
    server = MetricsServer(c.collector, "127.0.0.1", 0)
    server.start()
    try:
        wait_until(
            "book tickers",
            lambda: all(st.book_ticker_messages > 5 for st in c.collector.symbols.values()),
            20,
        )
        wait_until("an upload", lambda: c.collector.uploader.uploaded_objects > 0, 20)
        wait_until("a clock warning (threshold 0)", lambda: c.collector.clock_warnings > 0, 20)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
            assert b'"status":"ok"' in resp.read()
    finally:
        server.stop()
    for name in (
        'depth_collector_messages_total{kind="depth",symbol="BTCUSDT"}',
        'depth_collector_messages_total{kind="book_ticker",symbol="ETHUSDT"}',
        'depth_collector_bytes_total{kind="depth",symbol="BTCUSDT"}',
        'depth_collector_last_message_age_seconds{symbol="BTCUSDT"}',
        'depth_collector_gaps_total{symbol="BTCUSDT"} 0.0',
        'depth_collector_snapshots_total{result="ok",symbol="BTCUSDT"}',
        'depth_collector_reconnects_total{kind="unplanned"} 0.0',
        "depth_collector_spool_bytes ",
        "depth_collector_upload_lag_seconds ",
        'depth_collector_receive_latency_seconds_bucket{le="+Inf",symbol="BTCUSDT"}',
        "depth_collector_clock_offset_seconds ",
        "depth_collector_connections_open 1.0",
    ):
        assert name in text, f"{name} missing from /metrics"
    stored = stop_and_read(c, cfg)
    tickers = [ln for ln in stored["BTCUSDT"] if ln.kind == LineKind.BOOK_TICKER]
    assert tickers and all(ln.text.startswith(b'{"stream":"btcusdt@bookTicker"') for ln in tickers)


def test_symbols_are_split_across_connections(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
) -> None:
    sim = make_simulator(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    cfg = config_for(
        sim, tmp_path, "--max-streams-per-connection", "2", "--book-ticker", symbols="BTCUSDT,ETHUSDT,SOLUSDT"
    )
    c = in_process_collector(cfg)
    assert len(c.collector.groups) == 3  # 2 streams per symbol (depth + bookTicker), 2 per connection
    wait_messages(c, 30)
    conns = sim.control.connections()
    assert len(conns) == 3 and all(len(x["streams"]) == 2 for x in conns)
    stored = stop_and_read(c, cfg)
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        check_symbol(sim, stored, symbol, expect_loss=False)


def test_spool_budget_exhausted_is_counted_noted_and_recovers(
    simulator: SimulatorThread, in_process_collector: Callable[..., InProcessCollector], tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("the store's folder cannot be created while this file is here")
    cfg = config_for(simulator, tmp_path, "--spool-max-bytes", "256K", "--store", str(blocker / "store"))
    c = in_process_collector(cfg)
    wait_until("the spool to refuse lines", lambda: c.collector.spool.dropped_lines > 0, 30)
    assert not c.collector.spool.accepting
    dropped = {s: st.dropped_lines for s, st in c.collector.symbols.items()}
    assert sum(dropped.values()) > 0
    blocker.unlink()  # the store is back: the spool drains and accepts again
    wait_until("the overflow note", lambda: c.collector._dropped_seen > 0, 30)
    wait_messages(c, 10)
    wait_snapshots_done(c)
    assert c.exit_code is None
    cfg_store = str(blocker / "store")
    assert c.stop() == 0
    stored = read_stored(cfg_store, "spot", "eu-1")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        overflow = notes(stored[symbol], "spool_overflow")
        assert overflow and overflow[0]["lines_lost_all_symbols"] > 0
        assert any("spool_overflow" in n["reason"].split(",") for n in notes(stored[symbol], "snapshot"))


def test_unreachable_store_at_shutdown_gives_up_after_the_grace_and_reports(
    simulator: SimulatorThread, in_process_collector: Callable[..., InProcessCollector], tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("the store's folder cannot be created while this file is here")
    cfg = config_for(simulator, tmp_path, "--shutdown-grace", "1", "--store", str(blocker / "store"))
    c = in_process_collector(cfg)
    wait_messages(c, 20)
    assert c.stop() == 0
    report = c.collector.shutdown_report
    assert report["uploaded_all"] is False and report["pending_objects"] > 0
    left = list((cfg.spool_dir / "outbox").rglob("*.ndjson.gz"))
    assert len(left) == report["pending_objects"]
    assert not list((cfg.spool_dir / "journal").glob("*.jnl"))  # all flushed and converted


def test_planned_reconnect_of_quiet_symbols_does_not_wait_for_an_event(
    simulator: SimulatorThread, in_process_collector: Callable[..., InProcessCollector], tmp_path: Path
) -> None:
    cfg = config_for(simulator, tmp_path, "--overlap-timeout", "60")
    c = in_process_collector(cfg)
    wait_messages(c, 20)
    simulator.control.pause()  # no events at all: nothing can be in flight on the old connection
    try:

        def drained() -> bool:  # every frame sent before the pause has been received
            conns = simulator.control.connections()
            cur = c.collector.groups[0].current
            return (
                len(conns) == 1
                and conns[0]["queued"] == 0
                and cur is not None
                and cur.frames == conns[0]["sent"]
            )

        wait_until("the frames sent before the pause", drained, 20)
        frames_before = c.collector.symbols["BTCUSDT"].messages
        simulator.control.fault("shutdown_notice", "all")
        wait_until("the planned reconnect", lambda: c.collector.reconnects["planned"] >= 1, 30)
        assert c.collector.symbols["BTCUSDT"].messages == frames_before
    finally:
        simulator.control.resume()
    wait_messages(c, 20)
    stored = stop_and_read(c, cfg)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        check_symbol(simulator, stored, symbol, expect_loss=False)
        assert not notes(stored[symbol], "gap")


def test_symbols_from_exchange_follow_listings_and_delistings_without_restart_or_storm(
    make_simulator: Callable[..., SimulatorThread],
    in_process_collector: Callable[..., InProcessCollector],
    tmp_path: Path,
) -> None:
    sim = make_simulator(symbols=["BTCUSDT", "ETHUSDT", "ETHBTC"])
    cfg = parse_config(
        [
            "--collector-id",
            "eu-1",
            "--symbols-from",
            "exchange",
            "--quote-asset",
            "USDT",
            "--symbols-refresh",
            "0.3",
            "--store",
            str(tmp_path / "store"),
            "--ws-url",
            sim.ws_url,
            "--rest-url",
            sim.rest_url,
            "--spool-dir",
            str(tmp_path / "spool"),
            "--flush-seconds",
            "0.5",
            "--shutdown-grace",
            "20",
            "--stall-timeout",
            "0",
        ],
        env={},
    )
    c = in_process_collector(cfg)
    wait_until(
        "both USDT symbols anchored",
        lambda: (
            all(st.first_snapshot_done for st in list(c.collector.symbols.values()))
            and len(c.collector.symbols) == 2
        ),
        20,
    )
    assert set(c.collector.symbols) == {"BTCUSDT", "ETHUSDT"}  # ETHBTC is not of the quote asset
    wait_messages(c, 10)
    assert sim.control.list_symbol("NEWUSDT")
    assert sim.control.delist_symbol("ETHUSDT")
    wait_until(
        "the listing captured",
        lambda: (
            "NEWUSDT" in c.collector.symbols
            and c.collector.symbols["NEWUSDT"].first_snapshot_done
            and c.collector.symbols["NEWUSDT"].messages > 30
        ),
        30,
    )
    wait_until("the delisting stopped", lambda: "ETHUSDT" not in c.collector.symbols, 20)
    wait_snapshots_done(c)
    assert c.collector.reconnects["unplanned"] == 0 and c.collector.reconnects["planned"] == 0
    assert len(sim.control.connections()) == 1  # subscribed on the open connection: no restart
    assert (c.collector.listed, c.collector.delisted) == (1, 1)
    stored = stop_and_read(c, cfg)
    # no snapshot storm: BTCUSDT had its start snapshot only, NEWUSDT one at its listing
    assert [n["reason"] for n in notes(stored["BTCUSDT"], "snapshot")] == ["start"]
    assert [n["reason"] for n in notes(stored["NEWUSDT"], "snapshot")] == ["listed"]
    check_symbol(sim, stored, "NEWUSDT", expect_loss=False)
    check_symbol(sim, stored, "BTCUSDT", expect_loss=False)
    assert notes(stored["ETHUSDT"], "delisted")
    assert "ETHBTC" not in stored
