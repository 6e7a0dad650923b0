"""Validation CPU, system time and page faults of a generated day at a given batch size.

``python -m benchmarks.validate_batches STORE DATE MIB``: ``validate_stream_day`` of both streams of a
``benchmarks.dayset`` store with ``batch_bytes = MIB`` MiB of compressed input, in this (fresh) process;
prints CPU, system time, minor page faults and the largest batch's text. Like ``bench_merge ours`` it rewrites
``validated/`` (and clears ``merged/``, ``state/``) in STORE: use a copy of a generated day. Compare sizes in
alternating fresh processes; ``strace -f -e trace=mmap`` on it shows which blocks are mapped per batch
(docs/merge.md §6).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from benchmarks.bench_merge import STREAMS, clean_outputs


def main() -> None:
    from depth_core.validate import validate_stream_day
    from depth_store import open_store

    root, date, mib = sys.argv[1], sys.argv[2], float(sys.argv[3])
    clean_outputs(Path(root))
    store = open_store(root)
    t0 = time.perf_counter()
    text = 0
    for stream in STREAMS:
        result = validate_stream_day(store, "spot", stream, date, batch_bytes=int(mib * 2**20))
        text = max(text, int(result.stats.get("max_batch_text_bytes", 0)))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "batch_mib": mib,
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "system_s": round(ru.ru_stime, 2),
        "wall_s": round(time.perf_counter() - t0, 1),
        "minor_faults": ru.ru_minflt,
        "max_batch_text_mib": round(text / 2**20, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
