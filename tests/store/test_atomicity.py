"""A writer killed mid-write leaves nothing partial visible, on both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from depth_store import open_store
from depth_store.local import TEMP_DIR_NAME, LocalStore
from depth_store.s3 import S3Store
from exchange_sim.tcp_proxy import TcpProxy

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK = 1 << 20


def _start_writer(
    store_url: str, key: str, source: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A separate process that uploads ``source`` to ``key`` with ``put_file``."""
    code = (
        "import sys; from pathlib import Path; from depth_store import open_store; "
        "open_store(sys.argv[1]).put_file(sys.argv[2], Path(sys.argv[3]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, store_url, key, str(source)],
        cwd=REPO_ROOT,
        env=env if env is not None else dict(os.environ),
        stderr=subprocess.PIPE,
    )


def _poll(condition: Any, timeout: float, what: str) -> None:
    """Poll a condition with a deadline (the other process gives no signal we could wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("existing", [False, True], ids=["new-key", "overwrite"])
def test_local_writer_killed_mid_write_leaves_nothing_partial(tmp_path: Path, existing: bool) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    if existing:
        store.put_bytes("big/object.bin", b"old complete content")
    fifo = tmp_path / "source.fifo"
    os.mkfifo(fifo)
    proc = _start_writer(str(root), "big/object.bin", fifo)
    try:
        # The writer copies from the pipe as we feed it: it is provably mid-write below.
        with fifo.open("wb") as feed:
            for _ in range(4):
                feed.write(b"\xab" * CHUNK)
            feed.flush()
            tmp_dir = root / TEMP_DIR_NAME
            _poll(
                lambda: tmp_dir.is_dir() and any(p.stat().st_size > 0 for p in tmp_dir.iterdir()),
                30,
                "the writer's temp file to grow",
            )
            _kill(proc)
    except BrokenPipeError:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert [p.stat().st_size > 0 for p in (root / TEMP_DIR_NAME).iterdir()] == [True], "was not mid-write"
    if existing:
        assert [o.key for o in store.list()] == ["big/object.bin"]
        assert store.get_bytes("big/object.bin") == b"old complete content"
    else:
        assert list(store.list()) == []
        assert store.head("big/object.bin") is None
    assert store.remove_stale_temp_files(older_than_seconds=0) == 1
    # A fresh writer then succeeds on the same key.
    data = b"\xcd" * (3 * CHUNK)
    store.put_bytes("big/object.bin", data)
    assert store.get_bytes("big/object.bin") == data


def test_s3_multipart_writer_killed_leaves_no_object(
    s3_behind_proxy: tuple[str, TcpProxy], s3_client: Any, tmp_path: Path
) -> None:
    url, proxy = s3_behind_proxy
    source = tmp_path / "big.bin"
    with source.open("wb") as fh:
        for i in range(40):
            fh.write(bytes([i]) * CHUNK)
    env = dict(os.environ)
    env.update(
        DEPTH_S3_MULTIPART_THRESHOLD=str(5 * CHUNK),
        DEPTH_S3_MULTIPART_CHUNKSIZE=str(5 * CHUNK),
        DEPTH_S3_MAX_CONCURRENCY="1",
    )
    store = open_store(url)
    assert isinstance(store, S3Store)
    bucket, full_key = store.bucket, f"{store.prefix}/big/object.bin"

    proc = _start_writer(url, "big/object.bin", source, env)
    try:
        _poll(
            lambda: s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads"),
            30,
            "the multipart upload to start",
        )
        proxy.set_mode("blackhole")  # freeze the writer between parts, then kill it
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proxy.set_mode("pass")

    uploads = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == [full_key], "the writer was not mid-upload"
    assert store.head("big/object.bin") is None
    assert list(store.list()) == []
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert store.abort_incomplete_uploads(older_than_seconds=0) == 1
    assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_s3_multipart_upload_round_trip_verified(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPTH_S3_MULTIPART_THRESHOLD", str(5 * CHUNK))
    monkeypatch.setenv("DEPTH_S3_MULTIPART_CHUNKSIZE", str(5 * CHUNK))
    source = tmp_path / "big.bin"
    payload = os.urandom(CHUNK) * 12 + b"tail"
    source.write_bytes(payload)
    store = open_store(s3_env)
    info = store.put_file("big/object.bin", source)
    assert info.size == len(payload)
    assert info.etag is not None and info.etag.endswith("-3")  # really multipart: 3 parts
    assert store.get_bytes("big/object.bin") == payload
