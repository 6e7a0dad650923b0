"""Before/after of the collector's CPU per message, interleaved: the fair comparison on a shared machine.

``python -m benchmarks.collector_ab --before /path/to/other/worktree [--rounds 5] [--frames 200000]``
runs, in each round, :func:`benchmarks.bench_collector.ours` with the other checkout's own Python and
code (its ``.venv``: e.g. ``git worktree add /tmp/base <commit> && make -C /tmp/base install``), then with
this checkout's, then the bare websockets loop, each in a fresh process, and prints one line per run and
the medians. CPU per message swings from run to run with what else the cores are doing, so builds are
only compared within the same rounds (wrap the whole command in the team's benchmark lock).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, REPO_ROOT

_CHILD = """
import json, os, sys
from benchmarks import bench_collector as b
what, n = sys.argv[1], int(sys.argv[2])
r = b.bare_loop(n) if what == "bare" else b.ours(n)
print(json.dumps({"what": what, **r}))
"""


def one(root: Path, python: str, what: str, frames: int) -> dict[str, Any]:
    """One measurement in a fresh process of the checkout at ``root``."""
    out = subprocess.run(
        [python, "-c", _CHILD, what, str(frames)], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="another checkout with its own .venv")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=200_000)
    args = ap.parse_args()
    before = args.before.resolve()
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": [], "bare": []}
    for r in range(1, args.rounds + 1):
        for name, root, python, what in (
            ("before", before, str(before / ".venv" / "bin" / "python"), "ours"),
            ("after", REPO_ROOT, PYTHON, "ours"),
            ("bare", REPO_ROOT, PYTHON, "bare"),
        ):
            res = one(root, python, what, args.frames)
            runs[name].append(res)
            print(
                f"round {r} {name:6s} {res['cpu_us_per_msg']:6.2f} µs/msg  load {res.get('load1', 0):.1f}  "
                f"RSS {res.get('rss_mib', 0):4.0f} MiB  lost {res.get('lost', '-')}",
                flush=True,
            )
    for name, rs in runs.items():
        med = statistics.median(x["cpu_us_per_msg"] for x in rs)
        print(f"median {name:6s} {med:6.2f} µs/msg = {1e6 / med / 1e3:.0f} k msgs per CPU-second")


if __name__ == "__main__":
    main()
