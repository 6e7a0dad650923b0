"""Fixed cost per symbol-day of a day run: ``depth-pipeline run --date D`` over N small symbol-days.

    .venv/bin/python -m benchmarks.bench_day_run [--symbols 1,50] [--events 60] [--parallel 2] [--per-step 25]

Each symbol-day is tiny (``--events`` events in two streams), so nearly all CPU is fixed cost: process
starts, ``import dagster``, the code location, numba cache loads, Dagster's event log. The CPU of the whole
process tree (``RUSAGE_CHILDREN``) of one run per N gives the fixed cost of a run (N=1) and what each
further symbol-day adds: ``(CPU(N) - CPU(1)) / (N - 1)``, of which the merge work itself is measured
in-process (``merge_one`` per symbol, warm) and subtracted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pipeline.helpers import write_day  # noqa: E402  (the tests' synthetic raw writer)
from tests.pipeline.rawgen import DayPlan  # noqa: E402

DATE = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)).isoformat()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_day(n: int, events: int, parallel: int, per_step: int, named: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-day-") as tmp:
        root = Path(tmp)
        from depth_store import open_store

        store = open_store(str(root / "store"))
        symbols = [f"S{i:04d}USDT" for i in range(n)]
        for i, symbol in enumerate(symbols):
            write_day(store, DayPlan(DATE, symbol=symbol, first_id=1_000_000 + i, events=events))
        (root / "home").mkdir()
        env = {
            **os.environ,
            "DAGSTER_HOME": str(root / "home"),
            "DEPTH_STORE_URL": str(root / "store"),
            "DEPTH_STREAMS": "eu-1,ap-1",
            "DEPTH_DERIVED_ASSETS": "0",
            "DEPTH_MAX_PARALLEL_STEPS": str(parallel),
            "DEPTH_SYMBOLS_PER_STEP": str(per_step),
            "DAGSTER_TELEMETRY_DISABLED": "1",
        }
        env.pop("DEPTH_SYMBOLS", None)
        args = ["--symbols", ",".join(symbols)] if named else []
        cpu0, wall0 = _children_cpu(), time.perf_counter()
        done = subprocess.run(
            [str(Path(sys.executable).parent / "depth-pipeline"), "run", "--date", DATE, *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        cpu, wall = _children_cpu() - cpu0, time.perf_counter() - wall0
        if done.returncode != 0:
            raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
        assert done.stdout.count(f"ok   {DATE} ") == n, done.stdout
        # the merge work alone, in this (warm) process
        from depth_core.merge import merge_symbol_day

        work0 = time.process_time()
        for symbol in symbols[: min(n, 10)]:
            merge_symbol_day(store, "spot", symbol, DATE, ["eu-1", "ap-1"])
        work = (time.process_time() - work0) / min(n, 10)
        return {"cpu_s": cpu, "wall_s": wall, "merge_work_cpu_s_per_symbol": work}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", default="1,50")
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--per-step", type=int, default=25)
    parser.add_argument(
        "--named",
        action="store_true",
        help="name the symbols (--symbols): a run of one merge batch at most runs in one process",
    )
    args = parser.parse_args()
    counts = [int(x) for x in args.symbols.split(",")]
    results = {}
    for n in counts:
        results[n] = run_day(n, args.events, args.parallel, args.per_step, args.named)
        r = results[n]
        print(
            f"symbols={n:4d} run CPU {r['cpu_s']:.1f} s wall {r['wall_s']:.1f} s "
            f"(merge work {r['merge_work_cpu_s_per_symbol']:.3f} CPU-s per symbol)",
            flush=True,
        )
    lo, hi = min(counts), max(counts)
    if hi > lo:
        per_symbol = (results[hi]["cpu_s"] - results[lo]["cpu_s"]) / (hi - lo)
        work = results[hi]["merge_work_cpu_s_per_symbol"]
        print(
            f"fixed cost of a run (N={lo}): {results[lo]['cpu_s']:.1f} CPU-s; each further symbol-day adds "
            f"{per_symbol:.2f} CPU-s of which merge work {work:.2f}: overhead {per_symbol - work:.2f} CPU-s; "
            f"amortised at N={hi}: {(results[hi]['cpu_s'] - hi * work) / hi:.2f} CPU-s per symbol-day",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
