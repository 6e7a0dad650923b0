"""The whole exchange: 400 symbols, two collectors, Binance's weight budget enforced by the simulator.

``make test`` runs a short form (``DEPTH_UNIVERSE_SECONDS``, default 60 s after every symbol of both
collectors is anchored; snapshot depth 100, weight 5, so 400 symbols anchor within a minute).
``make universe`` runs the long form: 8 minutes at the default depth (1000, weight 50), where
anchoring all 400 symbols itself takes most of the budget. Both assert the same things:

- no 418 (and 429s are reported), the simulator banned nobody;
- every depth frame a collector received is stored (its own count against the stored lines) and the
  stored ids of every symbol match the simulator's truth without a hole;
- at most 15 raw objects per stream per minute (layout 2: one object per stream per flush);
- every symbol snapshotted, and the time it took;
- exit 0 on SIGTERM with everything uploaded.

The figures go to ``artifacts/universe.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from depth_core.raw_format import LineKind, RawObjectKey
from depth_store import open_store
from exchange_sim.control import SimControl
from exchange_sim.runner import SimulatorThread
from tests.collectors.truth import compare_with_truth
from tests.fixtures.collector import CollectorProcess, depth_events, read_stored
from tests.fixtures.paths import REPO_ROOT

N_SYMBOLS = int(os.environ.get("DEPTH_UNIVERSE_SYMBOLS", "400"))
SECONDS = float(os.environ.get("DEPTH_UNIVERSE_SECONDS", "60"))
DEPTH = os.environ.get("DEPTH_UNIVERSE_DEPTH", "100")
STREAMS = ("uni-a", "uni-b")


def universe_rates(n: int) -> dict[str, float]:
    """Heavy-tailed like the real exchange: a few symbols at 10 messages/s, some at 5, most at 1-3."""
    rates: dict[str, float] = {}
    for i in range(n):
        sym = f"U{i:03d}USDT"
        rates[sym] = 10.0 if i < 4 else 5.0 if i < 40 else float(1 + i % 3)
    return rates


def wait_for_log_event(proc: CollectorProcess, name: str, timeout: float) -> dict[str, Any]:
    """The first log line of event ``name``, reading only new bytes once a second: the simulator shares this
    process (and its GIL), so re-parsing a growing log every 50 ms would slow the exchange down."""
    needle = f'"event":"{name}"'.encode()
    deadline = time.monotonic() + timeout
    pos, rest = 0, b""
    while True:
        with open(proc.log_path, "rb") as f:
            f.seek(pos)
            chunk = f.read()
        pos += len(chunk)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if needle in line:
                found: dict[str, Any] = json.loads(line)
                return found
        if not proc.running:
            raise AssertionError(
                f"collector exited ({proc.returncode}) before {name!r}: {proc.output()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {name!r} in {proc.log_path}")
        time.sleep(1.0)  # polling a log file: there is no event to await across processes


@pytest.mark.timeout(int(SECONDS) + 600)  # anchoring (up to 8 min at depth 1000) + the run + stopping
def test_two_collectors_capture_400_symbols_within_the_weight_budget(
    make_simulator: Callable[..., SimulatorThread],
    collector_process: Callable[..., CollectorProcess],
    tmp_path: Path,
) -> None:
    rates = universe_rates(N_SYMBOLS)
    symbols = list(rates)
    # speed 1: exchange time is wall time (the weight budget is per wall-clock minute); Binance's limits
    # truth_max_events: the truth of 400 symbols over 8 minutes would hold ~0.5 M events (GBs), and the
    # garbage collector's full passes over them stall the exchange for seconds. The truth keeps the last 60
    # events per symbol; every stored id chain is checked for holes in full instead.
    sim = make_simulator(
        symbols=symbols, rates=rates, speed=1.0, weight_limit_per_minute=6000, truth_max_events=60
    )
    store = tmp_path / "store"
    procs = {
        stream: collector_process(
            "--collector-id",
            stream,
            "--symbols",
            ",".join(symbols),
            "--store",
            str(store),
            "--ws-url",
            sim.ws_url,
            "--rest-url",
            sim.rest_url,
            "--spool-dir",
            str(tmp_path / f"spool-{stream}"),
            "--snapshot-depth",
            DEPTH,
            "--stall-timeout",
            "0",
        )
        for stream in STREAMS
    }
    t0 = time.monotonic()
    anchored = {
        stream: wait_for_log_event(p, "all_symbols_anchored", timeout=max(300.0, SECONDS + 120))
        for stream, p in procs.items()
    }
    anchored_at = time.monotonic() - t0
    remaining = SECONDS - (time.monotonic() - t0)
    if remaining > 0:
        time.sleep(
            remaining
        )  # the run's length (collecting for that long is the point), not a synchronisation
    for p in procs.values():
        p.terminate()
    stopped = {}
    for stream, p in procs.items():
        assert p.wait(120) == 0
        stopped[stream] = wait_for_log_event(p, "stopped", timeout=30)
    wall_minutes = (time.monotonic() - t0) / 60

    assert not sim.sim.weights.banned_until, "the simulator banned the IP (418)"
    control = SimControl(sim.rest_url, timeout=120)  # a busy simulator (400 symbols) may answer slowly
    figures: dict[str, Any] = {
        "symbols": N_SYMBOLS,
        "seconds": round(time.monotonic() - t0, 1),
        "depth": int(DEPTH),
        "all_anchored_within_s": round(anchored_at, 1),
        "streams": {},
    }
    for stream in STREAMS:
        report, first = stopped[stream], anchored[stream]
        assert report["uploaded_all"] is True and report["exit_code"] == 0
        assert report["rest_418"] == 0 and first["rest_418"] == 0
        assert report["symbols_anchored"] == N_SYMBOLS == first["symbols"]
        keys = [
            RawObjectKey.parse(i.key)
            for i in open_store(str(store)).list(f"raw/market=spot/stream={stream}/")
        ]
        assert keys and all(k.layout == 2 for k in keys)
        span_min = max(
            (max(k.first_receive_ns for k in keys) - min(k.first_receive_ns for k in keys)) / 60e9, 1.0
        )
        per_minute = len(keys) / span_min
        assert per_minute <= 15, f"{stream}: {len(keys)} objects in {span_min:.1f} min"
        stored = read_stored(str(store), "spot", stream)
        depth_lines = sum(1 for lines in stored.values() for ln in lines if ln.kind is LineKind.DEPTH)
        assert report["depth_frames_not_spooled"] == 0
        assert depth_lines == report["depth_frames"], (
            f"{stream}: received {report['depth_frames']}, stored {depth_lines}"
        )
        for sym in symbols:
            assert any(ln.kind is LineKind.SNAPSHOT for ln in stored[sym]), f"{stream} {sym}: no snapshot"
        for sym in symbols:  # spot ids chain (U == previous u + 1): no hole in anything stored
            events = sorted({(e.first_id, e.last_id) for e in depth_events(stored[sym])}, key=lambda r: r[1])
            assert events, f"{stream} {sym}: no depth frame stored"
            holes = [(a, b) for a, b in itertools.pairwise(events) if b[0] > a[1] + 1]
            assert not holes, f"{stream} {sym}: stored ids have holes {holes[:3]}"
        for sym in symbols[:: max(1, N_SYMBOLS // 40)]:  # the truth's tail of 40 symbols, busy and quiet ones
            cmp = compare_with_truth(stored[sym], control.truth(sym))
            assert cmp.missing == [] and cmp.gap_notes == [], (
                f"{stream} {sym}: {cmp.missing[:3]} {cmp.gap_notes[:3]}"
            )
        figures["streams"][stream] = {
            "objects": len(keys),
            "objects_per_minute": round(per_minute, 2),
            "depth_frames": report["depth_frames"],
            "snapshots": report["snapshots"],
            "all_anchored_after_s": first["seconds"],
            "slowest_first_snapshot_s": first["slowest_s"],
            "rest_429": report["rest_429"],
            "rest_418": report["rest_418"],
        }
    figures["wall_minutes"] = round(wall_minutes, 2)
    out = REPO_ROOT / "artifacts"
    out.mkdir(exist_ok=True)
    (out / "universe.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
