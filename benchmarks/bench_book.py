"""Reconstruction: level updates/s of our bulk replay vs the ``order-book`` C extension and sortedcontainers.

All three replay the same level-update stream (the generated day's canonical updates, prices and
quantities as float64 as parsed from Binance's strings; qty 0 removes the level) and must end in the
same book. Child: ``python -m benchmarks.bench_book KIND N`` where KIND is ours | ours_top25 | order_book
| sortedcontainers and N the number of updates; prints a JSON report.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks.common import NotAvailableError, emit


def load_updates(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First ``n`` updates of the cached full day: is_bid, price, qty, and event end offsets."""
    from benchmarks import dayset

    ds = dayset.build(dayset.DayParams(fraction=1.0 if n > 5_000_000 else 0.125), log=lambda *_: None)
    lv = dayset.load_levels(ds)
    n = min(n, lv["side"].shape[0])
    is_bid = lv["side"][:n] == 0
    price = lv["price"][:n].astype(np.float64) / 100.0
    qty = lv["qty"][:n].astype(np.float64) / 1e8
    ev_end = lv["ev_off"][1:]
    ev_end = ev_end[ev_end <= n]
    return is_bid, price, qty, ev_end


def _book_digest(bids: dict[float, float], asks: dict[float, float]) -> dict[str, Any]:
    bb = max(bids) if bids else None
    ba = min(asks) if asks else None
    return {
        "bids": len(bids),
        "asks": len(asks),
        "best_bid": bb,
        "best_ask": ba,
        "qty_sum": round(sum(bids.values()) + sum(asks.values()), 6),
    }


def run_sortedcontainers(
    is_bid: np.ndarray, price: np.ndarray, qty: np.ndarray
) -> tuple[float, dict[str, Any]]:
    from sortedcontainers import SortedDict

    bids: SortedDict = SortedDict()
    asks: SortedDict = SortedDict()
    sides = (asks, bids)
    t0 = time.perf_counter()
    for b, p, q in zip(is_bid.tolist(), price.tolist(), qty.tolist(), strict=True):
        book = sides[b]
        if q == 0.0:
            book.pop(p, None)
        else:
            book[p] = q
    dt = time.perf_counter() - t0
    return dt, _book_digest(dict(bids), dict(asks))


def run_order_book(is_bid: np.ndarray, price: np.ndarray, qty: np.ndarray) -> tuple[float, dict[str, Any]]:
    from order_book import OrderBook

    ob = OrderBook()
    bids, asks = ob.bids, ob.asks
    sides = (asks, bids)
    t0 = time.perf_counter()
    for b, p, q in zip(is_bid.tolist(), price.tolist(), qty.tolist(), strict=True):
        book = sides[b]
        if q == 0.0:
            if p in book:
                del book[p]
        else:
            book[p] = q
    dt = time.perf_counter() - t0
    return dt, _book_digest(dict(bids.to_dict()), dict(asks.to_dict()))


_WARMED: list[bool] = []


def run_ours(
    is_bid: np.ndarray, price: np.ndarray, qty: np.ndarray, ev_end: np.ndarray, top25: bool
) -> tuple[float, dict[str, Any]]:
    try:
        from depth_core import book as core_book
    except ImportError as exc:
        raise NotAvailableError(f"depth_core.book not importable: {exc}") from exc
    if not hasattr(core_book, "replay_arrays"):
        raise NotAvailableError("depth_core.book has no replay_arrays bulk entry point yet")
    if not _WARMED:  # compile (or load from the numba cache) outside the measured runs
        core_book.replay_arrays(is_bid[:1000], price[:1000], qty[:1000])
        core_book.sample_tops(is_bid[:1000], price[:1000], qty[:1000], None, None, ev_end[:2], 25)
        _WARMED.append(True)
    if top25:
        rows = ev_end[::10]  # one sample per second of exchange time (10 events/s), top 25 levels
        t0 = time.perf_counter()
        book, _tops = core_book.sample_tops(is_bid, price, qty, None, None, rows, 25)
        dt = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        book = core_book.replay_arrays(is_bid, price, qty)
        dt = time.perf_counter() - t0
    return dt, _book_digest(book.levels("bid"), book.levels("ask"))


def main() -> None:
    """Replay ``runs`` times; report the median wall and CPU seconds (CPU is what counts on a busy box)."""
    kind, n = sys.argv[1], int(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    is_bid, price, qty, ev_end = load_updates(n)
    walls: list[float] = []
    cpus: list[float] = []
    digest: dict[str, Any] = {}
    if kind.startswith("ours"):
        try:
            run_ours(is_bid[:5000], price[:5000], qty[:5000], ev_end[:50], kind == "ours_top25")
        except NotAvailableError as exc:
            emit({"not_available": str(exc)})
            return
    for _ in range(runs):
        c0 = time.process_time()
        if kind == "sortedcontainers":
            dt, digest = run_sortedcontainers(is_bid, price, qty)
        elif kind == "order_book":
            dt, digest = run_order_book(is_bid, price, qty)
        elif kind in ("ours", "ours_top25"):
            try:
                dt, digest = run_ours(is_bid, price, qty, ev_end, kind == "ours_top25")
            except NotAvailableError as exc:
                emit({"not_available": str(exc)})
                return
        else:
            raise SystemExit(f"unknown kind {kind}")
        cpus.append(time.process_time() - c0)
        walls.append(dt)
    wall, cpu = float(np.median(walls)), float(np.median(cpus))
    emit(
        {
            "kind": kind,
            "updates": len(price),
            "runs": runs,
            "seconds": wall,
            "cpu_seconds": cpu,
            "updates_per_s": len(price) / wall,
            "updates_per_cpu_s": len(price) / cpu,
            "digest": digest,
        }
    )


if __name__ == "__main__":
    main()
