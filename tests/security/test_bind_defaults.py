"""Network-facing parts bind to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import re
from pathlib import Path

from collectors.config import parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_collector_metrics_bind_loopback_by_default(tmp_path: Path) -> None:
    config = parse_config(
        [
            "--collector-id",
            "eu-1",
            "--symbols",
            "BTCUSDT",
            "--store",
            str(tmp_path),
            "--metrics-port",
            "9100",
        ],
        env={},
    )
    assert config.metrics_port == 9100
    assert config.metrics_host == "127.0.0.1"


def test_dagster_ui_target_binds_loopback() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    ui = re.search(r"^ui:.*?(?=^\S)", makefile, re.S | re.M)
    assert ui is not None, "Makefile has no ui target"
    assert "dagster dev" in ui.group(0)
    assert "-h 127.0.0.1" in ui.group(0)
