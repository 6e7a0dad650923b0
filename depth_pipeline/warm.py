"""``python -m depth_pipeline.warm``: compile every numba kernel of the nightly work once, into its cache.

The core's kernels are ``@numba.njit(cache=True)``: compiled on first use (about 19 CPU-s per process with a
cold cache) and then loaded from ``__pycache__`` (or ``NUMBA_CACHE_DIR``). The pipeline image runs this at
build (deploy/k8s/Dockerfile), so no step pod compiles anything. It validates, merges and derives a small
synthetic day of two streams in a throw-away local store — the same code and dtypes as a real day.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sys
import tempfile
import time

from depth_core.raw_format import LineKind, RawObjectKey, encode_line
from depth_store import open_store

DATE = "2026-01-02"
SYMBOL = "BTCUSDT"
STREAMS = ("eu-1", "ap-1")


def _day_lines(first_id: int = 1_000, events: int = 200) -> list[tuple[int, LineKind, bytes]]:
    start_ms = int(dt.datetime.fromisoformat(DATE).replace(tzinfo=dt.UTC).timestamp() * 1000) + 60_000
    snapshot = {
        "lastUpdateId": first_id - 1,
        "bids": [[f"{100 + k:.2f}", "1.000"] for k in range(5)],
        "asks": [[f"{110 + k:.2f}", "1.000"] for k in range(5)],
    }
    lines = [((start_ms - 50) * 10**6, LineKind.SNAPSHOT, json.dumps(snapshot).encode())]
    for i in range(events):
        e_ms = start_ms + 100 * i
        data = {
            "e": "depthUpdate",
            "E": e_ms,
            "s": SYMBOL,
            "U": first_id + i,
            "u": first_id + i,
            "b": [[f"{100 + i % 5:.2f}", f"{1 + i % 3}.000"]],
            "a": [[f"{110 + i % 5:.2f}", "2.000"]],
        }
        frame = {"stream": f"{SYMBOL.lower()}@depth@100ms", "data": data}
        lines.append(((e_ms + 20) * 10**6, LineKind.DEPTH, json.dumps(frame, separators=(",", ":")).encode()))
    return lines


def warm() -> float:
    """Run the day's work once on synthetic data; returns the seconds it took."""
    from depth_core.merge import merge_symbol_day
    from depth_core.quality import load_quality_input, write_quality_report
    from depth_core.topbook import write_top_day
    from depth_pipeline.assets.streams import validate_stream_symbols

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="depth-warm-") as root:
        store = open_store(root)
        lines = _day_lines()
        for stream in STREAMS:
            key = RawObjectKey.for_segment("spot", stream, SYMBOL, lines[0][0], "warm", 0)
            store.put_bytes(key.key, gzip.compress(b"".join(encode_line(ns, k, t) for ns, k, t in lines)))
            validate_stream_symbols(store, "spot", stream, DATE, [SYMBOL], lambda _s: True)
        report = merge_symbol_day(store, "spot", SYMBOL, DATE, list(STREAMS))
        if not report.events:
            raise RuntimeError(f"warm-up merge produced no events: {report.problems}")
        write_top_day(store, "spot", SYMBOL, DATE)
        write_quality_report(store, load_quality_input(store, "spot", SYMBOL, DATE, list(STREAMS)))
    return time.monotonic() - started


def main() -> int:
    seconds = warm()
    print(f"numba kernels compiled and cached (warm-up took {seconds:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
