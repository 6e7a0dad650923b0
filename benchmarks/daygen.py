"""Fast synthetic order-book day: a numba book simulation and a numba JSON encoder.

The simulation keeps a real, never-crossed book on a price grid (ticks of 0.01) and produces the
canonical level-update sequence of a BTCUSDT-like ``@depth@100ms`` day: ~10 events/s, a log-normal
number of level changes per event (mean ~46, long tail), most changes near the touch, ~1/3 removals,
occasional sweeps that move the price. ``u - U + 1`` counts the raw changes (a level changed twice in
one event appears once, with its last quantity), as on Binance.

The encoder writes raw lines (``<receive_ns> D <frame>\\n``) for a stream's own batching straight into a
byte buffer, so a real-sized day (~864k events, ~40 M level rows, ~1.3 GB of JSON per stream) is
generated in seconds rather than minutes.
"""

from __future__ import annotations

import numba as nb
import numpy as np

GRID = 1_200_000  # price grid cells (ticks); the walk stays far inside it
START_TICK = 6_183_763  # 61837.63
BID = 0
ASK = 1


def _const(text: bytes) -> np.ndarray:
    return np.frombuffer(text, np.uint8).copy()


_B_OPEN = _const(b',"b":[')
_A_OPEN = _const(b'],"a":[')
_END_LINE = _const(b"]}}\n")
_U_KEY = _const(b',"u":')
_SNAP_HEAD = _const(b'{"lastUpdateId":')
_SNAP_BIDS = _const(b',"bids":[')
_SNAP_ASKS = _const(b'],"asks":[')


@nb.njit(cache=True)
def _lognormal_count(mu: float, sigma: float, cap: int) -> int:
    n = int(np.exp(mu + sigma * np.random.standard_normal()))
    if n < 1:
        n = 1
    if n > cap:
        n = cap
    return n


@nb.njit(cache=True)
def _rand_qty() -> np.int64:
    """Quantity in 1e-8 units with 5 significant decimals (lot 0.00001), log-normal like real books."""
    lots = int(np.exp(np.random.standard_normal() * 1.6 + 8.5))  # median ~0.05 BTC
    if lots < 1:
        lots = 1
    return np.int64(lots) * 1000


@nb.njit(cache=True)
def simulate(
    n_events: int,
    seed: int,
    mu: float,
    sigma: float,
    target_levels: int,
    snap_at: np.ndarray,
    snap_depth: int,
) -> tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
]:
    """Run the book; returns event ids, level offsets, level arrays and snapshot arrays.

    ``snap_at`` (sorted event indices, -1 = before the first event) asks for the book (top
    ``snap_depth`` per side) as it is right after that event.
    """
    np.random.seed(seed)
    base = START_TICK - GRID // 2
    bq = np.zeros(GRID, np.int64)
    aq = np.zeros(GRID, np.int64)
    bstamp = np.full(GRID, -1, np.int64)
    astamp = np.full(GRID, -1, np.int64)
    bpos = np.zeros(GRID, np.int64)
    apos = np.zeros(GRID, np.int64)
    best_bid = START_TICK - base - 1
    best_ask = START_TICK - base
    nb_lv = 0
    na_lv = 0
    # initial book: dense near the touch, sparser deeper
    for i in range(6 * target_levels):
        dens = 0.95 if i < 300 else 0.6
        if np.random.random() < dens and nb_lv < target_levels:
            bq[best_bid - i] = _rand_qty()
            nb_lv += 1
        if np.random.random() < dens and na_lv < target_levels:
            aq[best_ask + i] = _rand_qty()
            na_lv += 1
    bq[best_bid] = _rand_qty() if bq[best_bid] == 0 else bq[best_bid]
    aq[best_ask] = _rand_qty() if aq[best_ask] == 0 else aq[best_ask]

    cap = n_events * 60 + 1000
    lv_side = np.empty(cap, np.int8)
    lv_price = np.empty(cap, np.int64)
    lv_qty = np.empty(cap, np.int64)
    ev_off = np.zeros(n_events + 1, np.int64)
    ev_first = np.zeros(n_events, np.int64)
    ev_last = np.zeros(n_events, np.int64)
    n_snap = snap_at.shape[0]
    snap_off = np.zeros(n_snap + 1, np.int64)
    scap = n_snap * 2 * snap_depth + 1
    s_side = np.empty(scap, np.int8)
    s_price = np.empty(scap, np.int64)
    s_qty = np.empty(scap, np.int64)
    s_last = np.zeros(n_snap, np.int64)
    next_id = np.int64(50_093_239_189)
    n_lv = 0
    si = 0
    ns = 0

    for ev in range(-1, n_events):
        if ev >= 0:
            k = _lognormal_count(mu, sigma, 1500)
            raw = 0
            start = n_lv
            j = 0
            while j < k:
                j += 1
                raw += 1
                r = np.random.random()
                side = BID if np.random.random() < 0.5 else ASK
                if r < 0.03:
                    # sweep: the touch of one side is taken, the other side steps in
                    if side == BID and nb_lv > 50:
                        p = best_bid
                        q = np.int64(0)
                    elif side == ASK and na_lv > 50:
                        p = best_ask
                        q = np.int64(0)
                    else:
                        continue
                elif r < 0.08:
                    # improve inside the spread, or join the touch
                    if side == BID:
                        p = best_bid + 1 if best_bid + 1 < best_ask else best_bid
                    else:
                        p = best_ask - 1 if best_ask - 1 > best_bid else best_ask
                    q = _rand_qty()
                else:
                    dist = (
                        int(np.random.exponential(40.0))
                        if np.random.random() < 0.9
                        else int(np.random.exponential(1500.0))
                    )
                    if dist > 5 * target_levels:
                        dist = 5 * target_levels
                    p = best_bid - dist if side == BID else best_ask + dist
                    cnt = nb_lv if side == BID else na_lv
                    p_zero = 0.33 + 0.3 * (cnt - target_levels) / target_levels
                    q = np.int64(0) if np.random.random() < p_zero and cnt > 50 else _rand_qty()
                # apply to the book, keeping the side counts and the touch
                if side == BID:
                    old = bq[p]
                    bq[p] = q
                    if old == 0 and q != 0:
                        nb_lv += 1
                    elif old != 0 and q == 0:
                        nb_lv -= 1
                    if q != 0 and p > best_bid:
                        best_bid = p
                    elif q == 0 and p == best_bid:
                        while bq[best_bid] == 0:
                            best_bid -= 1
                    if bstamp[p] == ev:
                        lv_qty[bpos[p]] = q
                    else:
                        bstamp[p] = ev
                        bpos[p] = n_lv
                        lv_side[n_lv] = BID
                        lv_price[n_lv] = p + base
                        lv_qty[n_lv] = q
                        n_lv += 1
                else:
                    old = aq[p]
                    aq[p] = q
                    if old == 0 and q != 0:
                        na_lv += 1
                    elif old != 0 and q == 0:
                        na_lv -= 1
                    if q != 0 and p < best_ask:
                        best_ask = p
                    elif q == 0 and p == best_ask:
                        while aq[best_ask] == 0:
                            best_ask += 1
                    if astamp[p] == ev:
                        lv_qty[apos[p]] = q
                    else:
                        astamp[p] = ev
                        apos[p] = n_lv
                        lv_side[n_lv] = ASK
                        lv_price[n_lv] = p + base
                        lv_qty[n_lv] = q
                        n_lv += 1
                # a sweep that emptied the touch was answered by the other side stepping in
                if r < 0.03:
                    if side == BID and best_ask - 1 > best_bid and aq[best_ask - 1] == 0:
                        pp = best_ask - 1
                        # ask steps down into the vacated space
                        aq[pp] = _rand_qty()
                        na_lv += 1
                        best_ask = pp
                        if astamp[pp] == ev:
                            lv_qty[apos[pp]] = aq[pp]
                        else:
                            astamp[pp] = ev
                            apos[pp] = n_lv
                            lv_side[n_lv] = ASK
                            lv_price[n_lv] = pp + base
                            lv_qty[n_lv] = aq[pp]
                            n_lv += 1
                        raw += 1
                    elif side == ASK and best_bid + 1 < best_ask and bq[best_bid + 1] == 0:
                        pp = best_bid + 1
                        bq[pp] = _rand_qty()
                        nb_lv += 1
                        best_bid = pp
                        if bstamp[pp] == ev:
                            lv_qty[bpos[pp]] = bq[pp]
                        else:
                            bstamp[pp] = ev
                            bpos[pp] = n_lv
                            lv_side[n_lv] = BID
                            lv_price[n_lv] = pp + base
                            lv_qty[n_lv] = bq[pp]
                            n_lv += 1
                        raw += 1
            if n_lv == start:  # an event always changes something
                p = best_bid - 1
                if bq[p] == 0:
                    nb_lv += 1
                bq[p] = _rand_qty()
                lv_side[n_lv] = BID
                lv_price[n_lv] = p + base
                lv_qty[n_lv] = bq[p]
                bstamp[p] = ev
                bpos[p] = n_lv
                n_lv += 1
                raw += 1
            ev_first[ev] = next_id
            ev_last[ev] = next_id + raw - 1
            next_id += raw
            ev_off[ev + 1] = n_lv
            if n_lv + 3000 > cap:
                break
        while si < n_snap and snap_at[si] == ev:
            s_last[si] = next_id - 1
            c = 0
            t = best_bid
            while c < snap_depth and t > 0:
                if bq[t] != 0:
                    s_side[ns] = BID
                    s_price[ns] = t + base
                    s_qty[ns] = bq[t]
                    ns += 1
                    c += 1
                t -= 1
                if best_bid - t > 10 * target_levels:
                    break
            c = 0
            t = best_ask
            while c < snap_depth and t < GRID - 1:
                if aq[t] != 0:
                    s_side[ns] = ASK
                    s_price[ns] = t + base
                    s_qty[ns] = aq[t]
                    ns += 1
                    c += 1
                t += 1
                if t - best_ask > 10 * target_levels:
                    break
            si += 1
            snap_off[si] = ns
    return (
        ev_first,
        ev_last,
        ev_off,
        lv_side[:n_lv],
        lv_price[:n_lv],
        lv_qty[:n_lv],
        snap_off,
        s_side[:ns],
        s_price[:ns],
        s_qty[:ns],
        s_last,
        np.array([nb_lv, na_lv]),
    )


@nb.njit(cache=True)
def _put_int(buf: np.ndarray, pos: int, v: np.int64) -> int:
    if v == 0:
        buf[pos] = 48
        return pos + 1
    tmp = np.empty(20, np.uint8)
    n = 0
    while v > 0:
        tmp[n] = 48 + v % 10
        v //= 10
        n += 1
    for i in range(n):
        buf[pos + i] = tmp[n - 1 - i]
    return pos + n


@nb.njit(cache=True)
def _put_bytes(buf: np.ndarray, pos: int, b: np.ndarray) -> int:
    for i in range(b.shape[0]):
        buf[pos + i] = b[i]
    return pos + b.shape[0]


@nb.njit(cache=True)
def _put_price(buf: np.ndarray, pos: int, ticks: np.int64) -> int:
    """ticks of 0.01 as Binance prints them: ``61837.63000000``."""
    pos = _put_int(buf, pos, ticks // 100)
    buf[pos] = 46
    f = ticks % 100
    buf[pos + 1] = 48 + f // 10
    buf[pos + 2] = 48 + f % 10
    for i in range(6):
        buf[pos + 3 + i] = 48
    return pos + 9


@nb.njit(cache=True)
def _put_qty(buf: np.ndarray, pos: int, units: np.int64) -> int:
    """1e-8 units as ``0.05000000``."""
    pos = _put_int(buf, pos, units // 100_000_000)
    buf[pos] = 46
    f = units % 100_000_000
    d = 10_000_000
    for i in range(8):
        buf[pos + 1 + i] = 48 + (f // d) % 10
        d //= 10
    return pos + 9


@nb.njit(cache=True)
def _put_levels(
    buf: np.ndarray,
    pos: int,
    side_code: int,
    lo: int,
    hi: int,
    lv_side: np.ndarray,
    lv_price: np.ndarray,
    lv_qty: np.ndarray,
    skip: np.ndarray,
) -> int:
    first = True
    for i in range(lo, hi):
        if lv_side[i] != side_code or skip[i]:
            continue
        if not first:
            buf[pos] = 44
            pos += 1
        first = False
        buf[pos] = 91
        buf[pos + 1] = 34
        pos = _put_price(buf, pos + 2, lv_price[i])
        buf[pos] = 34
        buf[pos + 1] = 44
        buf[pos + 2] = 34
        pos = _put_qty(buf, pos + 3, lv_qty[i])
        buf[pos] = 34
        buf[pos + 1] = 93
        pos += 2
    return pos


@nb.njit(cache=True)
def encode_depth_lines(
    buf: np.ndarray,
    line_off: np.ndarray,
    msg_lo: np.ndarray,
    msg_hi: np.ndarray,
    msg_recv_ns: np.ndarray,
    ev_first: np.ndarray,
    ev_last: np.ndarray,
    ev_e_ms: np.ndarray,
    ev_off: np.ndarray,
    lv_side: np.ndarray,
    lv_price: np.ndarray,
    lv_qty: np.ndarray,
    head: np.ndarray,
    mid: np.ndarray,
) -> int:
    """Encode messages ``m`` = canonical events ``msg_lo[m]..msg_hi[m]`` (a stream's batching) as raw lines.

    A message spanning several events carries each changed level once, with its last quantity.
    ``head`` is ``{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":``; ``mid`` is
    ``,"s":"BTCUSDT","U":``. Returns the bytes written; ``line_off[m+1]`` ends message ``m``'s line.
    """
    pos = 0
    skip = np.zeros(lv_side.shape[0], np.bool_)
    bstamp = np.full(GRID, -1, np.int64)
    astamp = np.full(GRID, -1, np.int64)
    base = START_TICK - GRID // 2
    for m in range(msg_lo.shape[0]):
        lo_ev = msg_lo[m]
        hi_ev = msg_hi[m]
        lo = ev_off[lo_ev]
        hi = ev_off[hi_ev + 1]
        if hi_ev > lo_ev:
            # keep only the last change of each level over the batch
            for i in range(hi - 1, lo - 1, -1):
                cell = lv_price[i] - base
                if lv_side[i] == BID:
                    if bstamp[cell] == m:
                        skip[i] = True
                    bstamp[cell] = m
                else:
                    if astamp[cell] == m:
                        skip[i] = True
                    astamp[cell] = m
        pos = _put_int(buf, pos, msg_recv_ns[m])
        buf[pos] = 32
        buf[pos + 1] = 68
        buf[pos + 2] = 32
        pos = _put_bytes(buf, pos + 3, head)
        pos = _put_int(buf, pos, ev_e_ms[hi_ev])
        pos = _put_bytes(buf, pos, mid)
        pos = _put_int(buf, pos, ev_first[lo_ev])
        pos = _put_bytes(buf, pos, _U_KEY)
        pos = _put_int(buf, pos, ev_last[hi_ev])
        pos = _put_bytes(buf, pos, _B_OPEN)
        pos = _put_levels(buf, pos, BID, lo, hi, lv_side, lv_price, lv_qty, skip)
        pos = _put_bytes(buf, pos, _A_OPEN)
        pos = _put_levels(buf, pos, ASK, lo, hi, lv_side, lv_price, lv_qty, skip)
        pos = _put_bytes(buf, pos, _END_LINE)
        line_off[m + 1] = pos
        if hi_ev > lo_ev:
            for i in range(lo, hi):
                skip[i] = False
    return pos


@nb.njit(cache=True)
def encode_snapshot(
    buf: np.ndarray,
    last_id: np.int64,
    lo: int,
    hi: int,
    s_side: np.ndarray,
    s_price: np.ndarray,
    s_qty: np.ndarray,
) -> int:
    """``{"lastUpdateId":N,"bids":[...],"asks":[...]}`` (Binance spot REST body) into ``buf``."""
    pos = _put_bytes(buf, 0, _SNAP_HEAD)
    pos = _put_int(buf, pos, last_id)
    pos = _put_bytes(buf, pos, _SNAP_BIDS)
    skip = np.zeros(s_side.shape[0], np.bool_)
    pos = _put_levels(buf, pos, BID, lo, hi, s_side, s_price, s_qty, skip)
    pos = _put_bytes(buf, pos, _SNAP_ASKS)
    pos = _put_levels(buf, pos, ASK, lo, hi, s_side, s_price, s_qty, skip)
    buf[pos] = 93
    buf[pos + 1] = 125
    return pos + 2
