"""Validation of a many-symbol v2 stream-day in one pass (``depth_core.validate.validate_stream_day``).

``python -m benchmarks.bench_stream_day gen STORE [--symbols 400] [--events 2400] [--mu 2.0]`` writes one
stream (``bench-v2``) of v2 raw objects: every symbol's own synthetic book (:mod:`benchmarks.daygen`), 10
events/s, one object per 10 s of receive time holding every symbol (as the collector writes v2), gzip level
3, a REST snapshot per symbol at its start.

``python -m benchmarks.bench_stream_day run STORE [--symbols-filter N] [--buffer-mib M]`` validates that
stream-day in this process (run it in a fresh one) and prints one JSON line: objects read, requests by kind
(the request-counting store), wall, CPU (user+sys of the process, threads included), peak RSS, events and
level rows written, the batch/buffer figures of the stream-day report.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import json
import resource
import time

import numpy as np

from benchmarks import daygen

STREAM = "bench-v2"
DATE = "2026-11-20"
OBJECT_SECONDS = 10


def _symbols(n: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(n)]


def generate(store_url: str, n_symbols: int, n_events: int, mu: float, sigma: float) -> dict[str, int]:
    from depth_core.raw_format import RawObjectKey
    from depth_store import open_store

    store = open_store(store_url)
    day_ms = int(np.datetime64(DATE, "ms").astype(np.int64))
    start_ms = day_ms + 3_600_000  # 01:00 UTC
    rng = np.random.default_rng(7)
    recv_all: list[np.ndarray] = []
    lines_all: list[list[bytes]] = []
    level_rows = 0
    for i, sym in enumerate(_symbols(n_symbols)):
        (
            ev_first,
            ev_last,
            ev_off,
            lv_side,
            lv_price,
            lv_qty,
            s_off,
            s_side,
            s_price,
            s_qty,
            s_last,
            _counts,
        ) = daygen.simulate(n_events, 1000 + i, mu, sigma, 200, np.array([-1], np.int64), 100)
        level_rows += int(lv_side.shape[0])
        ev_e_ms = start_ms + np.arange(n_events, dtype=np.int64) * 100 + int(rng.integers(0, 100))
        recv = ev_e_ms * 1_000_000 + (20e6 + rng.exponential(3e6, n_events)).astype(np.int64)
        recv = np.maximum.accumulate(recv)
        head = np.frombuffer(
            b'{"stream":"%s@depth@100ms","data":{"e":"depthUpdate","E":' % sym.lower().encode(), np.uint8
        ).copy()
        mid = np.frombuffer(b',"s":"%s","U":' % sym.encode(), np.uint8).copy()
        lo = np.arange(n_events, dtype=np.int64)
        buf = np.empty(int(lv_side.shape[0]) * 40 + n_events * 240 + 1024, np.uint8)
        line_off = np.zeros(n_events + 1, np.int64)
        end = daygen.encode_depth_lines(
            buf,
            line_off,
            lo,
            lo,
            recv,
            ev_first,
            ev_last,
            ev_e_ms,
            ev_off,
            lv_side,
            lv_price,
            lv_qty,
            head,
            mid,
        )
        text = buf[:end].tobytes().replace(b" D {", b" D %s {" % sym.encode())
        lines = [ln + b"\n" for ln in text.split(b"\n")[:-1]]
        sbuf = np.empty(64 + int(s_off[1] - s_off[0]) * 40, np.uint8)
        send = daygen.encode_snapshot(sbuf, s_last[0], int(s_off[0]), int(s_off[1]), s_side, s_price, s_qty)
        snap_ns = int(recv[0]) - 1
        lines.insert(0, b"%d S %s " % (snap_ns, sym.encode()) + sbuf[:send].tobytes() + b"\n")
        recv_all.append(np.concatenate([[snap_ns], recv]))
        lines_all.append(lines)
    recv = np.concatenate(recv_all)
    flat = [ln for lines in lines_all for ln in lines]
    del lines_all
    order = np.argsort(recv, kind="stable")
    recv = recv[order]
    buckets = recv // (OBJECT_SECONDS * 10**9)
    cuts = np.flatnonzero(np.diff(buckets)) + 1
    starts = np.concatenate([[0], cuts]).tolist()
    ends = np.concatenate([cuts, [len(recv)]]).tolist()
    order_l = order.tolist()
    gz_bytes = 0

    def put(seq: int, a: int, b: int) -> int:
        body = b"".join(flat[j] for j in order_l[a:b])
        key = RawObjectKey.for_stream_segment("spot", STREAM, int(recv[a]), "bench", seq).key
        data = gzip.compress(body, compresslevel=3)
        store.put_bytes(key, data)
        return len(data)

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        for size in pool.map(
            lambda x: put(*x), [(s, a, b) for s, (a, b) in enumerate(zip(starts, ends, strict=True))]
        ):
            gz_bytes += size
    out = {
        "symbols": n_symbols,
        "events": n_symbols * n_events,
        "level_rows": level_rows,
        "objects": len(starts),
        "gzip_bytes": gz_bytes,
    }
    print(json.dumps(out))
    return out


def run(store_url: str, symbols_filter: int | None, buffer_mib: int | None = None) -> dict[str, object]:
    from depth_core.validate import validate_stream_day
    from depth_store import open_store
    from depth_store.counting import CountingStore

    store = CountingStore(open_store(store_url))
    wanted = _symbols(symbols_filter) if symbols_filter else None
    t0, c0 = time.perf_counter(), time.process_time()
    result = validate_stream_day(
        store, "spot", STREAM, DATE, wanted, buffer_bytes=buffer_mib << 20 if buffer_mib else None
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out: dict[str, object] = {
        "symbols_validated": len(result.reports),
        "events": sum(r.events for r in result.reports.values()),
        "level_rows": sum(r.levels for r in result.reports.values()),
        "objects_read": result.stats.get("objects_read"),
        "requests": store.snapshot(),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_gib": round(rss, 2),
        "stats": result.stats,
    }
    print(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("store")
    g.add_argument("--symbols", type=int, default=400)
    g.add_argument("--events", type=int, default=2400, help="events per symbol (10/s)")
    g.add_argument(
        "--mu", type=float, default=2.0, help="log-normal level changes per event (mean ~e^(mu+sigma²/2))"
    )
    g.add_argument("--sigma", type=float, default=1.0)
    r = sub.add_parser("run")
    r.add_argument("store")
    r.add_argument("--symbols-filter", type=int, default=None, help="validate only the first N symbols")
    r.add_argument("--buffer-mib", type=int, default=None, help="BUFFER_BYTES for this run (default 512)")
    args = ap.parse_args()
    if args.cmd == "gen":
        generate(args.store, args.symbols, args.events, args.mu, args.sigma)
    else:
        run(args.store, args.symbols_filter, args.buffer_mib)


if __name__ == "__main__":
    main()
