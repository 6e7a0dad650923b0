"""The one order-book replay of the project: merge checks, the reading API, exports and benchmarks use it.

A book is two maps price -> quantity. Rows of the merged dataset (interfaces §3) are replayed in order:
an image (``is_snapshot`` rows sharing one ``last_update_id``) resets the book, every other row sets the
quantity at its price (0 removes the level).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import polars as pl

from depth_core.schema import SIDE_BID

EventCallback = Callable[["OrderBook", pl.DataFrame], None]


class OrderBook:
    """A price-level book. Prices are float64 exactly as parsed from Binance's decimal strings."""

    def __init__(self) -> None:
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}

    def load_snapshot(self, bids: np.ndarray, asks: np.ndarray) -> None:
        """Reset the book to an image; arrays of shape (n, 2): price, qty (qty 0 rows are ignored)."""
        self._bids = {float(p): float(q) for p, q in np.asarray(bids, dtype=np.float64).reshape(-1, 2) if q > 0}
        self._asks = {float(p): float(q) for p, q in np.asarray(asks, dtype=np.float64).reshape(-1, 2) if q > 0}

    def apply(self, is_bid: np.ndarray, price: np.ndarray, qty: np.ndarray) -> None:
        """Apply level updates in order: set the quantity at a price; 0 removes the level."""
        for b, p, q in zip(
            np.asarray(is_bid, dtype=np.bool_).tolist(),
            np.asarray(price, dtype=np.float64).tolist(),
            np.asarray(qty, dtype=np.float64).tolist(),
            strict=True,
        ):
            side = self._bids if b else self._asks
            if q > 0:
                side[p] = q
            else:
                side.pop(p, None)

    def best_bid(self) -> tuple[float, float] | None:
        if not self._bids:
            return None
        p = max(self._bids)
        return p, self._bids[p]

    def best_ask(self) -> tuple[float, float] | None:
        if not self._asks:
            return None
        p = min(self._asks)
        return p, self._asks[p]

    def is_crossed(self) -> bool:
        """True if the best bid is at or above the best ask (never true for a correct exchange book)."""
        bb, ba = self.best_bid(), self.best_ask()
        return bb is not None and ba is not None and bb[0] >= ba[0]

    def top(self, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``depth`` levels: bids by descending price, asks ascending; shape (<=depth, 2)."""
        bid_prices = sorted(self._bids, reverse=True)[:depth]
        ask_prices = sorted(self._asks)[:depth]
        bids = np.array([(p, self._bids[p]) for p in bid_prices], dtype=np.float64).reshape(-1, 2)
        asks = np.array([(p, self._asks[p]) for p in ask_prices], dtype=np.float64).reshape(-1, 2)
        return bids, asks

    def levels(self, side: str) -> dict[float, float]:
        """A copy of one side as a dict price -> qty; ``side`` is "bid" or "ask"."""
        if side == "bid":
            return dict(self._bids)
        if side == "ask":
            return dict(self._asks)
        raise ValueError(f"side must be 'bid' or 'ask', not {side!r}")

    def copy(self) -> OrderBook:
        other = OrderBook()
        other._bids = dict(self._bids)
        other._asks = dict(self._asks)
        return other


def _frames(frames: pl.DataFrame | Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    if isinstance(frames, pl.DataFrame):
        yield frames
    else:
        yield from frames


def replay_merged(
    frames: pl.DataFrame | Iterable[pl.DataFrame],
    on_event: EventCallback | None = None,
    book: OrderBook | None = None,
) -> OrderBook:
    """Replay merged-schema rows (in file order) into a book and return it.

    An image (``is_snapshot`` rows sharing one ``last_update_id``) resets the book; other rows are grouped
    into events by ``(last_update_id, first_update_id)`` and applied in order. ``on_event(book, rows)`` is
    called after every event and after every image (``rows["is_snapshot"]`` tells which). A group that
    continues across two frames is treated as one.
    """
    book = book if book is not None else OrderBook()
    pending: pl.DataFrame | None = None  # the last group of the previous frame, maybe continued

    def flush(group: pl.DataFrame) -> None:
        is_bid = (group["side"] == SIDE_BID).to_numpy()
        price = group["price"].to_numpy()
        qty = group["qty"].to_numpy()
        if group["is_snapshot"][0]:
            book.load_snapshot(
                np.column_stack([price[is_bid], qty[is_bid]]),
                np.column_stack([price[~is_bid], qty[~is_bid]]),
            )
        else:
            book.apply(is_bid, price, qty)
        if on_event is not None:
            on_event(book, group)

    for frame in _frames(frames):
        if frame.height == 0:
            continue
        cols = frame.select("is_snapshot", "last_update_id", "first_update_id", "side", "price", "qty")
        if pending is not None:
            cols = pl.concat([pending, cols], how="vertical")
            pending = None
        groups = _group_bounds(cols)
        for start, stop in groups[:-1]:
            flush(cols.slice(start, stop - start))
        start, stop = groups[-1]
        pending = cols.slice(start, stop - start)
    if pending is not None:
        flush(pending)
    return book


def _group_bounds(cols: pl.DataFrame) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of consecutive rows with one (is_snapshot, last_update_id, first_update_id)."""
    snap = cols["is_snapshot"].to_numpy()
    last = cols["last_update_id"].to_numpy()
    first = cols["first_update_id"].to_numpy()
    change = np.empty(len(snap), dtype=np.bool_)
    change[0] = True
    change[1:] = (snap[1:] != snap[:-1]) | (last[1:] != last[:-1]) | (first[1:] != first[:-1])
    starts = np.flatnonzero(change)
    stops = np.append(starts[1:], len(snap))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))
