"""S3 retries transient failures (throttling, 5xx, connection loss) and gives up in bounded time."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from depth_store import StoreError, StoreUnavailableError, open_store
from depth_store.s3 import S3Config, S3Store
from exchange_sim.tcp_proxy import TcpProxy

FAST_RETRIES = S3Config(
    connect_timeout=1, read_timeout=5, max_attempts=50, retry_deadline=30, backoff_base=0.05, backoff_cap=0.5
)


def _open(url: str, config: S3Config = FAST_RETRIES) -> S3Store:
    store = open_store(url, s3_config=config)
    assert isinstance(store, S3Store)
    return store


@pytest.fixture
def recover_after() -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=30)


def _switch_to_pass_after(proxy: TcpProxy, counter: str, n: int, threads: list[threading.Thread]) -> None:
    """From another thread: once ``n`` failures were served, heal the proxy."""

    def heal() -> None:
        if proxy.wait_for(counter, n, timeout=30):
            proxy.set_mode("pass")

    thread = threading.Thread(target=heal, daemon=True)
    thread.start()
    threads.append(thread)


@pytest.mark.parametrize("status", [503, 500])
def test_operations_succeed_after_injected_http_errors(
    s3_behind_proxy: tuple[str, TcpProxy], recover_after: list[threading.Thread], status: int
) -> None:
    url, proxy = s3_behind_proxy
    store = _open(url)

    proxy.set_mode("http_error", status=status)
    _switch_to_pass_after(proxy, "http_errors", 2, recover_after)
    info = store.put_bytes("raw/obj", b"payload")
    assert proxy.stats["http_errors"] >= 2
    assert info.size == 7

    served = proxy.stats["http_errors"]
    proxy.set_mode("http_error", status=status)
    _switch_to_pass_after(proxy, "http_errors", served + 2, recover_after)
    assert store.get_bytes("raw/obj") == b"payload"

    served = proxy.stats["http_errors"]
    proxy.set_mode("http_error", status=status)
    _switch_to_pass_after(proxy, "http_errors", served + 2, recover_after)
    assert [o.key for o in store.list("raw/")] == ["raw/obj"]
    assert proxy.stats["http_errors"] >= served + 2


def test_retry_warnings_name_key_attempt_and_error_but_no_secret(
    s3_behind_proxy: tuple[str, TcpProxy],
    recover_after: list[threading.Thread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, proxy = s3_behind_proxy
    store = _open(url)
    proxy.set_mode("http_error", status=503)
    _switch_to_pass_after(proxy, "http_errors", 1, recover_after)
    with caplog.at_level(logging.DEBUG, logger="depth_store"):
        store.put_bytes("raw/logged", b"x")
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "depth_store" and r.levelno == logging.WARNING
    ]
    assert warnings, "no retry warning was logged"
    assert "depth-test/raw/logged" in warnings[0] and "attempt 1/" in warnings[0]
    assert "ClientError" in warnings[0] and "SlowDown" in warnings[0]
    assert "testing-secret" not in caplog.text and "testing-key-id" not in caplog.text


class _HealOnFirstRetry(logging.Handler):
    """Heals the proxy (from another thread) once the store reports its first failed attempt."""

    def __init__(self, proxy: TcpProxy, threads: list[threading.Thread]) -> None:
        super().__init__(logging.WARNING)
        self.proxy, self.threads, self.fired = proxy, threads, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired and "attempt" in record.getMessage():
            self.fired = True
            thread = threading.Thread(target=self.proxy.set_mode, args=("pass",), daemon=True)
            thread.start()
            self.threads.append(thread)


@pytest.mark.parametrize("mode", ["refuse", "reset"])
def test_connection_errors_are_retried(
    s3_behind_proxy: tuple[str, TcpProxy], recover_after: list[threading.Thread], mode: str
) -> None:
    url, proxy = s3_behind_proxy
    store = _open(url)
    store.put_bytes("raw/before", b"1")  # a pooled connection exists: refuse must cut it too
    proxy.set_mode(mode)
    handler = _HealOnFirstRetry(proxy, recover_after)
    logger = logging.getLogger("depth_store")
    logger.addHandler(handler)
    try:
        store.put_bytes("raw/after", b"2")
    finally:
        logger.removeHandler(handler)
    assert handler.fired
    assert [o.key for o in store.list("raw/")] == ["raw/after", "raw/before"]


@pytest.mark.parametrize("mode", ["blackhole", "refuse", "http_error"])
def test_outage_raises_store_unavailable_not_hang(s3_behind_proxy: tuple[str, TcpProxy], mode: str) -> None:
    url, proxy = s3_behind_proxy
    config = S3Config(
        connect_timeout=0.5,
        read_timeout=0.5,
        max_attempts=100,
        retry_deadline=30,  # generous while the store is up: a loaded machine is no outage
        backoff_base=0.05,
        backoff_cap=0.3,
    )
    store = _open(url, config)
    store.put_bytes("raw/before", b"1")  # leaves a pooled connection for the outage to cut
    store.config = replace(config, retry_deadline=1)
    proxy.set_mode(mode)
    with pytest.raises(StoreUnavailableError, match="raw/after"):
        store.put_bytes("raw/after", b"2")
    with pytest.raises(StoreUnavailableError):
        list(store.list("raw/"))
    proxy.set_mode("pass")
    store.config = config
    assert store.get_bytes("raw/before") == b"1"
    assert store.head("raw/after") is None


def test_attempt_budget_bounds_retries(s3_behind_proxy: tuple[str, TcpProxy]) -> None:
    url, proxy = s3_behind_proxy
    store = _open(url, S3Config(max_attempts=3, retry_deadline=30, backoff_base=0.01, backoff_cap=0.05))
    proxy.set_mode("http_error", status=503)
    with pytest.raises(StoreUnavailableError, match="after 3 attempts"):
        store.put_bytes("raw/x", b"x")
    assert proxy.stats["http_errors"] == 3


def test_missing_bucket_is_a_clear_error(s3_env: str, tmp_path: Path) -> None:
    store = _open("s3://no-such-bucket-here/prefix")
    for op in (
        lambda: store.put_bytes("k", b"x"),
        lambda: list(store.list()),
        lambda: store.head("k"),
        lambda: store.get_bytes("k"),
        lambda: store.get_file("k", tmp_path / "k"),
    ):
        with pytest.raises(StoreError, match="no-such-bucket-here") as err:
            op()
        assert not isinstance(err.value, StoreUnavailableError)


MIB = 1 << 20
MULTIPART: dict[str, Any] = {
    "multipart_threshold": 5 * MIB,
    "multipart_chunksize": 5 * MIB,
    "max_concurrency": 1,
}


def test_multipart_upload_retried_after_throttling(
    s3_behind_proxy: tuple[str, TcpProxy], recover_after: list[threading.Thread], tmp_path: Path
) -> None:
    url, proxy = s3_behind_proxy
    store = _open(url, replace(FAST_RETRIES, **MULTIPART))
    source = tmp_path / "big"
    payload = os.urandom(MIB) * 11
    source.write_bytes(payload)
    proxy.set_mode("http_error", status=503)
    _switch_to_pass_after(proxy, "http_errors", 2, recover_after)
    info = store.put_file("raw/big", source)
    assert proxy.stats["http_errors"] >= 2
    assert info.size == len(payload) and info.etag is not None and info.etag.endswith("-3")
    assert store.get_bytes("raw/big") == payload


def test_multipart_cut_mid_upload_leaves_nothing_visible(
    s3_behind_proxy: tuple[str, TcpProxy], s3_client: Any, tmp_path: Path
) -> None:
    url, proxy = s3_behind_proxy
    config = replace(
        FAST_RETRIES, connect_timeout=0.5, read_timeout=1, retry_deadline=1, backoff_cap=0.2, **MULTIPART
    )
    store = _open(url, config)
    source = tmp_path / "big"
    source.write_bytes(b"\x07" * (40 * MIB))

    def cut_when_upload_started() -> None:
        deadline = time.monotonic() + 30
        while not s3_client.list_multipart_uploads(Bucket=store.bucket).get("Uploads"):
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)  # polling moto: the upload gives no signal
        proxy.set_mode("refuse")

    cutter = threading.Thread(target=cut_when_upload_started, daemon=True)
    cutter.start()
    with pytest.raises(StoreUnavailableError):
        store.put_file("raw/big", source)
    cutter.join(timeout=30)
    proxy.set_mode("pass")
    assert store.head("raw/big") is None
    assert list(store.list()) == []
    store.abort_incomplete_uploads(older_than_seconds=0)
    assert not s3_client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")


@pytest.fixture
def restore_sdk_log_levels() -> Iterator[None]:
    from depth_store.log import AWS_SDK_LOGGERS

    saved = {name: logging.getLogger(name).level for name in AWS_SDK_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_debug_logging_never_shows_credentials(
    s3_behind_proxy: tuple[str, TcpProxy],
    recover_after: list[threading.Thread],
    caplog: pytest.LogCaptureFixture,
    restore_sdk_log_levels: None,
) -> None:
    """Everything a process logs at DEBUG through a retried put, a list and a failure: no credential."""
    from depth_store import quiet_aws_loggers

    url, proxy = s3_behind_proxy
    quiet_aws_loggers()
    with caplog.at_level(logging.DEBUG):
        store = _open(url)
        proxy.set_mode("http_error", status=503)
        _switch_to_pass_after(proxy, "http_errors", 1, recover_after)
        store.put_bytes("raw/a", b"a")
        list(store.list())
        store.scan_location("raw/")  # returns credentials: must not log them
        store.config = replace(FAST_RETRIES, max_attempts=3)
        proxy.set_mode("http_error", status=500)
        with pytest.raises(StoreUnavailableError):
            store.get_bytes("raw/a")
    assert any(r.name == "depth_store" for r in caplog.records)
    assert "testing-secret" not in caplog.text
    assert "testing-key-id" not in caplog.text
