"""The ``depth-exchange-sim`` console script: ready line, serving, clean stop on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from exchange_sim.control import SimControl
from tests.sim.helpers import http_get


def _command() -> list[str]:
    script = Path(sys.executable).with_name("depth-exchange-sim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "exchange_sim.cli"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_ready_line_serves_and_stops_cleanly(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            *_command(),
            "--port",
            "0",
            "--market",
            "usdm",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--seed",
            "3",
            "--speed",
            "10",
            "--max-connection-age",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # blocks until ready (or the process died: empty line)
        assert line.startswith("listening ws://127.0.0.1:"), (line, proc.stderr.read() if proc.stderr else "")
        rest_url = "http://" + line.split("ws://", 1)[1]
        status = SimControl(rest_url).status()
        assert (
            status["market"] == "usdm" and status["symbols"] == ["BTCUSDT", "ETHUSDT"] and status["seed"] == 3
        )
        code, _, body = http_get(rest_url + "/fapi/v1/depth?symbol=ETHUSDT&limit=5")
        assert code == 200 and len(body["bids"]) == 5
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_a_bad_market() -> None:
    result = subprocess.run([*_command(), "--market", "coin"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "market" in result.stderr
