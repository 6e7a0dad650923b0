"""``depth-collector`` (docs/collector.md) driven as a process (flags, env, URLs, SIGTERM, spool lock)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from collectors.config import DEFAULT_REST_URL, DEFAULT_WS_URL, FLAGS
from depth_core.raw_format import LineKind, RawLine, RawObjectKey, read_raw_object
from depth_store import open_store
from exchange_sim.runner import SimulatorThread
from exchange_sim.tcp_proxy import TcpProxy
from tests.fixtures.collector import CollectorProcess, depth_events, read_stored, read_v2_object, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_FLAGS = {
    "--collector-id": "DEPTH_COLLECTOR_ID",
    "--symbols": "DEPTH_SYMBOLS",
    "--store": "DEPTH_STORE_URL",
    "--market": "DEPTH_MARKET",
    "--ws-url": "DEPTH_WS_URL",
    "--rest-url": "DEPTH_REST_URL",
}
SPEC_FLAGS_WITHOUT_NAMED_ENV = (
    "--speed",
    "--flush-seconds",
    "--snapshot-interval",
    "--spool-dir",
    "--metrics-port",
    "--shutdown-grace",
)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test process environment without the collector's flag variables, plus ``extra``."""
    flag_envs = {f.env for f in FLAGS}
    env = {k: v for k, v in os.environ.items() if k not in flag_envs}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collectors.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def metric_values(url: str, name: str) -> dict[str, float]:
    """``{symbol: value}`` of one labelled counter, kind="depth", from the collector's /metrics."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and 'kind="depth"' in line:
            symbol = re.search(r'symbol="([A-Z0-9]+)"', line)
            assert symbol is not None
            out[symbol.group(1)] = float(line.rsplit(" ", 1)[1])
    return out


def test_every_spec_flag_has_its_env_var_and_is_documented() -> None:
    by_flag = {f.flag: f.env for f in FLAGS}
    for flag, env in SPEC_FLAGS.items():
        assert by_flag.get(flag) == env, f"{flag} must read {env}"
    for flag in SPEC_FLAGS_WITHOUT_NAMED_ENV:
        assert flag in by_flag, f"{flag} missing"
        assert by_flag[flag].startswith("DEPTH_")
    docs = (REPO_ROOT / "README.md").read_text() + "".join(
        p.read_text() for p in (REPO_ROOT / "docs").glob("*.md")
    )
    undocumented = [f"{f.flag}/{f.env}" for f in FLAGS if f.flag not in docs or f.env not in docs]
    assert not undocumented, f"flags or env vars not documented in README.md or docs/: {undocumented}"
    helped = run_cli(["--help"], os.environ.copy())
    assert helped.returncode == 0
    for f in FLAGS:
        assert f.flag in helped.stdout and f.env in helped.stdout


def test_defaults_are_binance_public_endpoints() -> None:
    assert DEFAULT_WS_URL == {
        "spot": "wss://stream.binance.com:9443",
        "usdm": "wss://fstream.binance.com/public",
    }
    assert DEFAULT_REST_URL == {"spot": "https://api.binance.com", "usdm": "https://fapi.binance.com"}


@pytest.mark.parametrize(
    ("args", "env_extra", "names"),
    [
        (["--collector-id", "EU-1"], {}, "--collector-id"),
        (["--collector-id", "-eu"], {}, "--collector-id"),
        (["--collector-id", "a" * 33], {}, "--collector-id"),
        ([], {"DEPTH_COLLECTOR_ID": "eu 1"}, "--collector-id"),
        (["--collector-id", "eu-1", "--symbols", "BTC-USDT"], {}, "--symbols"),
        (["--collector-id", "eu-1", "--symbols", "B"], {}, "--symbols"),
        (["--collector-id", "eu-1", "--market", "coinm"], {}, "--market"),
        (["--collector-id", "eu-1"], {"DEPTH_MARKET": "coinm"}, "--market"),
        (["--collector-id", "eu-1"], {"DEPTH_WS_URL": "http://not-a-websocket"}, "--ws-url"),
        (["--collector-id", "eu-1", "--speed", "250ms"], {}, "--speed"),
    ],
)
def test_bad_values_exit_2_with_a_message_naming_the_flag(
    tmp_path: Path, args: list[str], env_extra: dict[str, str], names: str
) -> None:
    env = clean_env(tmp_path, DEPTH_SYMBOLS="BTCUSDT", DEPTH_STORE_URL=str(tmp_path / "store"), **env_extra)
    done = run_cli(args, env)
    assert done.returncode == 2, done.stderr
    assert names in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "store").exists(), "nothing may start for a refused configuration"


def test_spot_urls_flag_wins_sigterm_uploads_everything_and_spool_is_locked(
    tmp_path: Path, make_simulator: Callable[..., SimulatorThread]
) -> None:
    # pings every 0.2 s, 1 s to answer: a collector that does not answer is disconnected
    sim = make_simulator(
        symbols=["BTCUSDT", "ETHUSDT"], path_prefix="/x", ping_interval_s=0.2, pong_timeout_s=1.0
    )
    store_dir = tmp_path / "store"
    env = clean_env(
        tmp_path,
        DEPTH_COLLECTOR_ID="env-loses",  # the flag wins
        DEPTH_MARKET="usdm",  # the flag wins
        DEPTH_WS_URL="ws://127.0.0.1:9/nothing-here",  # the flag wins
        DEPTH_SYMBOLS="btcusdt,ethUSDT",  # env used (no flag), case-folded
        DEPTH_STORE_URL=f"file://{store_dir}",
        DEPTH_REST_URL=sim.rest_url + "/x",
        DEPTH_FLUSH_SECONDS="1",
        DEPTH_METRICS_PORT="0",
    )
    proc = CollectorProcess(
        ["--collector-id", "acc-1", "--market", "spot", "--ws-url", sim.ws_url + "/x"],
        env,
        tmp_path / "c.log",
    ).start()
    second = CollectorProcess(["--collector-id", "acc-1"], env, tmp_path / "c2.log")
    try:
        url = proc.wait_for_event("metrics_listening", timeout=30)[0]["url"]
        proc.wait_for_event("snapshot", count=2, timeout=30)
        requests = sim.call(lambda s: list(s.request_log))
        ws_paths = [p for p in requests if "/stream" in p]
        assert ws_paths and ws_paths[0] == "/x/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms", (
            requests
        )
        rest = sorted(p for p in requests if "/depth?" in p)
        assert rest[:2] == [
            "/x/api/v3/depth?symbol=BTCUSDT&limit=1000",
            "/x/api/v3/depth?symbol=ETHUSDT&limit=1000",
        ], requests

        # default spool dir: per collector id under the user's state dir; a second process is refused
        assert (tmp_path / "state" / "depth-collector" / "acc-1").is_dir()
        second.start()
        assert second.wait(30) == 2
        assert "spool" in second.output().lower()
        assert proc.running

        sim.control.pause()
        sent = lambda: sum(c["sent"] for c in sim.control.connections())  # noqa: E731
        received = wait_until(
            "the collector to receive every frame the simulator sent",
            lambda: (
                (m := metric_values(url, "depth_collector_messages_total"))
                and sum(m.values()) == sent()
                and m
            ),
            timeout=20,
        )
        last_ids = {sym: sim.control.last_update_id(sym) for sym in ("BTCUSDT", "ETHUSDT")}
        assert len(proc.find_events("connect")) == 1 and len(sim.control.connections()) == 1, "pings answered"
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        proc.stop_quietly()
        second.stop_quietly()

    store = open_store(str(store_dir))
    keys = [RawObjectKey.parse(i.key) for i in store.list("raw/")]
    assert keys and {k.stream for k in keys} == {"acc-1"} and {k.market for k in keys} == {"spot"}
    per_symbol: dict[str, list[RawLine]] = {}
    key_pattern = re.compile(
        r"raw/market=spot/stream=acc-1/(?:symbol=(BTCUSDT|ETHUSDT)/)?date=(\d{4}-\d{2}-\d{2})/"
        r"(\d{19})-[0-9a-z]{1,16}-\d{8}\.ndjson\.gz"
    )
    for key in keys:
        match = key_pattern.fullmatch(key.key)
        assert match, f"{key.key} does not follow docs/raw-format.md"
        assert match.group(1) == key.symbol  # no symbol= part: layout 2
        first_ns = int(match.group(3))
        assert match.group(2) == dt.datetime.fromtimestamp(first_ns // 10**9, dt.UTC).date().isoformat()
        if key.symbol is None:
            # layout 2: one object holds every symbol of one stream; each line names its symbol
            lines = read_v2_object(store.get_bytes(key.key), key.key)
            assert lines[0][1].receive_ns == first_ns
            for sym, line in lines:
                assert sym in ("BTCUSDT", "ETHUSDT", "-")
                if line.kind == LineKind.DEPTH:
                    doc = orjson.loads(line.text)
                    assert doc["data"]["s"] == sym and doc["stream"] == f"{sym.lower()}@depth@100ms"
                if sym != "-":
                    per_symbol.setdefault(sym, []).append(line)
            continue
        content = read_raw_object(store.get_bytes(key.key))
        assert content.lines[0].receive_ns == first_ns
        assert not content.problems
        for line in content.lines:
            if line.kind == LineKind.DEPTH:
                # one object holds one symbol of one stream; the line is the exact frame text
                doc = orjson.loads(line.text)
                assert doc["data"]["s"] == key.symbol and doc["stream"] == f"{key.symbol.lower()}@depth@100ms"
        per_symbol.setdefault(key.symbol, []).extend(content.lines)
    assert set(per_symbol) == {"BTCUSDT", "ETHUSDT"}
    for sym, lines in per_symbol.items():
        lines.sort(key=lambda ln: ln.receive_ns)
        events = depth_events(lines)
        assert len(events) == received[sym], f"{sym}: every frame received before SIGTERM is stored"
        assert all(b.first_id == a.last_id + 1 for a, b in itertools.pairwise(events))
        assert events[-1].last_id == last_ids[sym]
        assert any(ln.kind == LineKind.SNAPSHOT for ln in lines)


def test_usdm_paths_and_1000ms_speed(tmp_path: Path, make_simulator: Callable[..., SimulatorThread]) -> None:
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"], path_prefix="/y")
    env = clean_env(tmp_path, DEPTH_SPEED="100ms", DEPTH_SPOOL_DIR=str(tmp_path / "unused"))
    proc = CollectorProcess(
        [
            "--collector-id",
            "acc-u",
            "--symbols",
            "btcusdt",
            "--store",
            str(tmp_path / "store"),
            "--market",
            "usdm",
            "--speed",
            "1000ms",
            "--ws-url",
            sim.ws_url + "/y",
            "--rest-url",
            sim.rest_url + "/y",
            "--spool-dir",
            str(tmp_path / "spool"),
            "--snapshot-interval",
            "1",
        ],
        env,
        tmp_path / "u.log",
    ).start()
    try:
        proc.wait_for_event("snapshot", timeout=30)
        sim.control.fault("close")  # it reconnects on its own and takes a snapshot after the reconnect
        proc.wait_for_event("connect", count=2, timeout=30)
        proc.wait_for_event("snapshot", count=2, timeout=30)
        proc.wait_for_event("snapshot", lambda e: e.get("reason") == "interval", timeout=30)
        # a gap it sees, then a snapshot after it; by message, not by id: at 1000 ms an id range read a moment
        # earlier may already be sent before the fault is armed
        sim.control.fault("drop_next", symbol="BTCUSDT")
        proc.wait_for_event("gap", timeout=30)
        proc.wait_for_event("snapshot", lambda e: e.get("reason") == "gap", timeout=30)
        requests = sim.call(lambda s: list(s.request_log))
        assert requests.count("/y/stream?streams=btcusdt@depth") == 2, requests
        assert any(e.get("reason") == "reconnect" for e in proc.find_events("snapshot")), proc.find_events(
            "snapshot"
        )
        assert "/y/fapi/v1/depth?symbol=BTCUSDT&limit=1000" in requests, requests
        assert (tmp_path / "spool").is_dir() and not (tmp_path / "unused").exists()
        proc.signal(signal.SIGINT)  # SIGINT stops it like SIGTERM
        assert proc.wait(30) == 0
        assert proc.find_events("stopped"), proc.output()[-2000:]
    finally:
        proc.stop_quietly()


def test_store_unreachable_at_sigterm_exit_0_spool_kept_reported_and_uploaded_first_next_start(
    tmp_path: Path, make_simulator: Callable[..., SimulatorThread], s3_behind_proxy: tuple[str, TcpProxy]
) -> None:
    store_url, proxy = s3_behind_proxy
    sim = make_simulator(symbols=["BTCUSDT"])
    env = clean_env(tmp_path)
    args = [
        "--collector-id",
        "acc-s3",
        "--symbols",
        "BTCUSDT",
        "--store",
        store_url,
        "--ws-url",
        sim.ws_url,
        "--rest-url",
        sim.rest_url,
        "--spool-dir",
        str(tmp_path / "spool"),
        "--flush-seconds",
        "1",
        "--shutdown-grace",
        "2",
        "--metrics-port",
        "0",
    ]
    first = CollectorProcess(args, env, tmp_path / "s3-1.log").start()
    second = CollectorProcess(args, env, tmp_path / "s3-2.log")
    try:
        url = first.wait_for_event("metrics_listening", timeout=30)[0]["url"]
        first.wait_for_event("snapshot", timeout=30)
        proxy.set_mode("refuse")
        sim.control.pause()
        sent = lambda: sum(c["sent"] for c in sim.control.connections())  # noqa: E731
        received = wait_until(
            "every sent frame received",
            lambda: (
                (m := metric_values(url, "depth_collector_messages_total"))
                and sum(m.values()) == sent()
                and m
            ),
            timeout=20,
        )["BTCUSDT"]
        first.terminate()
        assert first.wait(30) == 0
        left = first.find_events("stopped_with_spool_left")
        assert left and left[0]["pending_objects"] > 0, first.output()[-2000:]

        proxy.set_mode("pass")
        second.start()
        second.wait_for_event("spool_leftovers", timeout=30)
        stored = wait_until(
            "the spool of the first run uploaded by the second",
            lambda: (
                (ev := depth_events(read_stored(store_url, "spot", "acc-s3").get("BTCUSDT", [])))
                and len(ev) >= received
                and ev
            ),
            timeout=30,
        )
        assert len(stored) == received
        assert all(b.first_id == a.last_id + 1 for a, b in itertools.pairwise(stored))
        second.terminate()
        assert second.wait(30) == 0
    finally:
        first.stop_quietly()
        second.stop_quietly()
