"""Merge CPU of one symbol-day of a ``benchmarks.dayset`` store: validate both streams (untimed), then
``merge_symbol_day`` twice (the second re-merges over the published version: the publish path with a
previous version to retire), each with its CPU and wall seconds.

``python -m benchmarks.bench_merge_cpu STORE DATE WORKDIR`` — the raw objects of STORE are copied into
WORKDIR (replaced), so the dataset cache stays untouched.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path

STREAMS = ("bench-a", "bench-b")


def main() -> None:
    src, date, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src / "raw", work / "raw")
    from depth_core.merge import merge_symbol_day
    from depth_core.validate import validate_symbol_day
    from depth_store import open_store

    store = open_store(str(work))
    for stream in STREAMS:
        validate_symbol_day(store, "spot", stream, "BTCUSDT", date)
    out: dict[str, object] = {}
    for run in (1, 2):
        c0, w0 = time.process_time(), time.perf_counter()
        report = merge_symbol_day(store, "spot", "BTCUSDT", date, list(STREAMS))
        out[f"merge{run}_cpu_s"] = round(time.process_time() - c0, 2)
        out[f"merge{run}_wall_s"] = round(time.perf_counter() - w0, 2)
        out[f"published{run}"] = report.published
    out["rows"] = report.rows
    out["maxrss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
