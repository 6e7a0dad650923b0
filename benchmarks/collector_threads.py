"""Where the collector's CPU goes, per thread: a profile to read beside ``bench_collector``'s totals.

``python -m benchmarks.collector_threads [--frames N] [--collector PATH] [-- collector flags]`` starts
``benchmarks.firehose`` and the collector exactly as ``make bench`` does, then samples
``/proc/<pid>/task/*/stat`` from the 200th frame until the process has exited after SIGTERM (so the
spool, gzip and upload work the frames caused is counted, as in the benchmark) and prints each
thread's CPU µs per message, named by ``py-spy dump`` when py-spy is installed (the last ~20 ms of a
thread before it ends are not seen: the benchmark's wait4 total is the exact figure). ``--collector`` runs
another build of ``depth-collector`` (e.g. an older commit's) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from benchmarks import bench_collector as bc
from benchmarks.common import WORK_DIR

_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of every live thread of ``pid``, by thread id."""
    out: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # the process has just exited
        return out
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[task.name] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def thread_names(pid: int) -> dict[str, str]:
    """Python thread names by thread id (``py-spy dump``), or nothing when py-spy is not installed."""
    exe = shutil.which("py-spy") or str(bc.VENV_BIN / "py-spy")
    if not Path(exe).exists():
        return {}
    dump = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    return {str(int(m[1])): m[2] for m in re.finditer(r"Thread (\d+) \([^)]*\): \"([^\"]+)\"", dump)}


def run(frames: int, collector: Path | None, extra: list[str]) -> dict[str, float]:
    """Per-thread CPU µs per message of one run (and ``"all"``: their sum)."""
    if collector is not None:
        bc._collector_bin = lambda: collector
    work = WORK_DIR / "collector-threads"
    port = bc.free_port()
    with bc.sender(frames) as s:
        proc = bc._start_collector(
            s.url, s.http_url, str(work / "store"), work, "BTCUSDT", metrics_port=port, extra=extra
        )
        while bc._metrics_messages(port) < 200:
            if proc.poll() is not None:
                raise SystemExit(
                    f"collector exited {proc.returncode}: {(work / 'stderr.log').read_text()[-500:]}"
                )
            time.sleep(0.02)
        names = thread_names(proc.pid)
        m0 = bc._metrics_messages(port)
        base = thread_cpu(proc.pid)
        last = dict(base)
        m = m0
        while m < frames - 1:
            time.sleep(0.2)
            m = bc._metrics_messages(port)
            last.update(thread_cpu(proc.pid))
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None:  # threads end one by one: keep each one's last reading
            last.update(thread_cpu(proc.pid))
            time.sleep(0.02)
    msgs = m - m0
    per = {names.get(tid, tid): (cpu - base.get(tid, 0.0)) / msgs * 1e6 for tid, cpu in last.items()}
    per = {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0}
    per["all"] = sum(per.values())
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--collector", type=Path, default=None, help="another depth-collector executable")
    ap.add_argument("extra", nargs="*", help="more collector flags (after --)")
    args = ap.parse_args()
    load1 = os.getloadavg()[0]
    per = run(args.frames, args.collector, args.extra)
    print(f"load average (1 min) at start: {load1:.1f}")
    for name, us in per.items():
        print(f"  {name:20s} {us:6.2f} µs/msg")


if __name__ == "__main__":
    main()
