"""The collector as a process: exit codes, signals, kill -9, spool lock, store outages."""

from __future__ import annotations

import gzip
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from collectors.spool import JournalName, journal_chunks
from depth_core.raw_format import read_raw_object
from depth_store import open_store
from exchange_sim.runner import SimulatorThread
from exchange_sim.tcp_proxy import TcpProxy
from tests.collectors.truth import compare_with_truth
from tests.fixtures.collector import CollectorProcess, read_stored, wait_until

Make = Callable[..., CollectorProcess]


def args_for(
    sim: SimulatorThread, store: str, spool: Path, *extra: str, symbols: str = "BTCUSDT,ETHUSDT"
) -> list[str]:
    return [
        "--collector-id",
        "eu-1",
        "--symbols",
        symbols,
        "--store",
        store,
        "--ws-url",
        sim.ws_url,
        "--rest-url",
        sim.rest_url,
        "--spool-dir",
        str(spool),
        "--flush-seconds",
        "1",
        "--snapshot-interval",
        "0",
        "--stall-timeout",
        "0",
        *extra,
    ]


def _split(line: bytes, symbol: str | None) -> tuple[str, bytes]:
    """(symbol or "-", "ns kind text") of a raw line of either layout (``symbol`` from a layout-1 key)."""
    if symbol is not None:
        return symbol, line
    ns, kind, sym, text = line.split(b" ", 3)
    return sym.decode(), b"%s %s %s" % (ns, kind, text)


def _symbol_of_path(parts: Sequence[str]) -> str | None:
    return next((p.split("=", 1)[1] for p in parts if p.startswith("symbol=")), None)


def spool_lines(spool: Path) -> set[tuple[str, bytes]]:
    """Every complete line in a spool (journal + outbox) as (symbol, "ns kind text")."""
    out: set[tuple[str, bytes]] = set()
    for j in (spool / "journal").glob("*.jnl"):
        name = JournalName.parse(j.name)  # a layout-2 journal is gzip, sync-flushed at every fsync
        data = b"".join(journal_chunks(j, name.compressed))
        data = data[: data.rfind(b"\n") + 1]
        v2 = name.layout == 2
        for line in data.splitlines():
            if v2:
                out.add(_split(line, None))
            else:
                sym_bytes, rest = line.split(b" ", 1)
                out.add((sym_bytes.decode(), rest))
    for obj in (spool / "outbox").rglob("*.ndjson.gz"):
        symbol = _symbol_of_path(obj.parts)
        for line in gzip.decompress(obj.read_bytes()).splitlines():
            out.add(_split(line, symbol))
    return out


def store_lines(store: str, market: str = "spot") -> set[tuple[str, bytes]]:
    """Every line in the store, split like :func:`spool_lines`."""
    out: set[tuple[str, bytes]] = set()
    s = open_store(store)
    for info in s.list(f"raw/market={market}/stream=eu-1/"):
        symbol = _symbol_of_path(info.key.split("/"))
        for line in gzip.decompress(s.get_bytes(info.key)).splitlines():
            out.add(_split(line, symbol))
    return out


def uploads_of(store: str) -> int:
    return sum(1 for _ in open_store(store).list("raw/"))


def test_bad_flags_exit_2_with_a_message(collector_process: Make) -> None:
    p = collector_process("--collector-id", "eu 1", "--symbols", "BTCUSDT", "--store", "/tmp/x")
    assert p.wait(30) == 2
    assert "invalid collector id" in p.output()
    p = collector_process("--collector-id", "eu-1", "--symbols", "BTC/USDT", "--store", "/tmp/x")
    assert p.wait(30) == 2
    assert "--symbols" in p.output()


def test_no_known_symbol_exits_2_naming_it(
    simulator: SimulatorThread, collector_process: Make, tmp_path: Path
) -> None:
    p = collector_process(
        *args_for(simulator, str(tmp_path / "store"), tmp_path / "spool", symbols="NOSUCHCOIN")
    )
    assert p.wait(30) == 2
    assert "NOSUCHCOIN" in p.output().splitlines()[-1]


def test_an_unknown_symbol_is_a_per_symbol_error_and_the_others_go_on(
    simulator: SimulatorThread, collector_process: Make, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    p = collector_process(*args_for(simulator, store, tmp_path / "spool", symbols="BTCUSDT,NOSUCHCOIN"))
    unknown = p.wait_for_event("symbol_unknown")[0]
    assert unknown["symbol"] == "NOSUCHCOIN" and unknown["level"] == "error"
    p.wait_for_event("snapshot", lambda e: e["symbol"] == "BTCUSDT")
    assert p.running
    p.terminate()
    assert p.wait(30) == 0
    stored = read_stored(store, "spot", "eu-1")
    cmp = compare_with_truth(stored["BTCUSDT"], simulator.control.truth("BTCUSDT"))
    assert cmp.missing == [] and cmp.covered > 0
    errors = [ln for ln in stored["NOSUCHCOIN"] if ln.kind.value == "M" and b'"snapshot_error"' in ln.text]
    assert errors and b"-1121" in errors[0].text


def test_second_process_on_the_same_spool_is_refused(
    simulator: SimulatorThread, collector_process: Make, tmp_path: Path
) -> None:
    args = args_for(simulator, str(tmp_path / "store"), tmp_path / "spool")
    first = collector_process(*args)
    first.wait_for_event("connect")
    second = collector_process(*args)
    assert second.wait(30) == 2
    assert "in use by another collector" in second.output()
    assert first.running
    first.terminate()
    assert first.wait(30) == 0


def test_sigterm_flushes_everything_and_exits_0(
    simulator: SimulatorThread, collector_process: Make, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    spool = tmp_path / "spool"
    p = collector_process(*args_for(simulator, store, spool, "--flush-seconds", "30"))
    p.wait_for_event("snapshot", count=2)
    wait_until(
        "frames in the journal", lambda: sum(1 for _, t in spool_lines(spool) if b" D " in t[:30]) > 60, 20
    )
    # a 30 s segment: nothing has been uploaded yet, all of it is in the journal
    assert uploads_of(store) == 0
    p.signal(signal.SIGTERM)
    assert p.wait(30) == 0
    stopped = p.wait_for_event("stopped")[0]
    assert stopped["uploaded_all"] is True and stopped["pending_objects"] == 0
    assert not list((spool / "journal").glob("*.jnl")) and not list((spool / "outbox").rglob("*.gz"))
    stored = read_stored(store, "spot", "eu-1")
    for sym in ("BTCUSDT", "ETHUSDT"):
        cmp = compare_with_truth(stored[sym], simulator.control.truth(sym))
        assert cmp.missing == [] and cmp.covered > 5
        assert stored[sym][-1].kind.value == "M"  # the last line is the disconnect note: written, flushed


def test_kill_9_and_restart_loses_nothing_that_reached_the_spool(
    simulator: SimulatorThread, collector_process: Make, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    spool = tmp_path / "spool"
    args = args_for(simulator, store, spool, "--flush-seconds", "2")
    first = collector_process(*args)
    first.wait_for_event("snapshot", count=2)
    wait_until("an upload", lambda: uploads_of(store) > 0, 20)
    first.kill9()
    in_spool = spool_lines(spool)
    stored_before = store_lines(store)
    assert in_spool, "the kill left nothing in the spool: the test proves nothing"
    second = collector_process(*args)
    second.wait_for_event("start")  # (it converts the journal the kill left before it starts collecting)
    second.wait_for_event("snapshot", count=2)
    second.terminate()
    assert second.wait(30) == 0
    stored_after = store_lines(store)
    assert in_spool <= stored_after, f"{len(in_spool - stored_after)} spooled lines were lost"
    assert stored_before <= stored_after
    # the restart's own data is there too, under a new session
    sessions = {k.rsplit("/", 1)[1].split("-")[1] for k in (i.key for i in open_store(store).list("raw/"))}
    assert len(sessions) == 2


def test_store_outage_loses_nothing(
    simulator: SimulatorThread,
    collector_process: Make,
    tmp_path: Path,
    s3_behind_proxy: tuple[str, TcpProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPTH_S3_RETRY_DEADLINE", "2")  # the store reports the outage quickly
    store, proxy = s3_behind_proxy
    spool = tmp_path / "spool"
    p = collector_process(*args_for(simulator, store, spool))
    p.wait_for_event("snapshot", count=2)
    wait_until("an upload", lambda: uploads_of(store) > 0, 20)
    proxy.set_mode("refuse")
    p.wait_for_event("upload_failed", timeout=20)
    wait_until("objects waiting in the spool", lambda: len(list((spool / "outbox").rglob("*.gz"))) >= 4, 20)
    proxy.set_mode("blackhole")
    wait_until("more objects waiting", lambda: len(list((spool / "outbox").rglob("*.gz"))) >= 8, 20)
    assert p.running
    proxy.set_mode("pass")
    p.wait_for_event("upload_recovered", timeout=40)
    p.terminate()
    assert p.wait(60) == 0
    assert p.wait_for_event("stopped")[0]["uploaded_all"] is True
    stored = read_stored(store, "spot", "eu-1")
    for sym in ("BTCUSDT", "ETHUSDT"):
        cmp = compare_with_truth(stored[sym], simulator.control.truth(sym))
        assert cmp.missing == [], f"{sym}: lost {cmp.missing[:5]}"


def test_store_down_at_start_and_at_shutdown_exits_0_leaving_the_spool_for_the_next_start(
    simulator: SimulatorThread,
    collector_process: Make,
    tmp_path: Path,
    s3_behind_proxy: tuple[str, TcpProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPTH_S3_RETRY_DEADLINE", "2")
    store, proxy = s3_behind_proxy
    spool = tmp_path / "spool"
    args = args_for(simulator, store, spool, "--shutdown-grace", "300")
    proxy.set_mode("refuse")
    first = collector_process(*args)
    first.wait_for_event("snapshot", count=2)  # collecting although the store is unreachable
    wait_until("objects in the spool", lambda: len(list((spool / "outbox").rglob("*.gz"))) >= 2, 20)
    t0 = time.monotonic()
    first.terminate()
    first.wait_for_event("stopping")
    assert first.running  # retrying the store for up to --shutdown-grace ...
    first.terminate()  # ... unless told twice
    assert first.wait(40) == 0
    assert time.monotonic() - t0 < 30
    left = first.wait_for_event("stopped_with_spool_left")[0]
    assert left["pending_objects"] > 0 and left["spool_dir"] == str(spool)
    in_spool = spool_lines(spool)
    proxy.set_mode("pass")
    second = collector_process(*args)
    second.wait_for_event("spool_leftovers")
    second.wait_for_event("snapshot", count=2)
    second.terminate()
    assert second.wait(40) == 0
    assert in_spool <= store_lines(store)
    for obj_key in (i.key for i in open_store(store).list("raw/")):
        assert read_raw_object(open_store(store).get_bytes(obj_key)).problems == []


def test_metrics_port_in_use_exits_2(
    simulator: SimulatorThread, collector_process: Make, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = collector_process(
            *args_for(simulator, str(tmp_path / "store"), tmp_path / "spool", "--metrics-port", str(port))
        )
        assert p.wait(30) == 2
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in p.output()


def test_unknown_symbol_is_found_even_when_the_websocket_refuses(
    simulator: SimulatorThread, collector_process: Make, tmp_path: Path
) -> None:
    from exchange_sim.tcp_proxy import free_port

    args = args_for(simulator, str(tmp_path / "store"), tmp_path / "spool", symbols="NOSUCHCOIN")
    args[args.index("--ws-url") + 1] = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    p = collector_process(*args)
    assert p.wait(40) == 2
    assert "NOSUCHCOIN" in p.output().splitlines()[-1]
    assert p.find_events("connect_failed")
