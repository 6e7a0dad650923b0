"""gzip codecs on raw-object text: what compression costs the collector per message, and gunzip the pipeline.

Child: ``python -m benchmarks.bench_codec STORE``: compresses ~16 MB of the generated day's raw lines
with zlib (levels 1, 3 = the collector's default level, 6) and, when installed, ISA-L (``isal.igzip``,
a project dependency), and reports MB/s, ratio and µs per 1.5 KB frame. Every output is standard gzip.
"""

from __future__ import annotations

import functools
import gzip
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import emit

FRAME_BYTES = 1500


def _timed(fn: Callable[[], bytes], repeat: int = 3) -> tuple[float, bytes]:
    best = float("inf")
    out = b""
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def measure(store: str) -> dict[str, Any]:
    base = Path(store) / "raw" / "market=spot" / "stream=bench-a"
    # the day's raw objects, layout v2 (date=*/) or v1 (symbol=*/date=*/)
    files = sorted([*base.glob("date=*/*.ndjson.gz"), *base.glob("symbol=*/date=*/*.ndjson.gz")])[:100]
    if not files:
        raise SystemExit(f"no raw objects of bench-a under {store}")
    data = b"".join(gzip.decompress(f.read_bytes()) for f in files)
    codecs: list[tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]] = [
        (f"zlib level {lvl}", functools.partial(gzip.compress, compresslevel=lvl, mtime=0), gzip.decompress)
        for lvl in (1, 3, 6)
    ]
    try:
        from isal import igzip

        codecs += [
            (
                f"ISA-L (`isal.igzip`) level {lvl}",
                functools.partial(igzip.compress, compresslevel=lvl),
                igzip.decompress,
            )
            for lvl in (1, 2)
        ]
    except ImportError:
        pass
    rows = []
    for name, comp, decomp in codecs:
        c_s, packed = _timed(functools.partial(comp, data))
        d_s, unpacked = _timed(functools.partial(decomp, packed))
        assert unpacked == data and gzip.decompress(packed) == data  # standard gzip, readable by zlib
        rows.append(
            {
                "codec": name,
                "compress_mb_s": len(data) / c_s / 1e6,
                "ratio": len(data) / len(packed),
                "us_per_frame": FRAME_BYTES / (len(data) / c_s) * 1e6,
                "decompress_mb_s": len(data) / d_s / 1e6,
            }
        )
    return {"input_mb": len(data) / 1e6, "codecs": rows}


def main() -> None:
    emit(measure(sys.argv[1]))


if __name__ == "__main__":
    main()
