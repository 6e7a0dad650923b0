"""A synthetic but real-sized BTCUSDT day of raw objects for two streams, cached by its parameters.

``python -m benchmarks.dayset [--fraction F] [--quick] [--layout 1|2]`` builds (or reuses) a local store under
``artifacts/bench-cache/<key>/store`` holding raw layout v2 (the collector's default, docs/raw-format.md:
``raw/market=spot/stream={bench-a,bench-b}/date=D/``, lines ``<ns> <kind> BTCUSDT <text>``), or with
``--layout 1`` the one-symbol layout ``raw/market=spot/stream=X/symbol=BTCUSDT/date=D/``:

- one canonical id sequence from :mod:`benchmarks.daygen` (≈864k events, ≈40 M level rows a day);
- stream ``bench-a`` receives every event as its own message, ~20 ms after ``E``;
- stream ``bench-b`` receives a different batching (about a quarter of its messages merge two
  consecutive events into one ``[U; u]``), ~120 ms after ``E``, so its last messages of the day land in
  the next day's receive folder, as in real life;
- disjoint outages (A: 02:00-02:05, B: 14:00-14:05 of a full day, scaled with the fraction): every id
  is covered by at least one stream, so a correct merge has no gap;
- REST snapshots (5000 levels a side, exactly the true book at their ``lastUpdateId``) at each stream's
  start, after each outage and hourly;
- objects roll every 10 s of receive time, gzip level 3 (the collector's default).

``meta.json`` beside the store carries the ground truth (events, level rows, ids, messages per stream).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import gzip
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import daygen
from benchmarks.common import CACHE_DIR

GENERATOR_VERSION = 4  # 4: raw layout v2 by default (``layout``)
FULL_DAY_EVENTS = 864_000
SYMBOL = "BTCUSDT"
STREAMS = ("bench-a", "bench-b")
OBJECT_SECONDS = 10
HOUR_NS = 3600 * 10**9


@dataclass(frozen=True)
class DayParams:
    """Everything that shapes the generated day; its hash names the cache folder."""

    fraction: float = 1.0
    date: str = "2026-11-20"
    seed: int = 20261120
    mu: float = 3.3  # log-normal level changes per event: mean ≈46 unique levels
    sigma: float = 1.373
    target_levels: int = 4000
    snapshot_depth: int = 5000
    merge_pair_prob: float = 0.25  # stream B: share of its messages that merge two events
    gzip_level: int = 3
    layout: int = (
        2  # raw layout: 2 = one object per stream-flush holding every symbol (the collector's default)
    )
    version: int = GENERATOR_VERSION

    @property
    def n_events(self) -> int:
        return max(2000, round(FULL_DAY_EVENTS * self.fraction))

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return f"day-f{self.fraction:g}-" + hashlib.sha256(blob).hexdigest()[:10]


@dataclass
class Dataset:
    """A generated day on disk."""

    root: Path  # the store root (LocalStore / file:// URL)
    meta: dict[str, Any]

    @property
    def store_url(self) -> str:
        return str(self.root)

    @property
    def date(self) -> str:
        return str(self.meta["date"])


def _day_start_ms(date: str) -> int:
    d = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    return int(d.timestamp() * 1000)


def _outage(n: int, start_frac: float, length_frac: float) -> tuple[int, int]:
    a = int(n * start_frac)
    return a, a + max(50, int(n * length_frac))


def build(params: DayParams, *, cache_dir: Path = CACHE_DIR, log: Any = print) -> Dataset:
    """Generate the day unless the cache holds it already; returns where it is."""
    folder = cache_dir / params.key()
    meta_path = folder / "meta.json"
    if meta_path.exists():
        return Dataset(folder / "store", json.loads(meta_path.read_text()))
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    n = params.n_events
    # outages: A 02:00-02:05, B 14:00-14:05 (of a full day), scaled
    out_a = _outage(n, 2 / 24, 5 / 1440)
    out_b = _outage(n, 14 / 24, 5 / 1440)
    snaps: dict[str, list[int]] = {"bench-a": [2, out_a[1] + 3], "bench-b": [7, out_b[1] + 3]}
    for h in range(1, 24):
        base = int(n * h / 24)
        for stream, off, (o0, o1) in (("bench-a", 5, out_a), ("bench-b", 25, out_b)):
            if not (o0 <= base + off < o1 + 3):
                snaps[stream].append(base + off)
    snap_events = sorted({i for v in snaps.values() for i in v if i < n})
    (ev_first, ev_last, ev_off, lv_side, lv_price, lv_qty, s_off, s_side, s_price, s_qty, s_last, counts) = (
        daygen.simulate(
            n,
            params.seed,
            params.mu,
            params.sigma,
            params.target_levels,
            np.array(snap_events, np.int64),
            params.snapshot_depth,
        )
    )
    t_sim = time.perf_counter() - t0
    day_ms = _day_start_ms(params.date)
    # events 10/s over the (fraction of the) day; E = exchange time of the event
    ev_e_ms = day_ms + np.arange(n, dtype=np.int64) * 100 + 3
    rng = np.random.default_rng(params.seed)

    from depth_core.raw_format import RawObjectKey
    from depth_store import open_store

    store_root = folder / "store"
    head = np.frombuffer(b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":', np.uint8).copy()
    mid = np.frombuffer(b',"s":"BTCUSDT","U":', np.uint8).copy()
    stream_meta: dict[str, Any] = {}
    snap_index = {e: i for i, e in enumerate(snap_events)}
    pool = cf.ThreadPoolExecutor(max_workers=3)
    sym_field = b"" if params.layout == 1 else SYMBOL.encode() + b" "  # v2 lines name their symbol
    total_bytes = 0
    total_objects = 0
    for stream, (o0, o1), lat_ms in (("bench-a", out_a, 20.0), ("bench-b", out_b, 120.0)):
        # the stream's batching: (lo, hi) canonical event ranges per message
        if stream == "bench-a":
            lo = np.arange(n, dtype=np.int64)
            hi = lo.copy()
        else:
            merge = rng.random(n) < params.merge_pair_prob / (1 + params.merge_pair_prob)
            starts = []
            i = 0
            merge_l = merge.tolist()
            while i < n:
                starts.append(i)
                i += 2 if (merge_l[i] and i + 1 < n) else 1
            lo = np.array(starts, np.int64)
            hi = np.append(lo[1:] - 1, n - 1)
        keep = (hi < o0) | (lo >= o1)
        lo, hi = lo[keep], hi[keep]
        recv = ev_e_ms[hi] * 1_000_000 + (lat_ms * 1e6 + rng.exponential(3e6, lo.shape[0])).astype(np.int64)
        recv = np.maximum.accumulate(recv)
        # snapshot lines: (receive_ns, body)
        snap_lines: list[tuple[int, bytes]] = []
        for e in snaps[stream]:
            if e >= n:
                continue
            si = snap_index[e]
            a, b = int(s_off[si]), int(s_off[si + 1])
            buf = np.empty(64 + (b - a) * 40, np.uint8)
            end = daygen.encode_snapshot(buf, s_last[si], a, b, s_side, s_price, s_qty)
            r_ns = int(ev_e_ms[min(e + 1, n - 1)]) * 1_000_000 + 45_000_000
            snap_lines.append((r_ns, b"%d S %s" % (r_ns, sym_field) + buf[:end].tobytes() + b"\n"))
        snap_lines.sort()
        snap_recv = np.array([s[0] for s in snap_lines], np.int64)
        session = "b" + stream[-1] + "1"
        seq = 0
        futures: list[cf.Future[Any]] = []
        # encode in chunks of ~1 hour of messages
        hours = recv // HOUR_NS
        bounds = np.flatnonzero(np.diff(hours)) + 1
        chunk_starts = np.concatenate([[0], bounds])
        chunk_ends = np.concatenate([bounds, [lo.shape[0]]])
        n_msgs = int(lo.shape[0])
        for c0, c1 in zip(chunk_starts.tolist(), chunk_ends.tolist(), strict=True):
            clo, chi, crecv = lo[c0:c1], hi[c0:c1], recv[c0:c1]
            n_levels = int(ev_off[chi[-1] + 1] - ev_off[clo[0]])
            buf = np.empty(n_levels * 40 + (c1 - c0) * 220 + 1024, np.uint8)
            line_off = np.zeros(c1 - c0 + 1, np.int64)
            daygen.encode_depth_lines(
                buf,
                line_off,
                clo,
                chi,
                crecv,
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
            buckets = crecv // (OBJECT_SECONDS * 10**9)
            bb = np.flatnonzero(np.diff(buckets)) + 1
            obj_starts = np.concatenate([[0], bb]).tolist()
            obj_ends = np.concatenate([bb, [c1 - c0]]).tolist()
            raw_bytes = buf  # keep a reference for the slices
            for a, b in zip(obj_starts, obj_ends, strict=True):
                first_ns = int(crecv[a])
                bucket_lo = int(buckets[a]) * OBJECT_SECONDS * 10**9
                bucket_hi = bucket_lo + OBJECT_SECONDS * 10**9
                body = raw_bytes[line_off[a] : line_off[b]].tobytes()
                if sym_field:
                    body = body.replace(b" D {", b" D " + sym_field + b"{")
                i0, i1 = np.searchsorted(snap_recv, [bucket_lo, bucket_hi])
                if i1 > i0:  # splice snapshot lines in receive order
                    parts: list[bytes] = []
                    lines = body.split(b"\n")[:-1]
                    line_recv = crecv[a:b]
                    pos = 0
                    for s_ns, s_line in snap_lines[i0:i1]:
                        k = int(np.searchsorted(line_recv, s_ns, side="right"))
                        parts.extend(ln + b"\n" for ln in lines[pos:k])
                        parts.append(s_line)
                        pos = k
                        first_ns = min(first_ns, s_ns)
                    parts.extend(ln + b"\n" for ln in lines[pos:])
                    body = b"".join(parts)
                key = (
                    RawObjectKey.for_segment("spot", stream, SYMBOL, first_ns, session, seq).key
                    if params.layout == 1
                    else RawObjectKey.for_stream_segment("spot", stream, first_ns, session, seq).key
                )
                seq += 1
                futures.append(pool.submit(_put, store_root, key, body, params.gzip_level))
            # keep memory bounded: wait for this chunk's uploads before the next
            for f in futures:
                total_bytes += f.result()
            total_objects += len(futures)
            futures = []
        stream_meta[stream] = {
            "messages": n_msgs,
            "snapshots": len(snap_lines),
            "outage_events": [int(o0), int(o1)],
            "objects": seq,
        }
        log(f"  dayset: {stream}: {n_msgs} messages, {seq} objects")
    pool.shutdown()
    # list once through the store: computes and caches every object's etag, as a real upload would have
    listed = sum(1 for _ in open_store(str(store_root)).list("raw/"))
    assert listed == total_objects, (listed, total_objects)
    meta = {
        "params": asdict(params),
        "date": params.date,
        "symbol": SYMBOL,
        "market": "spot",
        "layout": params.layout,
        "streams": list(STREAMS),
        "events": n,
        "level_rows": int(lv_side.shape[0]),
        "first_update_id": int(ev_first[0]),
        "last_update_id": int(ev_last[-1]),
        "stream_meta": stream_meta,
        "objects": total_objects,
        "gzip_bytes": total_bytes,
        "seconds_simulate": round(t_sim, 2),
        "seconds_total": round(time.perf_counter() - t0, 2),
        "book_levels_end": [int(c) for c in counts],
    }
    (folder / "levels.npz").parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "levels.npz",
        ev_off=ev_off,
        side=lv_side,
        price=lv_price,
        qty=lv_qty,
        ev_first=ev_first,
        ev_last=ev_last,
    )
    meta_path.write_text(json.dumps(meta, indent=1))
    return Dataset(store_root, meta)


def _put(root: Path, key: str, body: bytes, level: int) -> int:
    """Write one object straight into the local store's layout (``root/key``).

    Not through ``LocalStore.put_bytes``: its per-object fsync made generation 3x slower, and a cache
    that is rebuilt when lost needs no durability. The store's etag cache is warmed afterwards.
    """
    data = gzip.compress(body, compresslevel=level, mtime=0)
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def load_levels(ds: Dataset) -> dict[str, np.ndarray]:
    """The canonical level-update arrays of the day (for the reconstruction benchmark)."""
    with np.load(ds.root.parent / "levels.npz") as z:
        return {k: z[k] for k in z.files}


def params_for(fraction: float, quick: bool, layout: int = 2) -> DayParams:
    return DayParams(fraction=fraction / 16 if quick else fraction, layout=layout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=1.0, help="share of a day: 0.125, 0.25, 0.5, 1")
    ap.add_argument("--quick", action="store_true", help="1/16 of --fraction (a smoke run)")
    ap.add_argument("--layout", type=int, choices=(1, 2), default=2, help="raw layout (default 2, v2)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ds = build(params_for(args.fraction, args.quick, args.layout))
    print(
        json.dumps(
            {"store": ds.store_url, "seconds": round(time.perf_counter() - t0, 1), **ds.meta}, indent=1
        )
    )


if __name__ == "__main__":
    main()
