"""Credentials come from the standard AWS environment and never reach a log, an output or a spool file.

A collector (DEBUG logging) and a pipeline run work against moto's S3 with unique marker credentials;
afterwards every byte they printed or left on disk (logs, spool, Dagster home with its run storage
and compute logs) is searched for the markers.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.collector import CollectorProcess, wait_until
from tests.fixtures.moto import MOTO_REGION, moto_client, new_bucket

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def marker_env(endpoint: str, key_id: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": MOTO_REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n.decode()}" for n in needles if n in data]
    return hits


@pytest.fixture
def markers() -> tuple[str, str]:
    tag = uuid.uuid4().hex
    return f"AKIALEAKCHECK{tag[:7].upper()}", f"leakcheck-secret-{tag}"


def test_collector_and_pipeline_never_log_credentials(
    simulator: Any,
    moto_endpoint: str,
    tmp_path: Path,
    collector_process: Callable[..., CollectorProcess],
    markers: tuple[str, str],
) -> None:
    key_id, secret = markers
    needles = [key_id.encode(), secret.encode()]
    bucket = new_bucket(moto_endpoint)
    env = marker_env(moto_endpoint, key_id, secret)
    store_url = f"s3://{bucket}/depth"
    s3 = moto_client(moto_endpoint)

    collector = collector_process(
        "--collector-id",
        "sec-1",
        "--symbols",
        "BTCUSDT",
        "--store",
        store_url,
        "--ws-url",
        simulator.ws_url,
        "--rest-url",
        simulator.rest_url,
        "--spool-dir",
        str(tmp_path / "spool"),
        "--flush-seconds",
        "1",
        "--log-level",
        "DEBUG",
        "--metrics-port",
        "0",
        env=env,
    )

    def uploaded() -> int:
        return int(s3.list_objects_v2(Bucket=bucket, Prefix="depth/raw/").get("KeyCount", 0))

    wait_until("the collector to upload raw objects with the marker credentials", lambda: uploaded() >= 2, 60)
    collector.terminate()
    assert collector.wait(60) == 0
    collector_output = collector.output()
    assert '"event"' in collector_output, "the collector logged nothing: the check below would prove nothing"

    # the pipeline on what the collector stored, same marker credentials
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    date = dt.datetime.now(dt.UTC).date().isoformat()
    pipe_env = {
        **env,
        "DAGSTER_HOME": str(dagster_home),
        "DEPTH_STORE_URL": store_url,
        "DEPTH_STREAMS": "sec-1",
        "DEPTH_SYMBOLS": "BTCUSDT",
        "DEPTH_MARKET": "spot",
        "DAGSTER_TELEMETRY_DISABLED": "1",
    }
    pipe = subprocess.run(
        [sys.executable, "-m", "depth_pipeline.cli", "run", "--date", date, "--symbols", "BTCUSDT"],
        cwd=REPO_ROOT,
        env=pipe_env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    pipe_output = pipe.stdout + pipe.stderr
    assert pipe_output.strip(), "the pipeline printed nothing"
    assert any(dagster_home.rglob("*")), "the pipeline left no run storage to search"

    for name, text in (("collector output", collector_output.encode()), ("pipeline output", pipe_output)):
        for n in needles:
            assert n not in text, f"{name} contains the credential marker {n.decode()!r}"
    assert files_containing(tmp_path, needles) == []
