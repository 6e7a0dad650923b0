"""Collector throughput and CPU per message vs a bare websockets loop and vs cryptofeed; real-rate cost; lag.

Every receiver takes the same real-size frames (~1.5 KB, 40 levels) from the same local sender
(:mod:`benchmarks.firehose`, a separate process). CPU per message is measured between the first and
the last frame of a window (``getrusage`` in the child for the bare loop and cryptofeed; ``/proc`` of
the collector process for ours, which includes its spool, gzip and upload threads). cryptofeed only
accepts ``wss://`` addresses, so it is measured over TLS beside a bare loop over TLS.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PYTHON,
    REPO_ROOT,
    WORK_DIR,
    NotAvailableError,
    proc_cpu_seconds,
    proc_peak_rss_mib,
    proc_rss_mib,
    run_child,
)

VENV_BIN = Path(PYTHON).parent
_MSG_RE = re.compile(r'^depth_collector_messages_total\{[^}]*kind="depth"[^}]*\}\s+([0-9.e+]+)', re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sender:
    proc: subprocess.Popen[bytes]
    port: int
    url: str
    http_url: str
    cert: str | None


@contextlib.contextmanager
def sender(
    count: int, *, symbols: str = "BTCUSDT", rate: float | None = None, tls: bool = False
) -> Iterator[Sender]:
    """The local firehose in its own process (so it has its own core and GIL)."""
    args = [PYTHON, "-m", "benchmarks.firehose", "--count", str(count), "--symbols", symbols]
    if rate:
        args += ["--rate", str(rate)]
    if tls:
        args += ["--tls-dir", str(WORK_DIR / "tls")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield Sender(proc, int(info["port"]), info["url"], info["http_url"], info.get("cert"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bare_loop(count: int, *, tls: bool = False) -> dict[str, Any]:
    load1 = os.getloadavg()[0]
    with sender(count, tls=tls) as s:
        env = {"SSL_CERT_FILE": str(s.cert)} if s.cert else None
        res = run_child(
            ["-m", "benchmarks.bare_loop", f"{s.url}/stream?streams=btcusdt@depth@100ms", str(count)],
            timeout=300,
            env=env,
        )
    return {**res.report, "load1": load1}


def cryptofeed(count: int) -> dict[str, Any]:
    try:
        import cryptofeed as _cf  # noqa: F401
    except ImportError as exc:
        raise NotAvailableError(f"cryptofeed not installed (pip install '.[bench]'): {exc}") from exc
    with sender(count + 10_000, tls=True) as s:
        env = {"SSL_CERT_FILE": str(s.cert), "REQUESTS_CA_BUNDLE": str(s.cert)}
        res = run_child(
            ["-m", "benchmarks.cryptofeed_feed", s.url, s.http_url, str(count)], timeout=600, env=env
        )
    return res.report


def _metrics_messages(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return -1.0
    return sum(float(m) for m in _MSG_RE.findall(text))


def _collector_bin() -> Path:
    exe = VENV_BIN / "depth-collector"
    if not exe.exists():
        raise NotAvailableError("depth-collector console script not installed")
    return exe


def _start_collector(
    ws_url: str,
    rest_url: str,
    store: str,
    work: Path,
    symbols: str,
    *,
    metrics_port: int,
    flush_seconds: float = 10.0,
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args = [
        str(_collector_bin()),
        "--collector-id",
        "bench",
        "--symbols",
        symbols,
        "--store",
        store,
        "--ws-url",
        ws_url,
        "--rest-url",
        rest_url,
        "--spool-dir",
        str(work / "spool"),
        "--metrics-port",
        str(metrics_port),
        "--flush-seconds",
        str(flush_seconds),
        "--shutdown-grace",
        "30",
        "--log-format",
        "json",
        *(extra or []),
    ]
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        args,
        stdout=open(work / "stdout.log", "wb"),
        stderr=open(work / "stderr.log", "wb"),
        cwd=work,
        env=full_env,
    )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise NotAvailableError("collector did not stop within 60 s of SIGTERM") from None


def _stop_with_rusage(
    proc: subprocess.Popen[bytes], timeout: float = 60, usage: dict[str, float] | None = None
) -> tuple[int, float]:
    """SIGTERM, wait, and return (exit code, the process's total CPU seconds from wait4's rusage);
    ``usage`` gets its user and system seconds and minor page faults (whole process life)."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            if usage is not None:
                usage.update(user_s=ru.ru_utime, sys_s=ru.ru_stime, minor_faults=ru.ru_minflt)
            return proc.returncode, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise NotAvailableError("collector did not stop within 60 s of SIGTERM")
        time.sleep(0.05)


def count_stored_depth_lines(store_root: Path) -> int:
    """Depth (kind ``D``) lines in every raw object of the store, either layout (the kind is the second
    space-separated field of a line in both: v1 ``<ns> D <text>``, v2 ``<ns> D <SYMBOL> <text>``)."""
    n = 0
    for f in store_root.glob("raw/**/*.ndjson.gz"):
        n += sum(
            1 for ln in gzip.decompress(f.read_bytes()).split(b"\n") if ln[:40].split(b" ", 2)[1:2] == [b"D"]
        )
    return n


def _stopped_report(work: Path) -> dict[str, Any]:
    """The collector's ``stopped`` log line (its shutdown report), or nothing."""
    try:
        text = (work / "stderr.log").read_text(errors="replace")
    except OSError:
        return {}
    for line in reversed(text.splitlines()):
        if '"event":"stopped"' in line:
            with contextlib.suppress(ValueError):
                return dict(json.loads(line))
    return {}


def ours(
    count: int, *, sim_firehose_rate: int | None = None, extra: list[str] | None = None
) -> dict[str, Any]:
    """Our collector taking ``count`` frames; rate and CPU/message over the steady window, then zero-loss
    check."""
    work = WORK_DIR / "collector-throughput"
    store = work / "store"
    port = free_port()
    load1 = os.getloadavg()[0]
    ctx: Any = sender(count) if sim_firehose_rate is None else sim_sender(sim_firehose_rate)
    with ctx as s:
        proc = _start_collector(
            s.url, s.http_url, str(store), work, "BTCUSDT", metrics_port=port, extra=extra
        )
        try:
            deadline = time.monotonic() + 60
            first = -1.0
            while time.monotonic() < deadline:
                first = _metrics_messages(port)
                if first >= 200:
                    break
                if proc.poll() is not None:
                    raise NotAvailableError(
                        f"collector exited {proc.returncode}: " + (work / "stderr.log").read_text()[-500:]
                    )
                time.sleep(0.02)
            if first < 200:
                raise NotAvailableError("collector received no frames within 60 s")
            t0, c0 = time.perf_counter(), proc_cpu_seconds(proc.pid)
            target = count if sim_firehose_rate is None else first + 3 * sim_firehose_rate
            n = first
            deadline = time.monotonic() + 300
            while n < target - 1 and time.monotonic() < deadline:
                time.sleep(0.2)  # each scrape costs the collector a little CPU: keep them few
                n = _metrics_messages(port)
            t1, c1 = time.perf_counter(), proc_cpu_seconds(proc.pid)
            rss = proc_rss_mib(proc.pid)
            peak = proc_peak_rss_mib(proc.pid)
        finally:
            usage: dict[str, float] = {}
            if proc.poll() is None:
                rc, c_end = _stop_with_rusage(proc, usage=usage)
            else:
                rc, c_end = proc.returncode, float("nan")
    window = n - first
    report = _stopped_report(work)
    out: dict[str, Any] = {
        "messages": window,
        "msgs_per_s": window / (t1 - t0),
        # everything the messages cost: receive window plus the spool->gzip->store work that follows it
        "cpu_us_per_msg": (c_end - c0) / window * 1e6,
        "cpu_us_per_msg_receive_window": (c1 - c0) / window * 1e6,
        "rss_mib": rss,
        "peak_rss_mib": peak,
        "exit_code": rc,
        "load1": load1,
        # whole process life (start-up included): where the CPU went, and the page faults of its memory
        **usage,
        # flow control: how often and how long socket reading waited for the spool writer
        "read_pauses": report.get("read_pauses"),
        "read_paused_s": report.get("read_paused_s"),
    }
    if sim_firehose_rate is None:
        stored = count_stored_depth_lines(store)
        out["sent"] = count
        out["stored"] = stored
        out["lost"] = count - stored
    return out


@contextlib.contextmanager
def sim_sender(rate: int, symbols: str = "BTCUSDT") -> Iterator[Sender]:
    """exchange_sim's own firehose mode (``depth-exchange-sim --firehose-rate``)."""
    exe = VENV_BIN / "depth-exchange-sim"
    if not exe.exists():
        raise NotAvailableError("depth-exchange-sim not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(exe),
            "--port",
            str(port),
            "--symbols",
            symbols,
            "--firehose-rate",
            str(rate),
            "--weight-limit",
            "100000",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "listening" not in line:
            raise NotAvailableError(f"simulator did not start: {line!r}")
        yield Sender(proc, port, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", None)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def real_rate(seconds: float = 60.0) -> dict[str, Any]:
    """Collector at BTCUSDT's real rate (10 msg/s) on 3 symbols: CPU % of one core and RSS."""
    work = WORK_DIR / "collector-realrate"
    port = free_port()
    symbols = "BTCUSDT,ETHUSDT,BNBUSDT"
    with sender(int(seconds * 10) + 1000, symbols=symbols, rate=10) as s:
        proc = _start_collector(s.url, s.http_url, str(work / "store"), work, symbols, metrics_port=port)
        try:
            deadline = time.monotonic() + 60
            while _metrics_messages(port) < 30 and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise NotAvailableError(f"collector exited {proc.returncode}")
                time.sleep(0.1)
            time.sleep(2)  # past start-up (snapshots, imports)
            m0, t0, c0 = _metrics_messages(port), time.perf_counter(), proc_cpu_seconds(proc.pid)
            time.sleep(seconds)
            m1, t1, c1 = _metrics_messages(port), time.perf_counter(), proc_cpu_seconds(proc.pid)
            rss = proc_rss_mib(proc.pid)
        finally:
            _stop(proc)
    return {
        "seconds": t1 - t0,
        "messages": m1 - m0,
        "msgs_per_s": (m1 - m0) / (t1 - t0),
        "cpu_percent": (c1 - c0) / (t1 - t0) * 100,
        "rss_mib": rss,
    }


def lag_vs_moto(seconds: float = 30.0, flush_seconds: float = 5.0) -> dict[str, Any]:
    """Receive-to-object-in-store lag against moto's S3 server: for every stored line, first-seen -
    receive."""
    try:
        import boto3
    except ImportError as exc:
        raise NotAvailableError(f"boto3 missing: {exc}") from exc
    moto = VENV_BIN / "moto_server"
    if not moto.exists():
        raise NotAvailableError("moto_server not installed")
    mport = free_port()
    mproc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(mport)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    work = WORK_DIR / "collector-lag"
    endpoint = f"http://127.0.0.1:{mport}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                s3.create_bucket(Bucket="bench")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        symbols = "BTCUSDT,ETHUSDT,BNBUSDT"
        seen: dict[str, float] = {}
        with sender(int(seconds * 10) + 2000, symbols=symbols, rate=10) as s:
            proc = _start_collector(
                s.url,
                s.http_url,
                "s3://bench/data",
                work,
                symbols,
                metrics_port=free_port(),
                flush_seconds=flush_seconds,
                env=env,
            )
            try:
                end = time.monotonic() + seconds
                while time.monotonic() < end + flush_seconds + 5:
                    now = time.time()
                    for page in s3.get_paginator("list_objects_v2").paginate(
                        Bucket="bench", Prefix="data/raw/"
                    ):
                        for obj in page.get("Contents", []):
                            seen.setdefault(obj["Key"], now)
                    if time.monotonic() > end and proc.poll() is None:
                        # stop receiving; what was received still has to arrive
                        proc.send_signal(signal.SIGTERM)
                    time.sleep(0.1)
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        lags: list[float] = []
        for key, t_seen in seen.items():
            body = gzip.decompress(s3.get_object(Bucket="bench", Key=key)["Body"].read())
            for ln in body.split(b"\n"):
                if ln:
                    lags.append(t_seen - int(ln.split(b" ", 1)[0]) / 1e9)
    finally:
        mproc.terminate()
        mproc.wait(timeout=10)
    if not lags:
        raise NotAvailableError("no objects reached the store")
    lags.sort()
    return {
        "objects": len(seen),
        "lines": len(lags),
        "flush_seconds": flush_seconds,
        "p50_s": lags[len(lags) // 2],
        "p99_s": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
        "max_s": lags[-1],
    }
