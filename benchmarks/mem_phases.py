"""Where the peak RSS of validate + merge happens: ``VmRSS`` sampled every 10 ms under phase labels.

    python -m benchmarks.mem_phases STORE DATE vm   # validate both streams, then merge (``bench_merge ours``)
    python -m benchmarks.mem_phases STORE DATE m    # merge only (the store already validated)

Prints the highest RSS seen under each label (a phase, or ``fileNN`` for the merge's NN-th output file) and
the label of the overall peak. Labels come from wrapping the pipeline's functions (private names of
``depth_core.merge``/``validate``/``checks``; a name that no longer exists is skipped). Like ``bench_merge
ours`` it writes ``validated/``, ``merged/`` and ``state/`` into STORE: use a copy of a generated day.
"""

from __future__ import annotations

import functools
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_merge import STREAMS, SYMBOL, clean_outputs


class _Sampler:
    def __init__(self) -> None:
        self.labels = ["start"]
        self.peak: dict[str, int] = {}
        self.stopped = threading.Event()

    def sample(self) -> None:
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        label = self.labels[-1]
        self.peak[label] = max(self.peak.get(label, 0), rss)

    def run(self) -> None:
        while not self.stopped.wait(0.01):
            self.sample()

    def labelled(self, label: Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.labels.append(label())
            try:
                return fn(*args, **kwargs)
            finally:
                self.sample()
                self.labels.pop()

        return wrapper


def main(store_root: str, date: str, what: str) -> None:
    import depth_core.checks as checks
    import depth_core.merge as merge
    import depth_core.validate as validate
    from depth_store import open_store

    sampler = _Sampler()
    files = iter(range(1, 1 << 30))
    wrap: list[tuple[Any, str, Callable[..., str]]] = [
        *((merge, n, lambda n=n: n) for n in ("_load_stream", "plan_merge", "release_free_memory")),
        (merge, "_build_file", lambda: f"file{next(files):02d}"),
        (checks.MergeChecker, "set_inputs", lambda: "set_inputs"),
        (validate._SymbolDay, "finish", lambda: "validate finish"),
    ]
    for owner, name, label in wrap:
        if hasattr(owner, name):
            setattr(owner, name, sampler.labelled(label, getattr(owner, name)))
    store = open_store(store_root)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    t0 = time.process_time()
    if "v" in what:
        clean_outputs(Path(store_root))
        for stream in STREAMS:
            sampler.labelled(lambda s=stream: f"validate {s}", validate.validate_stream_day)(
                store, "spot", stream, date
            )
    if "m" in what:
        sampler.labelled(lambda: "merge", merge.merge_symbol_day)(store, "spot", SYMBOL, date, list(STREAMS))
    sampler.stopped.set()
    thread.join()
    for name, kib in sampler.peak.items():
        print(f"{name:24s} {kib / 1024:8.0f} MiB")
    top = max(sampler.peak, key=sampler.peak.__getitem__)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak under '{top}'; ru_maxrss {maxrss:.0f} MiB; CPU {time.process_time() - t0:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) != 4 or not set(sys.argv[3]) <= {"v", "m"}:
        sys.exit(__doc__)
    main(*sys.argv[1:])
