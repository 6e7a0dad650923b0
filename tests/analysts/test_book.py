"""The book replay against a plain dict book (random data) and against Binance's own bookTicker (real
data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depth_core.book import OrderBook, replay_merged
from tests.analysts.realdata import load_recording


class DictBook:
    """The reference: two dicts, sorted on demand."""

    def __init__(self) -> None:
        self.sides: dict[bool, dict[float, float]] = {True: {}, False: {}}

    def reset(self) -> None:
        self.sides = {True: {}, False: {}}

    def set(self, is_bid: bool, price: float, qty: float) -> None:
        if qty > 0:
            self.sides[is_bid][price] = qty
        else:
            self.sides[is_bid].pop(price, None)

    def top(self, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bids = sorted(self.sides[True].items(), key=lambda kv: -kv[0])[:depth]
        asks = sorted(self.sides[False].items())[:depth]
        return bids, asks


def random_updates(
    rng: np.random.Generator, n: int, mid: float, tick: float, spread_ticks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level updates around a drifting mid: bids below, asks above, about a third removals."""
    is_bid = rng.random(n) < 0.5
    drift = np.cumsum(rng.integers(-2, 3, n))
    offset = rng.geometric(0.05, n)
    center = np.round(mid / tick) + drift
    ticks = np.where(is_bid, center - offset, center + offset + spread_ticks)
    price = np.round(ticks * tick, 8)
    qty = np.where(rng.random(n) < 0.35, 0.0, np.round(rng.random(n) * 5, 5))
    return is_bid, price, qty


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_apply_matches_dict_book(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tick = [0.01, 0.1, 1e-5][seed - 1]
    mid = [60000.0, 3000.0, 0.25][seed - 1]
    book, ref = OrderBook(), DictBook()
    snap_bids = np.column_stack([np.round(mid - tick * np.arange(1, 200), 8), rng.random(199) + 0.1])
    snap_asks = np.column_stack([np.round(mid + tick * np.arange(1, 200), 8), rng.random(199) + 0.1])
    book.load_snapshot(snap_bids, snap_asks)
    for p, q in snap_bids:
        ref.set(True, p, q)
    for p, q in snap_asks:
        ref.set(False, p, q)
    is_bid, price, qty = random_updates(rng, 20_000, mid, tick, 0)
    for start in range(0, len(price), 997):
        stop = start + 997
        book.apply(is_bid[start:stop], price[start:stop], qty[start:stop])
        for b, p, q in zip(is_bid[start:stop], price[start:stop], qty[start:stop], strict=True):
            ref.set(bool(b), float(p), float(q))
        bids, asks = book.top(25)
        ref_bids, ref_asks = ref.top(25)
        assert [tuple(r) for r in bids.tolist()] == ref_bids
        assert [tuple(r) for r in asks.tolist()] == ref_asks
        assert book.best_bid() == (ref_bids[0] if ref_bids else None)
        assert book.best_ask() == (ref_asks[0] if ref_asks else None)
    assert book.levels("bid") == ref.sides[True]
    assert book.levels("ask") == ref.sides[False]
    clone = book.copy()
    clone.apply(np.array([True]), np.array([price[0]]), np.array([123.0]))
    assert book.levels("bid") == ref.sides[True]
    assert clone.levels("bid")[float(price[0])] == 123.0


def test_crossed_and_empty() -> None:
    book = OrderBook()
    assert book.best_bid() is None and book.best_ask() is None and not book.is_crossed()
    bids, asks = book.top(5)
    assert bids.shape == (0, 2) and asks.shape == (0, 2)
    book.load_snapshot(np.array([[100.0, 1.0]]), np.array([[101.0, 2.0]]))
    assert not book.is_crossed()
    book.apply(np.array([True]), np.array([101.5]), np.array([1.0]))
    assert book.is_crossed()
    book.load_snapshot(np.empty((0, 2)), np.array([[101.0, 2.0]]))
    assert book.best_bid() is None and not book.is_crossed()
    with pytest.raises(ValueError):
        book.levels("middle")


def _check_against_tickers(path: Path, market: str) -> tuple[int, int]:
    rec = load_recording(path, market)
    matched = mismatched = 0

    def on_event(book: OrderBook, rows: pl.DataFrame) -> None:
        nonlocal matched, mismatched
        u = int(rows["last_update_id"][0])
        ticker = rec.tickers.get(u)
        if ticker is None or rows["is_snapshot"][0]:
            return
        bb, ba = book.best_bid(), book.best_ask()
        if (bb, ba) == ((ticker[0], ticker[1]), (ticker[2], ticker[3])):
            matched += 1
        else:
            mismatched += 1

    # Split into uneven frames so events that straddle frames are exercised.
    frames = [rec.merged.slice(i, 1777) for i in range(0, rec.merged.height, 1777)]
    replay_merged(frames, on_event)
    return matched, mismatched


@pytest.mark.realdata
def test_real_spot_replay_matches_book_ticker(real_data: Path) -> None:
    matched, mismatched = _check_against_tickers(real_data / "hftbacktest_spot_btcusdt_20240808.gz", "spot")
    assert (matched, mismatched) == (564, 0)


@pytest.mark.realdata
def test_real_usdm_replay_matches_book_ticker(real_data: Path) -> None:
    matched, mismatched = _check_against_tickers(real_data / "hftbacktest_usdm_btcusdt_20240808.gz", "usdm")
    assert (matched, mismatched) == (629, 0)


def test_replay_merged_images_reset_and_events_group() -> None:
    rows = [
        # image id 10: bids 100, 99; ask 101
        (10, 10, True, "bid", 100.0, 1.0),
        (10, 10, True, "bid", 99.0, 2.0),
        (10, 10, True, "ask", 101.0, 3.0),
        (11, 12, False, "bid", 100.0, 0.0),
        (11, 12, False, "ask", 100.5, 4.0),
        (13, 13, False, "bid", 99.5, 1.5),
        # a re-anchoring image id 20 replaces everything
        (20, 20, True, "bid", 90.0, 1.0),
        (20, 20, True, "ask", 91.0, 1.0),
        (21, 21, False, "ask", 91.0, 0.0),
        (21, 21, False, "ask", 92.0, 2.0),
    ]
    frame = pl.DataFrame(
        {
            "first_update_id": [r[0] for r in rows],
            "last_update_id": [r[1] for r in rows],
            "is_snapshot": [r[2] for r in rows],
            "side": [r[3] for r in rows],
            "price": [r[4] for r in rows],
            "qty": [r[5] for r in rows],
        }
    )
    seen: list[tuple[int, bool, int, tuple[float, float] | None]] = []
    book = replay_merged(
        [frame.slice(0, 4), frame.slice(4, 5), frame.slice(9)],
        lambda b, g: seen.append(
            (int(g["last_update_id"][0]), bool(g["is_snapshot"][0]), g.height, b.best_bid())
        ),
    )
    assert seen == [
        (10, True, 3, (100.0, 1.0)),
        (12, False, 2, (99.0, 2.0)),
        (13, False, 1, (99.5, 1.5)),
        (20, True, 2, (90.0, 1.0)),
        (21, False, 2, (90.0, 1.0)),
    ]
    assert book.levels("ask") == {92.0: 2.0}
    assert book.levels("bid") == {90.0: 1.0}


@pytest.mark.parametrize("window", [8, 64])
def test_small_window_recentres_and_overflow_match_dict_book(window: int) -> None:
    """A tiny window forces every slow path: re-centring up and down, overflow inserts, growth."""
    rng = np.random.default_rng(window)
    book, ref = OrderBook(window=window), DictBook()
    n = 30_000
    is_bid = rng.random(n) < 0.5
    center = 100_000 + np.cumsum(rng.integers(-3, 4, n)) * 3  # wanders far beyond the window
    offset = rng.integers(1, 300, n)
    ticks = np.where(is_bid, center - offset, center + offset)
    price = np.array([float(f"{t / 100:.2f}") for t in ticks])
    qty = np.where(rng.random(n) < 0.4, 0.0, rng.integers(1, 1000, n) / 1000)
    for start in range(0, n, 1500):
        sl = slice(start, start + 1500)
        book.apply(is_bid[sl], price[sl], qty[sl])
        for b, p, q in zip(is_bid[sl], price[sl], qty[sl], strict=True):
            ref.set(bool(b), float(p), float(q))
        bids, asks = book.top(40)
        assert [tuple(r) for r in bids.tolist()] == ref.top(40)[0]
        assert [tuple(r) for r in asks.tolist()] == ref.top(40)[1]
    assert book.levels("bid") == ref.sides[True]
    assert book.levels("ask") == ref.sides[False]
    assert book.depth_counts() == (len(ref.sides[True]), len(ref.sides[False]))


def test_more_decimals_later_rekeys_the_book() -> None:
    book = OrderBook()
    book.load_snapshot(np.array([[100.0, 1.0], [99.0, 2.0]]), np.array([[101.0, 1.0]]))
    book.apply(np.array([True, False]), np.array([99.5, 100.25]), np.array([3.0, 4.0]))
    book.apply(np.array([True]), np.array([100.125]), np.array([5.0]))
    assert book.levels("bid") == {100.0: 1.0, 99.0: 2.0, 99.5: 3.0, 100.125: 5.0}
    assert book.best_ask() == (100.25, 4.0)
    assert book.best_bid() == (100.125, 5.0)
    with pytest.raises(ValueError, match="not a decimal"):
        book.apply(np.array([True]), np.array([1 / 3]), np.array([1.0]))


@pytest.mark.parametrize(("depth", "window"), [(5, 1 << 16), (1, 1 << 16), (1, 16)])
def test_sample_tops_and_replay_arrays_agree_with_stepwise_replay(depth: int, window: int) -> None:
    """Depth 1 has its own path (the best level read directly); window 16 puts best levels in the overflow."""
    rng = np.random.default_rng(7)
    is_bid, price, qty = random_updates(rng, 5000, 3000.0, 0.1, 0)
    snap = np.zeros(5000, dtype=bool)
    last_id = np.arange(5000, dtype=np.int64)
    # two images: rows 0-9 (id 100) and rows 2000-2049 (id 200)
    snap[:10] = True
    last_id[:10] = 100
    snap[2000:2050] = True
    last_id[2000:2050] = 200
    qty[:10] = qty[2000:2050][:10] = 1.0
    sample_rows = np.array([0, 5, 10, 10, 777, 2000, 2001, 2050, 4999, 5000, 6000])
    from depth_core.book import replay_arrays, sample_tops

    sample_rows = np.sort(np.r_[sample_rows, rng.integers(0, 5000, 300)])
    book, tops = sample_tops(
        is_bid, price, qty, snap, last_id, sample_rows, depth=depth, book=OrderBook(window=window)
    )
    assert book.levels("bid") == replay_arrays(is_bid, price, qty, snap, last_id).levels("bid")
    for j, row in enumerate(sample_rows):
        ref = OrderBook()
        cut = int(row)
        if 0 < cut < 10:
            cut = 10  # inside an image: the whole image is seen
        if 2000 < cut < 2050:
            cut = 2050
        if cut:
            replay_arrays(is_bid[:cut], price[:cut], qty[:cut], snap[:cut], last_id[:cut], ref)
        bids, asks = ref.top(depth)
        got_bids = tops.bid_price[j][~np.isnan(tops.bid_price[j])]
        assert got_bids.tolist() == bids[:, 0].tolist(), f"sample {j} at row {row}"
        assert tops.bid_qty[j][: len(bids)].tolist() == bids[:, 1].tolist()
        got_asks = tops.ask_price[j][~np.isnan(tops.ask_price[j])]
        assert got_asks.tolist() == asks[:, 0].tolist(), f"sample {j} at row {row}"
        assert tops.ask_qty[j][: len(asks)].tolist() == asks[:, 1].tolist()


@pytest.mark.parametrize("window", [16, 1 << 16])
def test_probes_read_the_stepwise_book_at_their_rows(window: int) -> None:
    """A probe reads the quantity at its level in the book after rows [0, row): images whole, levels in the
    window and in the overflow (window 16), absent levels and prices finer than the book's ticks as 0."""
    from depth_core.book import LevelProbes, sample_tops

    rng = np.random.default_rng(11)
    n = 4000
    is_bid, price, qty = random_updates(rng, n, 3000.0, 0.1, 0)
    snap = np.zeros(n, dtype=bool)
    last_id = np.arange(n, dtype=np.int64)
    snap[1500:1540] = True  # an image mid-way (id 1500)
    last_id[1500:1540] = 1500
    qty[1500:1540] = 1.0
    probe_rows = np.sort(rng.choice(np.r_[0, 1500, 1520, 1540, n, np.arange(1, n, 7)], 600))
    touched = rng.integers(0, n, len(probe_rows))  # levels the replay sets somewhere
    p_bid, p_price = is_bid[touched].copy(), price[touched].copy()
    p_price[::17] += 0.05  # on no tick of the book (it has 1 decimal): no level
    p_bid[::13] = ~p_bid[::13]  # the other side's prices: mostly absent
    probes = LevelProbes(probe_rows, p_bid, p_price)

    _book, tops = sample_tops(
        is_bid, price, qty, snap, last_id, np.zeros(0, np.int64), 1, OrderBook(window=window), probes
    )
    ref, applied = DictBook(), 0
    for j, row in enumerate(probe_rows.tolist()):
        cut = 1540 if 1500 < row < 1540 else row  # inside an image: the whole image is seen
        while applied < cut:
            if applied == 1500:
                ref.reset()
            ref.set(bool(is_bid[applied]), float(price[applied]), float(qty[applied]))
            applied += 1
        want = ref.sides[bool(p_bid[j])].get(float(p_price[j]), 0.0)
        assert tops.probe_qty[j] == want, f"probe {j} at row {row}"
    assert (tops.probe_qty > 0).sum() > 100 and (tops.probe_qty == 0).sum() > 50
    with pytest.raises(ValueError, match="non-decreasing"):
        sample_tops(
            is_bid,
            price,
            qty,
            None,
            None,
            np.zeros(0, np.int64),
            1,
            None,
            LevelProbes(np.array([5, 3]), np.array([True, True]), np.array([1.0, 2.0])),
        )


def test_bad_columns_are_refused_with_a_clear_error() -> None:
    from depth_core.book import replay_arrays

    book = OrderBook()
    with pytest.raises(ValueError, match="lengths differ"):
        book.apply(np.array([True, False]), np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="quantity"):
        book.apply(np.array([True]), np.array([1.0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="quantity"):
        book.apply(np.array([True]), np.array([1.0]), np.array([-2.0]))
    with pytest.raises(ValueError, match="not a decimal"):
        book.apply(np.array([True]), np.array([np.nan]), np.array([1.0]))
    with pytest.raises(ValueError, match="last_update_id"):
        replay_arrays(np.array([True]), np.array([1.0]), np.array([1.0]), np.array([True]), np.array([1, 2]))
    assert book.depth_counts() == (0, 0)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(1, 400), st.sampled_from([0, 0, 1, 2, 3, 250])), max_size=300
    ),
    st.sampled_from([4, 16, 1 << 16]),
    st.integers(0, 4),
)
def test_property_any_update_sequence_matches_dict_book(
    ops: list[tuple[bool, int, int]], window: int, decimals: int
) -> None:
    book, ref = OrderBook(window=window), DictBook()
    scale = 10**decimals
    for start in range(0, len(ops), 37):
        chunk = ops[start : start + 37]
        is_bid = np.array([o[0] for o in chunk], dtype=bool)
        price = np.array([float(f"{o[1] / scale:.{decimals}f}") for o in chunk])
        qty = np.array([o[2] / 8 for o in chunk])
        book.apply(is_bid, price, qty)
        for b, p, q in zip(is_bid.tolist(), price.tolist(), qty.tolist(), strict=True):
            ref.set(b, p, q)
        assert book.levels("bid") == ref.sides[True] and book.levels("ask") == ref.sides[False]
        assert [tuple(r) for r in book.top(7)[0].tolist()] == ref.top(7)[0]
        assert [tuple(r) for r in book.top(7)[1].tolist()] == ref.top(7)[1]
