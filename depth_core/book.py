"""The one order-book replay of the project: merge checks, the reading API, exports and benchmarks use it.

Rows of the merged dataset (docs/analysts.md, "Columns") are replayed in order: an image (``is_snapshot``
rows sharing one ``last_update_id``) resets the book, every other row sets the quantity at its price
(0 removes the level).

Why it is fast (issue 8 asks for ≥ 5 M level updates/s): prices are turned into integer ticks (``price *
10**decimals``, exact because Binance prices are decimal strings) and each side keeps

* a dense *window* of quantities indexed by tick, around the best price, where almost every update lands
  (one array store, no search, no allocation), and
* a sorted *overflow* array for the rare levels below the window (deep in the book).

Asks are stored as negative ticks so "best" is the largest key on both sides. The hot loop is compiled with
numba; when a price leaves the window upwards, or the window empties, the loop stops and Python re-centres
the window (rare: only after the price moved by a quarter of the window). The loop keeps each side's window
base and best key in locals (read back from the side's state array on every store, they halved its speed).
``replay_arrays`` and ``sample_tops`` are the bulk entry points over numpy columns (benchmarks, the
top-of-book table); ``sample_tops`` also reads given levels (``LevelProbes``) at given rows in the same pass
(the merge's ``streams_agree`` check of other batchings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numba
import numpy as np
import polars as pl

from depth_core.schema import SIDE_ASK, SIDE_BID

EventCallback = Callable[["OrderBook", pl.DataFrame], None]

EMPTY = np.iinfo(np.int64).min  # "best" key of an empty side
MAX_DECIMALS = 12
DEFAULT_WINDOW = 1 << 16  # ticks per side in the dense window (512 KiB of float64)

# codes returned by the compiled loop
_DONE, _RECENTER_AT_KEY, _GROW_OVERFLOW, _RECENTER_AT_BEST, _NEED_DECIMALS = 0, 1, 2, 3, 4
_MAX_EXACT = 2.0**53
_NO_ROW = np.iinfo(np.int64).max  # no sample or probe pending


@numba.njit(cache=True, nogil=True)
def _next_best(win: np.ndarray, st: np.ndarray, ok: np.ndarray, below: int) -> None:
    """Set st[1] to the largest key with a level, searching the window from index ``below`` down."""
    j = below
    while j >= 0 and win[j] == 0.0:
        j -= 1
    if j >= 0:
        st[1] = st[0] + j
    elif st[2] > 0:
        st[1] = ok[st[2] - 1]
    else:
        st[1] = EMPTY


@numba.njit(cache=True, nogil=True)
def _set_level(
    win: np.ndarray, st: np.ndarray, ok: np.ndarray, oq: np.ndarray, key: int | np.int64, q: float
) -> int:
    """Set one level of one side; st = [window base, best key, overflow length]."""
    width = win.shape[0]
    base = st[0]
    if key >= base + width:
        # nothing is ever stored above the window: a removal there is a no-op, an insert needs a re-centre
        return _RECENTER_AT_KEY if q > 0.0 else _DONE
    if key >= base:
        i = key - base
        old = win[i]
        if q > 0.0:
            win[i] = q
            if key > st[1]:
                st[1] = key
        else:
            win[i] = 0.0
            if old > 0.0 and key == st[1]:
                _next_best(win, st, ok, i - 1)
                if st[1] != EMPTY and st[1] < base:
                    return _RECENTER_AT_BEST
        return _DONE
    # overflow: sorted ascending, every key < base
    n = st[2]
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if ok[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    pos = lo
    if pos < n and ok[pos] == key:
        if q > 0.0:
            oq[pos] = q
        else:
            for j in range(pos, n - 1):
                ok[j] = ok[j + 1]
                oq[j] = oq[j + 1]
            st[2] = n - 1
            if key == st[1]:
                st[1] = ok[n - 2] if n > 1 else EMPTY
        return _DONE
    if q <= 0.0:
        return _DONE
    if n == ok.shape[0]:
        return _GROW_OVERFLOW
    for j in range(n, pos, -1):
        ok[j] = ok[j - 1]
        oq[j] = oq[j - 1]
    ok[pos] = key
    oq[pos] = q
    st[2] = n + 1
    if key > st[1]:
        st[1] = key
    return _DONE


@numba.njit(cache=True, nogil=True)
def _top_side(
    win: np.ndarray,
    st: np.ndarray,
    ok: np.ndarray,
    oq: np.ndarray,
    depth: int,
    out_k: np.ndarray,
    out_q: np.ndarray,
) -> int:
    """Write the best ``depth`` levels (best first) into out_k/out_q; return how many."""
    count = 0
    if st[1] == EMPTY:
        return 0
    base = st[0]
    j = st[1] - base
    if j >= win.shape[0]:
        j = win.shape[0] - 1
    while j >= 0 and count < depth:
        if win[j] != 0.0:
            out_k[count] = base + j
            out_q[count] = win[j]
            count += 1
        j -= 1
    k = st[2] - 1
    while k >= 0 and count < depth:
        out_k[count] = ok[k]
        out_q[count] = oq[k]
        count += 1
        k -= 1
    return count


# each kernel below spells out both sides' four arrays (win, st, ok, oq) on purpose: numba takes flat arrays
@numba.njit(cache=True, nogil=True)
def _record(
    bw: np.ndarray,
    bst: np.ndarray,
    bok: np.ndarray,
    boq: np.ndarray,
    aw: np.ndarray,
    ast: np.ndarray,
    aok: np.ndarray,
    aoq: np.ndarray,
    sample_rows: np.ndarray,
    sample_state: np.ndarray,
    upto: int,
    scale: float,
    out_bp: np.ndarray,
    out_bq: np.ndarray,
    out_ap: np.ndarray,
    out_aq: np.ndarray,
) -> None:
    """Record the current top (prices, at the current tick scale) for pending samples with row <= upto."""
    depth = out_bp.shape[1]
    s = sample_state[0]
    if depth == 1:
        # the best level only (the merge checks sample it at every event end): each side's best key, when it
        # holds a level in the window, is what _top_side would find first; no buffer to allocate
        bj, aj = bst[1] - bst[0], ast[1] - ast[0]
        bids_known = bst[1] == EMPTY or (0 <= bj < bw.shape[0] and bw[bj] != 0.0)
        asks_known = ast[1] == EMPTY or (0 <= aj < aw.shape[0] and aw[aj] != 0.0)
        if bids_known and asks_known:
            while s < sample_rows.shape[0] and sample_rows[s] <= upto:
                if bst[1] != EMPTY:
                    out_bp[s, 0] = bst[1] / scale
                    out_bq[s, 0] = bw[bj]
                if ast[1] != EMPTY:
                    out_ap[s, 0] = -ast[1] / scale
                    out_aq[s, 0] = aw[aj]
                s += 1
            sample_state[0] = s
            return
    keys = np.empty(depth, dtype=np.int64)
    while s < sample_rows.shape[0] and sample_rows[s] <= upto:
        n = _top_side(bw, bst, bok, boq, depth, keys, out_bq[s])
        for j in range(n):
            out_bp[s, j] = keys[j] / scale
        n = _top_side(aw, ast, aok, aoq, depth, keys, out_aq[s])
        for j in range(n):
            out_ap[s, j] = -keys[j] / scale
        s += 1
    sample_state[0] = s


@numba.njit(cache=True, nogil=True)
def _overflow_qty(ok: np.ndarray, oq: np.ndarray, n: int, key: int | np.int64) -> float:
    """The quantity at one key of a side's overflow (its first ``n`` entries, keys ascending); 0.0: none."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if ok[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return oq[lo] if lo < n and ok[lo] == key else 0.0


@numba.njit(cache=True, nogil=True)
def _probe(
    bw: np.ndarray,
    bst: np.ndarray,
    bok: np.ndarray,
    boq: np.ndarray,
    aw: np.ndarray,
    ast: np.ndarray,
    aok: np.ndarray,
    aoq: np.ndarray,
    probe_rows: np.ndarray,
    probe_state: np.ndarray,
    upto: int,
    scale: float,
    probe_is_bid: np.ndarray,
    probe_price: np.ndarray,
    out_q: np.ndarray,
) -> None:
    """Record the book's quantity at each pending probe's (side, price) with row <= upto (0.0: no level).

    A price that is no whole tick at the book's decimals is at no level: every level of the book is one.
    Nothing is ever stored above a side's window. The sides' state is read once (no row is applied here:
    read per probe, it made this loop ten times slower)."""
    s = probe_state[0]
    b_width, a_width = bw.shape[0], aw.shape[0]
    b_base, b_over, a_base, a_over = bst[0], bst[2], ast[0], ast[2]
    while s < probe_rows.shape[0] and probe_rows[s] <= upto:
        p = probe_price[s]
        t = p * scale
        q = 0.0
        if -_MAX_EXACT < t < _MAX_EXACT:
            k = np.int64(np.floor(t + 0.5))
            if k / scale == p:
                if probe_is_bid[s]:
                    i = k - b_base
                    if 0 <= i < b_width:
                        q = bw[i]
                    elif i < 0:
                        q = _overflow_qty(bok, boq, b_over, k)
                else:
                    i = -k - a_base
                    if 0 <= i < a_width:
                        q = aw[i]
                    elif i < 0:
                        q = _overflow_qty(aok, aoq, a_over, -k)
        out_q[s] = q
        s += 1
    probe_state[0] = s


@numba.njit(cache=True, nogil=True)
def _run(
    bw: np.ndarray,
    bst: np.ndarray,
    bok: np.ndarray,
    boq: np.ndarray,
    aw: np.ndarray,
    ast: np.ndarray,
    aok: np.ndarray,
    aoq: np.ndarray,
    is_bid: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    start: int,
    stop: int,
    sample_rows: np.ndarray,
    sample_state: np.ndarray,
    scale: float,
    out_bp: np.ndarray,
    out_bq: np.ndarray,
    out_ap: np.ndarray,
    out_aq: np.ndarray,
    probe_rows: np.ndarray,
    probe_state: np.ndarray,
    probe_is_bid: np.ndarray,
    probe_price: np.ndarray,
    probe_qty: np.ndarray,
) -> tuple[int, int]:
    """Apply rows [start, stop); before row i, record the top for every sample whose row index is i, and
    the quantity at every probe whose row index is i.

    Prices become keys here (ticks = price * scale, checked exact: one pass, no temporary arrays).
    Returns (row index, code): code _DONE means all rows were applied; otherwise the caller fixes the side
    (re-centre, grow) or the tick precision (_NEED_DECIMALS) and calls again from the returned row.
    """
    ns = sample_rows.shape[0]
    nprobe = probe_rows.shape[0]
    next_sample = sample_rows[sample_state[0]] if sample_state[0] < ns else _NO_ROW
    next_probe = probe_rows[probe_state[0]] if probe_state[0] < nprobe else _NO_ROW
    # each side's window base and best key live in locals through the loop (read back from ``st`` on every
    # store, they made it about twice as slow); ``st[1]`` is written back before anything else reads it
    b_base, b_best, b_width = bst[0], bst[1], bw.shape[0]
    a_base, a_best, a_width = ast[0], ast[1], aw.shape[0]
    for i in range(start, stop):
        if next_probe <= i or next_sample <= i:
            bst[1] = b_best
            ast[1] = a_best
            if next_probe <= i:
                _probe(
                    bw,
                    bst,
                    bok,
                    boq,
                    aw,
                    ast,
                    aok,
                    aoq,
                    probe_rows,
                    probe_state,
                    i,
                    scale,
                    probe_is_bid,
                    probe_price,
                    probe_qty,
                )
                next_probe = probe_rows[probe_state[0]] if probe_state[0] < nprobe else _NO_ROW
            if next_sample <= i:
                _record(
                    bw,
                    bst,
                    bok,
                    boq,
                    aw,
                    ast,
                    aok,
                    aoq,
                    sample_rows,
                    sample_state,
                    i,
                    scale,
                    out_bp,
                    out_bq,
                    out_ap,
                    out_aq,
                )
                next_sample = sample_rows[sample_state[0]] if sample_state[0] < ns else _NO_ROW
        p = price[i]
        t = p * scale
        if not (-_MAX_EXACT < t < _MAX_EXACT):
            bst[1] = b_best
            ast[1] = a_best
            return i, _NEED_DECIMALS
        k = np.int64(np.floor(t + 0.5))
        if k / scale != p:
            bst[1] = b_best
            ast[1] = a_best
            return i, _NEED_DECIMALS
        q = qty[i]
        # the window case of _set_level, inline; anything else (overflow, above the window) goes through it
        if is_bid[i]:
            j = k - b_base
            if 0 <= j < b_width:
                old = bw[j]
                if q > 0.0:
                    bw[j] = q
                    if k > b_best:
                        b_best = k
                else:
                    bw[j] = 0.0
                    if old > 0.0 and k == b_best:
                        _next_best(bw, bst, bok, j - 1)
                        b_best = bst[1]
                        if b_best != EMPTY and b_best < b_base:
                            ast[1] = a_best
                            return i + 1, _RECENTER_AT_BEST  # row applied; re-centre, continue after it
                continue
            bst[1] = b_best
            code = _set_level(bw, bst, bok, boq, k, q)
            b_best = bst[1]
        else:
            k = -k
            j = k - a_base
            if 0 <= j < a_width:
                old = aw[j]
                if q > 0.0:
                    aw[j] = q
                    if k > a_best:
                        a_best = k
                else:
                    aw[j] = 0.0
                    if old > 0.0 and k == a_best:
                        _next_best(aw, ast, aok, j - 1)
                        a_best = ast[1]
                        if a_best != EMPTY and a_best < a_base:
                            bst[1] = b_best
                            return i + 1, _RECENTER_AT_BEST
                continue
            ast[1] = a_best
            code = _set_level(aw, ast, aok, aoq, k, q)
            a_best = ast[1]
        if code == _RECENTER_AT_BEST:
            bst[1] = b_best
            ast[1] = a_best
            return i + 1, code  # row applied; re-centre then continue after it
        if code != _DONE:
            bst[1] = b_best
            ast[1] = a_best
            return i, code
    bst[1] = b_best
    ast[1] = a_best
    return stop, _DONE


def _columns(
    is_bid: np.ndarray, price: np.ndarray, qty: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous typed copies (or views) of the update columns, checked: the compiled loop trusts them."""
    is_bid = np.ascontiguousarray(is_bid, dtype=np.bool_).reshape(-1)
    price = np.ascontiguousarray(price, dtype=np.float64).reshape(-1)
    qty = np.ascontiguousarray(qty, dtype=np.float64).reshape(-1)
    if not len(is_bid) == len(price) == len(qty):
        raise ValueError(f"column lengths differ: is_bid {len(is_bid)}, price {len(price)}, qty {len(qty)}")
    if len(qty) and not bool((qty >= 0.0).all()):  # also catches NaN
        bad = qty[~(qty >= 0.0)][0]
        raise ValueError(f"quantity {bad!r} is not a number >= 0")
    return is_bid, price, qty


class _Side:
    """One side: dense window + sorted overflow (keys below the window), keys = ticks (asks negated)."""

    def __init__(self, width: int) -> None:
        self.win = np.zeros(width, dtype=np.float64)
        self.st = np.array([0, EMPTY, 0], dtype=np.int64)  # base, best, overflow length
        self.ok = np.zeros(64, dtype=np.int64)
        self.oq = np.zeros(64, dtype=np.float64)

    def copy(self) -> _Side:
        other = _Side.__new__(_Side)
        other.win, other.st, other.ok, other.oq = (
            self.win.copy(),
            self.st.copy(),
            self.ok.copy(),
            self.oq.copy(),
        )
        return other

    @property
    def empty(self) -> bool:
        return bool(self.st[1] == EMPTY)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """All levels, keys ascending."""
        idx = np.flatnonzero(self.win)
        n = int(self.st[2])
        keys = np.concatenate([self.ok[:n], idx.astype(np.int64) + self.st[0]])
        qtys = np.concatenate([self.oq[:n], self.win[idx]])
        return keys, qtys

    def set_all(self, keys: np.ndarray, qtys: np.ndarray, anchor: int | None = None) -> None:
        """Replace the side by these levels (keys ascending, unique, qty > 0); window top near the best."""
        width = self.win.shape[0]
        top = int(keys[-1]) if len(keys) else (anchor if anchor is not None else 0)
        if anchor is not None:
            top = max(top, anchor)
        base = top - (3 * width) // 4
        self.win[:] = 0.0
        in_win = keys >= base
        self.win[keys[in_win] - base] = qtys[in_win]
        over_k, over_q = keys[~in_win], qtys[~in_win]
        cap = max(64, 2 * len(over_k))
        self.ok = np.zeros(cap, dtype=np.int64)
        self.oq = np.zeros(cap, dtype=np.float64)
        self.ok[: len(over_k)] = over_k
        self.oq[: len(over_q)] = over_q
        self.st[0] = base
        self.st[1] = int(keys[-1]) if len(keys) else EMPTY
        self.st[2] = len(over_k)

    def recenter(self, anchor: int) -> None:
        keys, qtys = self.items()
        self.set_all(keys, qtys, anchor)

    def grow(self) -> None:
        self.ok = np.concatenate([self.ok, np.zeros(len(self.ok), dtype=np.int64)])
        self.oq = np.concatenate([self.oq, np.zeros(len(self.oq), dtype=np.float64)])


def _decimals_needed(price: np.ndarray, start: int = 0) -> int:
    """Smallest number of decimals d >= start with which every price is an exact integer number of 10**-d."""
    if len(price) == 0:
        return start
    for d in range(start, MAX_DECIMALS + 1):
        scale = 10.0**d
        ticks = np.rint(price * scale)
        if np.abs(ticks).max() < 2.0**53 and np.array_equal(ticks / scale, price):
            return d
    bad = price[np.rint(price * 10.0**MAX_DECIMALS) / 10.0**MAX_DECIMALS != price]
    raise ValueError(
        f"price {bad[0] if len(bad) else price[0]!r} is not a decimal with at most {MAX_DECIMALS} places "
        "(or too large): cannot be replayed exactly"
    )


_EMPTY_SAMPLES = np.zeros(0, dtype=np.int64)
_EMPTY_OUT = np.zeros((0, 1), dtype=np.float64)
_EMPTY_BOOL = np.zeros(0, dtype=np.bool_)
_EMPTY_PRICES = np.zeros(0, dtype=np.float64)


class OrderBook:
    """A price-level book; prices are float64 as parsed from Binance's decimal strings, returned exactly."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self._window = window
        self._bids = _Side(window)
        self._asks = _Side(window)
        self._decimals = 0

    # ---- conversion between prices and keys
    def _scale(self) -> float:
        return 10.0**self._decimals

    def _ensure_decimals(self, price: np.ndarray) -> None:
        """Raise the tick precision if these prices need more decimals (re-keys the book, rare)."""
        need = _decimals_needed(price, self._decimals)
        if need == self._decimals:
            return
        if self._bids.empty and self._asks.empty:
            self._decimals = need
            return
        bids, asks = self._levels_array(self._bids, True), self._levels_array(self._asks, False)
        self._load(bids, asks, need)

    def _keys(self, is_bid: np.ndarray, price: np.ndarray) -> np.ndarray:
        ticks = np.rint(price * self._scale()).astype(np.int64)
        return np.where(is_bid, ticks, -ticks)

    def _prices(self, keys: np.ndarray, bid: bool) -> np.ndarray:
        ticks = keys if bid else -keys
        return ticks.astype(np.float64) / self._scale()

    def _levels_array(self, side: _Side, bid: bool) -> np.ndarray:
        keys, qtys = side.items()
        return np.column_stack([self._prices(keys, bid), qtys])

    # ---- public API
    def load_snapshot(self, bids: np.ndarray, asks: np.ndarray) -> None:
        """Reset the book to an image; arrays of shape (n, 2): price, qty (rows with qty 0 are ignored)."""
        bids = np.asarray(bids, dtype=np.float64).reshape(-1, 2)
        asks = np.asarray(asks, dtype=np.float64).reshape(-1, 2)
        self._load(bids, asks, _decimals_needed(np.concatenate([bids[:, 0], asks[:, 0]]), 0))

    def _load(self, bids: np.ndarray, asks: np.ndarray, decimals: int) -> None:
        self._decimals = decimals
        for side, rows, bid in ((self._bids, bids, True), (self._asks, asks, False)):
            keys = self._keys(np.full(len(rows), bid), rows[:, 0])
            qtys = rows[:, 1]
            uniq = np.unique(keys)
            if len(uniq) != len(keys):  # a price listed twice: the later row wins, as in apply()
                latest = dict(zip(keys.tolist(), qtys.tolist(), strict=True))
                keys, qtys = uniq, np.array([latest[k] for k in uniq.tolist()], dtype=np.float64)
            else:
                order = np.argsort(keys)
                keys, qtys = keys[order], qtys[order]
            live = qtys > 0
            side.set_all(keys[live], qtys[live])

    def apply(self, is_bid: np.ndarray, price: np.ndarray, qty: np.ndarray) -> None:
        """Apply level updates in order: set the quantity at a price; 0 removes the level."""
        is_bid, price, qty = _columns(is_bid, price, qty)
        if len(price) == 0:
            return
        self._apply_prices(is_bid, price, qty, 0, len(price))

    def _apply_prices(
        self,
        is_bid: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        start: int,
        stop: int,
        samples: _Samples | None = None,
    ) -> None:
        """Apply rows [start, stop) of contiguous float64/bool arrays (the compiled loop does the work)."""
        self._anchor_empty_sides(is_bid, price, qty, start, stop)
        s = samples if samples is not None else _NO_SAMPLES
        pos = start
        while True:
            pos, code = _run(
                self._bids.win,
                self._bids.st,
                self._bids.ok,
                self._bids.oq,
                self._asks.win,
                self._asks.st,
                self._asks.ok,
                self._asks.oq,
                is_bid,
                price,
                qty,
                pos,
                stop,
                s.rows,
                s.state,
                self._scale(),
                s.bid_p,
                s.bid_q,
                s.ask_p,
                s.ask_q,
                s.probe_rows,
                s.probe_state,
                s.probe_is_bid,
                s.probe_price,
                s.probe_qty,
            )
            if code == _DONE:
                return
            if code == _NEED_DECIMALS:
                self._ensure_decimals(price[pos:stop])  # raises if a price is not an exact decimal
                continue
            row = pos - 1 if code == _RECENTER_AT_BEST else pos
            side = self._bids if is_bid[row] else self._asks
            if code == _RECENTER_AT_KEY:
                tick = int(np.floor(price[row] * self._scale() + 0.5))
                side.recenter(tick if is_bid[row] else -tick)
            elif code == _RECENTER_AT_BEST:
                side.recenter(int(side.st[1]))
            else:
                side.grow()

    def _anchor_empty_sides(
        self, is_bid: np.ndarray, price: np.ndarray, qty: np.ndarray, start: int, stop: int
    ) -> None:
        """Put an empty side's window where this batch's prices are (avoids starting in the overflow)."""
        for side, bid in ((self._bids, True), (self._asks, False)):
            if side.empty and side.st[2] == 0:
                mine = price[start:stop][(is_bid[start:stop] == bid) & (qty[start:stop] > 0)]
                if len(mine):
                    self._ensure_decimals(mine)
                    ticks = np.rint(mine * self._scale()).astype(np.int64)
                    anchor = int(ticks.max()) if bid else int((-ticks).max())
                    side.set_all(np.zeros(0, dtype=np.int64), np.zeros(0), anchor)

    def best_bid(self) -> tuple[float, float] | None:
        return self._best(self._bids, True)

    def best_ask(self) -> tuple[float, float] | None:
        return self._best(self._asks, False)

    def _best(self, side: _Side, bid: bool) -> tuple[float, float] | None:
        best = int(side.st[1])
        if best == EMPTY:
            return None
        in_window = best >= side.st[0]
        q = float(side.win[best - side.st[0]]) if in_window else float(side.oq[int(side.st[2]) - 1])
        ticks = best if bid else -best
        return ticks / self._scale(), q

    def is_crossed(self) -> bool:
        """True if the best bid is at or above the best ask (never true for a correct exchange book)."""
        bb, ba = self.best_bid(), self.best_ask()
        return bb is not None and ba is not None and bb[0] >= ba[0]

    def top(self, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``depth`` levels: bids by descending price, asks ascending; shape (<=depth, 2)."""
        out = []
        for side, bid in ((self._bids, True), (self._asks, False)):
            k = np.zeros(max(depth, 0), dtype=np.int64)
            q = np.zeros(max(depth, 0), dtype=np.float64)
            n = _top_side(side.win, side.st, side.ok, side.oq, depth, k, q) if depth > 0 else 0
            out.append(np.column_stack([self._prices(k[:n], bid), q[:n]]))
        return out[0], out[1]

    def levels(self, side: str) -> dict[float, float]:
        """A copy of one side as a dict price -> qty; ``side`` is "bid" or "ask"."""
        if side == SIDE_BID:
            arr = self._levels_array(self._bids, True)
        elif side == SIDE_ASK:
            arr = self._levels_array(self._asks, False)
        else:
            raise ValueError(f"side must be 'bid' or 'ask', not {side!r}")
        return dict(zip(arr[:, 0].tolist(), arr[:, 1].tolist(), strict=True))

    def depth_counts(self) -> tuple[int, int]:
        """Number of bid and ask levels."""
        return (
            int(np.count_nonzero(self._bids.win)) + int(self._bids.st[2]),
            int(np.count_nonzero(self._asks.win)) + int(self._asks.st[2]),
        )

    def copy(self) -> OrderBook:
        other = OrderBook.__new__(OrderBook)
        other._window = self._window
        other._bids, other._asks = self._bids.copy(), self._asks.copy()
        other._decimals = self._decimals
        return other


@dataclass(frozen=True)
class LevelProbes:
    """Levels to read from the book during a replay: probe j reads the quantity at (``is_bid[j]``,
    ``price[j]``) in the book after rows [0, ``rows[j]``) (``rows`` non-decreasing), 0.0 where no level."""

    rows: np.ndarray
    is_bid: np.ndarray
    price: np.ndarray


@dataclass
class _Samples:
    """Where the compiled loop writes the top of book at sample rows and the quantities at probes."""

    rows: np.ndarray
    state: np.ndarray
    bid_p: np.ndarray
    bid_q: np.ndarray
    ask_p: np.ndarray
    ask_q: np.ndarray
    probe_rows: np.ndarray
    probe_state: np.ndarray
    probe_is_bid: np.ndarray
    probe_price: np.ndarray
    probe_qty: np.ndarray

    @classmethod
    def make(cls, rows: np.ndarray, depth: int, probes: LevelProbes | None = None) -> _Samples:
        n = len(rows)
        if probes is None:
            p_rows, p_bid, p_price = _EMPTY_SAMPLES, _EMPTY_BOOL, _EMPTY_PRICES
        else:
            p_rows = np.ascontiguousarray(probes.rows, dtype=np.int64).reshape(-1)
            p_bid = np.ascontiguousarray(probes.is_bid, dtype=np.bool_).reshape(-1)
            p_price = np.ascontiguousarray(probes.price, dtype=np.float64).reshape(-1)
            if not len(p_rows) == len(p_bid) == len(p_price):
                raise ValueError(
                    f"probe lengths differ: rows {len(p_rows)}, is_bid {len(p_bid)}, price {len(p_price)}"
                )
            if len(p_rows) and np.any(p_rows[1:] < p_rows[:-1]):
                raise ValueError("probe rows must be non-decreasing")
        return cls(
            np.ascontiguousarray(rows, dtype=np.int64),
            np.zeros(1, dtype=np.int64),
            np.full((n, depth), np.nan),
            np.full((n, depth), np.nan),
            np.full((n, depth), np.nan),
            np.full((n, depth), np.nan),
            p_rows,
            np.zeros(1, dtype=np.int64),
            p_bid,
            p_price,
            np.full(len(p_rows), np.nan),
        )


_NO_SAMPLES = _Samples(
    _EMPTY_SAMPLES,
    np.zeros(1, dtype=np.int64),
    _EMPTY_OUT,
    _EMPTY_OUT,
    _EMPTY_OUT,
    _EMPTY_OUT,
    _EMPTY_SAMPLES,
    np.zeros(1, dtype=np.int64),
    _EMPTY_BOOL,
    _EMPTY_PRICES,
    _EMPTY_PRICES,
)


def image_bounds(is_snapshot: np.ndarray, last_update_id: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges of the images: consecutive is_snapshot rows sharing one last_update_id."""
    snap = np.asarray(is_snapshot, dtype=np.bool_)
    if not snap.any():
        return []
    last = np.asarray(last_update_id)
    idx = np.flatnonzero(snap)
    brk = np.flatnonzero((np.diff(idx) != 1) | (last[idx[1:]] != last[idx[:-1]]))
    starts = np.concatenate([[idx[0]], idx[brk + 1]])
    stops = np.concatenate([idx[brk] + 1, [idx[-1] + 1]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


@dataclass(frozen=True)
class TopSamples:
    """Top of book at sample points: prices/qtys of shape (samples, depth), NaN where a side is shorter;
    ``probe_qty``: the quantity at each of the replay's :class:`LevelProbes` (empty without them)."""

    bid_price: np.ndarray
    bid_qty: np.ndarray
    ask_price: np.ndarray
    ask_qty: np.ndarray
    probe_qty: np.ndarray = field(default_factory=lambda: _EMPTY_PRICES)


def replay_arrays(
    is_bid: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    is_snapshot: np.ndarray | None = None,
    last_update_id: np.ndarray | None = None,
    book: OrderBook | None = None,
) -> OrderBook:
    """Bulk replay over numpy columns in row order (the fast path; no per-event callback).

    Images (``is_snapshot`` rows sharing a ``last_update_id``) reset the book, as in :func:`replay_merged`.
    """
    book, _ = _replay_columns(is_bid, price, qty, is_snapshot, last_update_id, book, None, 0)
    return book


def sample_tops(
    is_bid: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    is_snapshot: np.ndarray | None,
    last_update_id: np.ndarray | None,
    sample_rows: np.ndarray,
    depth: int,
    book: OrderBook | None = None,
    probes: LevelProbes | None = None,
) -> tuple[OrderBook, TopSamples]:
    """Replay and record the top ``depth`` levels at each sample: sample j sees rows [0, sample_rows[j]).

    ``sample_rows`` must be non-decreasing; put them on event boundaries (e.g. ``searchsorted`` of times).
    ``probes``: levels whose quantity is read in the same pass (``TopSamples.probe_qty``); like samples,
    put their rows on event boundaries (a probe inside an image sees the whole image).
    """
    return _replay_columns(is_bid, price, qty, is_snapshot, last_update_id, book, sample_rows, depth, probes)


def _replay_columns(
    is_bid: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    is_snapshot: np.ndarray | None,
    last_update_id: np.ndarray | None,
    book: OrderBook | None,
    sample_rows: np.ndarray | None,
    depth: int,
    probes: LevelProbes | None = None,
) -> tuple[OrderBook, TopSamples]:
    book = book if book is not None else OrderBook()
    is_bid, price, qty = _columns(is_bid, price, qty)
    n = len(price)
    for name, col in (("is_snapshot", is_snapshot), ("last_update_id", last_update_id)):
        if col is not None and len(col) != n:
            raise ValueError(f"{name} has {len(col)} rows, price has {n}")
    rows = np.zeros(0, dtype=np.int64) if sample_rows is None else np.asarray(sample_rows, dtype=np.int64)
    if len(rows) and np.any(np.diff(rows) < 0):
        raise ValueError("sample_rows must be non-decreasing")
    samples = _Samples.make(rows, max(depth, 1), probes)
    images = (
        image_bounds(is_snapshot, last_update_id)
        if is_snapshot is not None and last_update_id is not None
        else []
    )
    if is_snapshot is not None and last_update_id is None and np.any(is_snapshot):
        raise ValueError("last_update_id is needed to tell images apart")
    # segments of plain updates between images
    pos = 0
    segments: list[tuple[int, int, tuple[int, int] | None]] = []
    for img_start, img_stop in images:
        segments.append((pos, img_start, (img_start, img_stop)))
        pos = img_stop
    segments.append((pos, n, None))
    for seg_start, seg_stop, image in segments:
        if seg_stop > seg_start:
            book._apply_prices(is_bid, price, qty, seg_start, seg_stop, samples)
        if image is not None:
            a, b = image
            # samples exactly at the image start see the book before it
            _flush_samples_upto(book, samples, a)
            sel_bid = is_bid[a:b]
            book.load_snapshot(
                np.column_stack([price[a:b][sel_bid], qty[a:b][sel_bid]]),
                np.column_stack([price[a:b][~sel_bid], qty[a:b][~sel_bid]]),
            )
            # samples inside the image see the whole image (an image is atomic)
            _skip_samples_inside(book, samples, b)
    _flush_samples_upto(book, samples, np.iinfo(np.int64).max)
    tops = TopSamples(samples.bid_p, samples.bid_q, samples.ask_p, samples.ask_q, samples.probe_qty)
    if depth <= 0:
        bp, bq, ap, aq = (a[:, :0] for a in (tops.bid_price, tops.bid_qty, tops.ask_price, tops.ask_qty))
        tops = TopSamples(bp, bq, ap, aq, samples.probe_qty)
    return book, tops


def _flush_samples_upto(book: OrderBook, samples: _Samples, row: int) -> None:
    """Record the current top for every pending sample, and the quantity at every pending probe, whose row
    is <= ``row`` (no rows applied)."""
    if len(samples.probe_rows):
        _probe(
            book._bids.win,
            book._bids.st,
            book._bids.ok,
            book._bids.oq,
            book._asks.win,
            book._asks.st,
            book._asks.ok,
            book._asks.oq,
            samples.probe_rows,
            samples.probe_state,
            row,
            book._scale(),
            samples.probe_is_bid,
            samples.probe_price,
            samples.probe_qty,
        )
    if len(samples.rows):
        _record(
            book._bids.win,
            book._bids.st,
            book._bids.ok,
            book._bids.oq,
            book._asks.win,
            book._asks.st,
            book._asks.ok,
            book._asks.oq,
            samples.rows,
            samples.state,
            row,
            book._scale(),
            samples.bid_p,
            samples.bid_q,
            samples.ask_p,
            samples.ask_q,
        )


def _skip_samples_inside(book: OrderBook, samples: _Samples, image_stop: int) -> None:
    """Samples that fall strictly inside an image are taken after the whole image is loaded."""
    _flush_samples_upto(book, samples, image_stop - 1)


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
    called after every event and after every image (``rows["is_snapshot"]`` tells which) with that group's
    rows (all columns of the input). A group continuing from one frame into the next is treated as one.
    Without ``on_event`` the bulk path (:func:`replay_arrays`) is used.
    """
    book = book if book is not None else OrderBook()
    if on_event is None:
        for frame in _frames(frames):
            if frame.height:
                replay_arrays(
                    (frame["side"] == SIDE_BID).to_numpy(),
                    frame["price"].to_numpy(),
                    frame["qty"].to_numpy(),
                    frame["is_snapshot"].to_numpy(),
                    frame["last_update_id"].to_numpy(),
                    book,
                )
        return book
    pending: pl.DataFrame | None = None  # the last group of the previous frame, maybe continued
    for frame in _frames(frames):
        if frame.height == 0:
            continue
        if pending is not None:
            frame = pl.concat([pending, frame], how="vertical_relaxed")
            pending = None
        bounds = _group_bounds(frame)
        last_start, last_stop = bounds[-1]
        _replay_groups(book, frame, bounds[:-1], on_event)
        pending = frame.slice(last_start, last_stop - last_start)
    if pending is not None:
        _replay_groups(book, pending, [(0, pending.height)], on_event)
    return book


def _replay_groups(
    book: OrderBook, frame: pl.DataFrame, bounds: list[tuple[int, int]], on_event: EventCallback
) -> None:
    if not bounds:
        return
    is_bid = np.ascontiguousarray((frame["side"] == SIDE_BID).to_numpy(), dtype=np.bool_)
    price = np.ascontiguousarray(frame["price"].to_numpy(), dtype=np.float64)
    qty = np.ascontiguousarray(frame["qty"].to_numpy(), dtype=np.float64)
    snap = frame["is_snapshot"].to_numpy()
    for start, stop in bounds:
        if snap[start]:
            sel = is_bid[start:stop]
            book.load_snapshot(
                np.column_stack([price[start:stop][sel], qty[start:stop][sel]]),
                np.column_stack([price[start:stop][~sel], qty[start:stop][~sel]]),
            )
        else:
            book._apply_prices(is_bid, price, qty, start, stop)
        on_event(book, frame.slice(start, stop - start))


def _group_bounds(cols: pl.DataFrame) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of consecutive rows with one (is_snapshot, last_update_id,
    first_update_id)."""
    snap = cols["is_snapshot"].to_numpy()
    last = cols["last_update_id"].to_numpy()
    first = cols["first_update_id"].to_numpy()
    change = np.empty(len(snap), dtype=np.bool_)
    change[0] = True
    change[1:] = (snap[1:] != snap[:-1]) | (last[1:] != last[:-1]) | (first[1:] != first[:-1])
    starts = np.flatnonzero(change)
    stops = np.append(starts[1:], len(snap))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))
