"""A small merged dataset generated from a known book, with the ground-truth book at chosen instants.

Independent of the pipeline: it writes Parquet of the merged schema (docs/analysts.md) itself. Each day
starts with an image (the first day a ``snapshot:`` image, later days a ``carry:`` image of the previous
day's last book), and the first day has a mid-day gap re-anchored by a second image, as the merge would
write it.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from dataclasses import dataclass, field

import polars as pl

from depth_core.layout import merged_day_prefix
from depth_core.names import Market
from depth_core.schema import MERGED_SCHEMA
from depth_store.base import ObjectStore

MS = 1_000_000  # ns per ms


@dataclass
class TruthBook:
    """Ground truth: books (price -> qty) after the last event with exchange time <= t, per query t."""

    at_time: dict[int, tuple[dict[float, float], dict[float, float]]] = field(default_factory=dict)
    at_id: dict[int, tuple[dict[float, float], dict[float, float]]] = field(default_factory=dict)


@dataclass
class SynthData:
    symbol: str
    market: Market
    days: list[str]
    frames: dict[str, pl.DataFrame]
    truth: TruthBook
    n_events: int


def _fmt(units: int, decimals: int) -> float:
    whole, frac = divmod(units, 10**decimals)
    return float(f"{whole}.{frac:0{decimals}d}") if decimals else float(units)


def generate(
    symbol: str = "BTCUSDT",
    market: Market = "spot",
    days: tuple[str, ...] = ("2026-11-23", "2026-11-24"),
    events_per_day: int = 1500,
    seed: int = 5,
    query_times_ns: list[int] | None = None,
    query_ids: list[int] | None = None,
) -> SynthData:
    rng = random.Random(seed)
    tick_dec, lot_dec = (2, 5) if market == "spot" else (1, 3)
    mid = 60000 * 10**tick_dec
    bids: dict[int, int] = {mid - i: rng.randint(1, 10**lot_dec) for i in range(1, 120)}
    asks: dict[int, int] = {mid + i: rng.randint(1, 10**lot_dec) for i in range(1, 120)}
    queries = sorted(query_times_ns or [])
    ids_wanted = set(query_ids or [])
    truth = TruthBook()
    rows: dict[str, dict[str, list]] = {d: {c: [] for c in MERGED_SCHEMA} for d in days}
    last_id = 1_000_000 if market == "spot" else 7_000_000_000
    n_events = 0

    def as_floats() -> tuple[dict[float, float], dict[float, float]]:
        return (
            {_fmt(p, tick_dec): _fmt(q, lot_dec) for p, q in bids.items()},
            {_fmt(p, tick_dec): _fmt(q, lot_dec) for p, q in asks.items()},
        )

    def add(
        day: str,
        e_ms: int,
        first: int,
        last: int,
        prev: int | None,
        snap: bool,
        side: str,
        price: int,
        qty: int,
        source: str,
    ) -> None:
        r = rows[day]
        r["symbol"].append(symbol)
        r["exchange_time"].append(e_ms)
        r["transaction_time"].append(e_ms - 3 if market == "usdm" else None)
        r["receive_time"].append(e_ms * MS + 40 * MS)
        r["first_update_id"].append(first)
        r["last_update_id"].append(last)
        r["prev_update_id"].append(prev if market == "usdm" else None)
        r["is_snapshot"].append(snap)
        r["side"].append(side)
        r["price"].append(_fmt(price, tick_dec))
        r["qty"].append(_fmt(qty, lot_dec))
        r["source"].append(source)
        r["book_exact"].append(True)

    def image(day: str, e_ms: int, image_id: int, source: str) -> None:
        for p in sorted(bids, reverse=True):
            add(day, e_ms, image_id, image_id, None, True, "bid", p, bids[p], source)
        for p in sorted(asks):
            add(day, e_ms, image_id, image_id, None, True, "ask", p, asks[p], source)

    qi = 0
    prev_day: str | None = None
    for day in days:
        day_ms = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)
        if prev_day is None:
            image(day, day_ms + 1500, last_id, "snapshot:eu-1")
        else:
            image(day, day_ms, last_id, f"carry:{prev_day}")
        times = sorted(rng.sample(range(day_ms + 2000, day_ms + 86_400_000 - 1), events_per_day))
        gap_at = events_per_day // 2 if prev_day is None else -1
        for k, e_ms in enumerate(times):
            # queries that fall before this event see the book as it is now
            while qi < len(queries) and queries[qi] < e_ms * MS:
                truth.at_time[queries[qi]] = as_floats()
                qi += 1
            if k == gap_at:
                # a gap no stream covered: ids jump, the book moves on unseen, a new image re-anchors it
                last_id += 50
                for _ in range(30):
                    _change(rng, bids, asks, lot_dec)
                image(day, e_ms, last_id, "snapshot:ap-1")
                n_events += 1
                continue
            n_changes = rng.randint(1, 12)
            first = last_id + 1
            u = last_id + (n_changes if market == "spot" else rng.randint(1, 5) * n_changes)
            seen: set[tuple[str, int]] = set()
            for _ in range(n_changes):
                side, price, _ = _change(rng, bids, asks, lot_dec)
                seen.add((side, price))  # a level touched twice: its final state is emitted once
            # emit the final state of each touched level (as Binance does within one event)
            for side, price in sorted(seen):
                book = bids if side == "bid" else asks
                add(day, e_ms, first, u, last_id, False, side, price, book.get(price, 0), "eu-1")
            last_id = u
            n_events += 1
            if u in ids_wanted:
                truth.at_id[u] = as_floats()
        prev_day = day
    while qi < len(queries):
        truth.at_time[queries[qi]] = as_floats()
        qi += 1
    frames = {
        d: pl.DataFrame(rows[d])
        .with_columns(
            pl.col("exchange_time").cast(pl.Datetime("ms", "UTC")),
            pl.col("transaction_time").cast(pl.Datetime("ms", "UTC")),
            pl.col("receive_time").cast(pl.Datetime("ns", "UTC")),
        )
        .cast(MERGED_SCHEMA)  # type: ignore[arg-type]
        for d in days
    }
    return SynthData(symbol, market, list(days), frames, truth, n_events)


def _change(
    rng: random.Random, bids: dict[int, int], asks: dict[int, int], lot_dec: int
) -> tuple[str, int, int]:
    """One random level change that keeps the book uncrossed; applied to the dicts."""
    best_bid, best_ask = max(bids), min(asks)
    if rng.random() < 0.5:
        side, book = "bid", bids
        price = best_ask - rng.randint(1, 60)
    else:
        side, book = "ask", asks
        price = best_bid + rng.randint(1, 60)
    remove = price in book and (rng.random() < 0.45) and len(book) > 20
    qty = 0 if remove else rng.randint(1, 3 * 10**lot_dec)
    if qty:
        book[price] = qty
    else:
        book.pop(price, None)
    return side, price, qty


def write(store: ObjectStore, data: SynthData, files_per_day: int = 2, cuts: list[int] | None = None) -> None:
    """Write each day as Parquet files whose names sort in row order: ``files_per_day`` equal parts, or
    parts ending at the row indices ``cuts``."""
    for day, frame in data.frames.items():
        size = -(-frame.height // files_per_day)
        bounds = [*(cuts or [size * i for i in range(1, files_per_day)]), frame.height]
        starts = [0, *bounds[:-1]]
        for i, (a, b) in enumerate(zip(starts, bounds, strict=True)):
            part = frame.slice(a, b - a)
            buf = io.BytesIO()
            part.write_parquet(buf, row_group_size=500)
            store.put_bytes(
                merged_day_prefix(data.market, data.symbol, day) + f"part-{i:05d}.parquet", buf.getvalue()
            )
