"""Shared helpers: machine description, child processes with CPU/peak-RSS accounting, medians."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "artifacts"
CACHE_DIR = ARTIFACTS / "bench-cache"
WORK_DIR = ARTIFACTS / "bench-work"
PYTHON = sys.executable


class NotAvailableError(Exception):
    """A benchmarked part has not landed (or cannot run here); the section says why instead of failing."""


def machine_info() -> dict[str, str]:
    """CPU model, cores, RAM, OS and Python: printed at the top of BENCHMARKS.md."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def package_versions(names: Sequence[str]) -> dict[str, str]:
    from importlib import metadata

    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclasses.dataclass
class ChildResult:
    """What a child process reported (its last stdout line, JSON) plus what the OS measured."""

    wall_s: float
    cpu_s: float  # user + system of the child and its own children
    peak_rss_mib: float  # the child's peak resident set (its VmHWM, see :func:`self_usage`)
    report: dict[str, Any]


def run_child(args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> ChildResult:
    """Run ``python args...`` in a fresh process, so each measurement starts from a cold, empty heap.

    The child prints one JSON object as its last stdout line (see :func:`emit`), carrying its own
    ``getrusage`` CPU time and peak RSS (its own ``VmHWM``, and ``ru_maxrss`` of anything it spawned): exact
    peaks, not sampled ones.
    """
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONHASHSEED", "0")
    if env:
        full_env.update(env)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=REPO_ROOT
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise NotAvailableError(f"timed out after {timeout:.0f} s: {' '.join(args)}") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-12:]
        raise NotAvailableError(f"exit {proc.returncode}: " + " | ".join(tail))
    lines = [ln for ln in out.decode().strip().splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    return ChildResult(wall, float(report.get("cpu_s", 0.0)), float(report.get("peak_rss_mib", 0.0)), report)


def self_usage() -> dict[str, float]:
    """CPU seconds and peak RSS of this process (for children to put in their JSON report).

    The peak is ``VmHWM``, the high-water mark of this process's own memory since it started: Linux's
    ``ru_maxrss`` also counts the RSS the parent had when it forked this process (kept across ``exec``), so
    a child of a 1.7 GiB benchmark runner reported 1.7 GiB whatever it used itself."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rc = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = proc_peak_rss_mib(os.getpid()) if Path("/proc/self/status").exists() else ru.ru_maxrss / 1024.0
    return {
        "cpu_s": ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime,
        "peak_rss_mib": max(own, rc.ru_maxrss / 1024.0 if rc.ru_maxrss else 0.0),
    }


def emit(report: dict[str, Any]) -> None:
    """A child's final line: its report plus its own CPU and peak RSS."""
    report = {**report, **self_usage()}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def repeat(fn: Callable[[], float], runs: int) -> list[float]:
    return [fn() for _ in range(runs)]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0
