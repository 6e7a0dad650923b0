"""The gated cleanup of a full 400-symbol layout-2 day, at the scale no capture reaches: CPU, peak RSS,
output.

A local store gets ``--objects`` tiny v2 raw objects per stream (a full day at a 10 s flush: 8,640), the
compact stream-day report of each stream (every object holds every symbol), and one coverage manifest per
symbol listing every object of both streams (as ``depth_core.merge`` writes them: a symbol-day consumed
every v2 object of the day). ``cleanup_day`` then runs with each gate reading and parsing its symbol's
manifest (what ``merge_gate`` does after its instance checks; the instance part is measured by
``make universe-pipeline``). Reported: CPU and wall of ``cleanup_day``, this process's peak RSS, and the
size of the cleanup step's output (``encode_results``).

``python -m benchmarks.bench_universe_cleanup_day [--objects 8640] [--symbols 400]`` (≈ 3 min, ≈ 1.3 GB
of manifests written to a temporary directory, removed after).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

DATE = "2026-11-24"
STREAMS = ("uni-a", "uni-b")


def run(objects: int, n_symbols: int) -> dict[str, Any]:
    from depth_core.layout import merged_manifest_key
    from depth_core.raw_format import RawObjectKey
    from depth_core.validated_layout import COMPACT_SYMBOL_DATES_VERSION, stream_day_report_key
    from depth_pipeline.cleanup import (
        ManifestObject,
        MergeGate,
        cleanup_day,
        encode_results,
        parse_manifest_objects,
    )
    from depth_store import ObjectInfo, open_store

    root = tempfile.mkdtemp(prefix="bench-cleanup-day-")
    try:
        store = open_store(root)
        symbols = [f"U{i:03d}USDT" for i in range(n_symbols)]
        base_ns = 1795996800 * 10**9  # DATE 00:00 UTC
        infos: dict[str, list[ObjectInfo]] = {s: [] for s in STREAMS}
        for stream in STREAMS:
            for i in range(objects):
                key = RawObjectKey.for_stream_segment("spot", stream, base_ns + i * 10**10, "bench", i).key
                infos[stream].append(store.put_bytes(key, b"x"))
            entries: list[dict[str, Any]] = [
                {
                    "key": o.key,
                    "size": o.size,
                    "etag": o.etag,
                    "layout": 2,
                    "symbols": symbols,
                    "event_dates": [DATE],
                    "symbol_event_dates": {},
                    "carried": False,
                }
                for o in infos[stream]
            ]
            report = {"objects": entries, "version": COMPACT_SYMBOL_DATES_VERSION}
            store.put_bytes(stream_day_report_key("spot", stream, DATE), json.dumps(report).encode())
        raw = [
            {"stream": s, "key": o.key, "size": o.size, "etag": o.etag, "event_dates": [DATE]}
            for s in STREAMS
            for o in infos[s]
        ]
        for symbol in symbols:
            store.put_bytes(
                merged_manifest_key("spot", symbol, DATE), json.dumps({"raw_objects": raw}).encode()
            )
        shared: dict[ManifestObject, ManifestObject] = {}

        def gate(symbol: str, day: str) -> MergeGate:
            manifest = json.loads(store.get_bytes(merged_manifest_key("spot", symbol, day)))
            return MergeGate(day, symbol, True, "ok", "bench", None, parse_manifest_objects(manifest, shared))

        c0, w0 = time.process_time(), time.perf_counter()
        out = cleanup_day(None, store, "spot", list(STREAMS), DATE, symbols, gate_of=gate)  # type: ignore[arg-type]
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        output = json.dumps(encode_results(out.results))
        return {
            "objects_per_stream": objects,
            "symbols": n_symbols,
            "deleted": len(out.deleted),
            "cpu_s": round(cpu, 1),
            "wall_s": round(wall, 1),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "step_output_mb": round(len(output) / 1e6, 2),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--objects", type=int, default=8640, help="raw objects per stream (full day at 10 s: 8640)"
    )
    ap.add_argument("--symbols", type=int, default=400)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.objects, args.symbols)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
