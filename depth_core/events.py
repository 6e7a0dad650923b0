"""Parse raw objects (lines of Binance frames) into typed columns, fast and without losing a line.

Why a compiled parser: a BTCUSDT day is ~1.5 GB of depth JSON per stream. Generic JSON decoders here run at
30-50 MB/s (polars ``json_decode``, pyarrow, orjson + Python objects), far from the 90 s budget. Binance's
frames are simple and regular, so a numba scanner reads them at hundreds of MB/s straight from the
decompressed bytes into numpy columns. Anything it does not accept (escapes, odd numbers, bad JSON) goes
to a slow path (orjson + ``float``) that either parses it or quarantines it with a reason: the fast path only
ever *declines*, so correctness never depends on it.

Prices and quantities: a decimal string ``"61837.63000000"`` is read as the integer mantissa 6183763000000
and 8 decimals, and the float is ``mantissa / 10**8``; IEEE division of two exact integers is correctly
rounded, so the float64 is the nearest double to the decimal and formatting it with 8 decimals gives the
string back exactly (mantissas < 2**53; larger ones take the slow path).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import orjson
import polars as pl

from depth_core.raw_format import RawObjectContent, decode_lines

#: Line kinds as the byte the raw line carries (``raw_format.LineKind``: depth frame, bookTicker frame,
#: REST snapshot, collector note).
KIND_DEPTH, KIND_BOOK_TICKER, KIND_SNAPSHOT, KIND_META = ord("D"), ord("B"), ord("S"), ord("M")

#: Presence flags of a parsed frame's fields (one bit each in the scanner's ``flags``): ``E`` event time,
#: ``T`` transaction time, ``U`` first and ``u`` last update id, ``pu`` previous ``u`` (usdm),
#: ``lastUpdateId`` (snapshots), the ``b``/``bids`` and ``a``/``asks`` arrays, ``s`` symbol, ``e`` event type.
F_E, F_T, F_U, F_u, F_PU, F_L, F_B, F_A, F_S, F_EV = 1, 2, 4, 8, 16, 32, 64, 128, 256, 512
#: ``s`` is the line's symbol; ``e`` is ``depthUpdate``.
F_SYM_OK, F_EV_DEPTH = 1024, 2048
#: bookTicker fields (decimal strings): best bid ``b`` and its qty ``B``, best ask ``a`` and its qty ``A``.
F_BT_B, F_BT_BQ, F_BT_A, F_BT_AQ = 4096, 8192, 16384, 32768
#: All four bookTicker fields.
F_BT_ALL = F_BT_B | F_BT_BQ | F_BT_A | F_BT_AQ
#: The bookTicker fields by slot (the compiled scanner's ``fl`` columns, flag ``F_BT_B << slot``;
#: the slow path).
BT_KEYS = ("b", "B", "a", "A")

#: Slots of a frame's integer fields: a row of the compiled scanner's ``ints`` and the slow path's
#: ``SlowFrame.ints`` alike (``E``, ``T``, ``U``, ``u``, ``pu``, ``lastUpdateId``).
I_E, I_T, I_U, I_u, I_PU, I_LAST = 0, 1, 2, 3, 4, 5
#: The JSON key of each slot, in slot order (what the slow path reads).
INT_KEYS = ("E", "T", "U", "u", "pu", "lastUpdateId")
N_INTS = len(INT_KEYS)

_POW10 = np.array([10.0**i for i in range(23)], dtype=np.float64)
_MANT_LIMIT = 1 << 53

# ------------------------------------------------------------------------------------------------ lines


@numba.njit(cache=True, nogil=True)
def _split_lines(
    buf: np.ndarray, obj_starts: np.ndarray, nl: np.ndarray, obj_layout: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Split a buffer of concatenated decompressed objects into lines.

    Layout 1 lines are ``<ns> <kind> <text>``, layout 2 lines ``<ns> <kind> <SYMBOL> <text>`` (``obj_layout``
    per object). ``nl``: positions of every LF (found by numpy at memchr speed). Returns per non-empty line:
    object index, line number (1-based, within its object), receive ns, kind byte, text start, text end,
    symbol field start and end (-1 on layout 1 lines), ok (False = the header did not parse; Python finds
    the reason). Mirrors ``raw_format.decode_lines``: split on LF, 3 (4) space-separated fields, ns = at most
    19 ASCII digits, symbol = 2-30 of ``[A-Z0-9]`` or ``-`` (stream-wide, collector notes only).
    """
    n = buf.shape[0]
    n_obj = obj_starts.shape[0]
    cap = nl.shape[0] + n_obj + 1
    obj = np.empty(cap, np.int32)
    lno = np.empty(cap, np.int64)
    ns = np.empty(cap, np.int64)
    kind = np.empty(cap, np.uint8)
    ts = np.empty(cap, np.int64)
    te = np.empty(cap, np.int64)
    ss = np.empty(cap, np.int64)
    se = np.empty(cap, np.int64)
    ok = np.empty(cap, np.bool_)
    k = 0
    j = 0  # index into nl
    for o in range(n_obj):
        p = obj_starts[o]
        obj_end = obj_starts[o + 1] if o + 1 < n_obj else n
        v2 = obj_layout[o] == 2
        line_no = 0
        while j < nl.shape[0] and nl[j] < p:
            j += 1
        while p < obj_end:
            if j < nl.shape[0] and nl[j] < obj_end:
                e = nl[j]
                j += 1
            else:
                e = obj_end
            line_no += 1
            if e > p:
                good = True
                q = p
                v = 0
                while q < e and buf[q] != 32:
                    c = buf[q]
                    if c < 48 or c > 57:
                        good = False
                    else:
                        v = v * 10 + (c - 48)
                    q += 1
                if q == p or q - p > 19 or q >= e:
                    good = False
                kc = 0
                text_start = e
                sym_s = -1
                sym_e = -1
                if good:
                    r = q + 1
                    if r < e and r + 1 < e and buf[r + 1] == 32:
                        kc = buf[r]
                        if kc != 68 and kc != 66 and kc != 83 and kc != 77:
                            good = False
                        text_start = r + 2
                    else:
                        good = False
                if good and v2:
                    x = text_start
                    bad_char = False
                    while x < e and buf[x] != 32:
                        c = buf[x]
                        if not ((48 <= c <= 57) or (65 <= c <= 90)):
                            bad_char = True
                        x += 1
                    width = x - text_start
                    if x >= e:
                        good = False  # fewer than 4 fields
                    elif width == 1 and buf[text_start] == 45:
                        if kc != 77:
                            good = False  # stream-wide line that is not a note
                    elif bad_char or width < 2 or width > 30:
                        good = False
                    if good:
                        sym_s = text_start
                        sym_e = x
                        text_start = x + 1
                obj[k] = o
                lno[k] = line_no
                ns[k] = v if good else 0
                kind[k] = kc if good else 0
                ts[k] = text_start if good else p
                te[k] = e
                ss[k] = sym_s
                se[k] = sym_e
                ok[k] = good
                k += 1
            p = e + 1
    return obj[:k], lno[:k], ns[:k], kind[:k], ts[:k], te[:k], ss[:k], se[:k], ok[:k]


@numba.njit(cache=True, nogil=True)
def _span_hashes(buf: np.ndarray, ss: np.ndarray, se: np.ndarray) -> np.ndarray:
    """FNV-1a of each symbol field (-1 spans hash to 0): groups lines by symbol without Python objects."""
    out = np.zeros(ss.shape[0], np.int64)
    for i in range(ss.shape[0]):
        if ss[i] < 0:
            continue
        h = np.uint64(14695981039346656037)
        for q in range(ss[i], se[i]):
            h = (h ^ np.uint64(buf[q])) * np.uint64(1099511628211)
        out[i] = np.int64(h)
    return out


@numba.njit(cache=True, nogil=True)
def _spans_equal(buf: np.ndarray, ss: np.ndarray, se: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Whether each span's bytes equal those of the span ``ref[i]`` (guards the hash grouping)."""
    out = np.ones(ss.shape[0], np.bool_)
    for i in range(ss.shape[0]):
        r = ref[i]
        if ss[i] < 0 or r == i:
            continue
        w = se[i] - ss[i]
        if w != se[r] - ss[r]:
            out[i] = False
            continue
        for q in range(w):
            if buf[ss[i] + q] != buf[ss[r] + q]:
                out[i] = False
                break
    return out


@numba.njit(cache=True, nogil=True)
def symbol_decimal_counts(sym: np.ndarray, dec: np.ndarray, n_sym: int) -> np.ndarray:
    """Level rows per (symbol, decimals) of one batch: ``out[s, d]``, decimals clipped to 0..63; ``sym``
    empty: every row is of symbol 0. One pass with no temporaries (a numpy bincount needed two 8-byte
    copies of every row)."""
    out = np.zeros((n_sym, 64), np.int64)
    one = sym.shape[0] == 0
    for i in range(dec.shape[0]):
        d = dec[i]
        out[0 if one else sym[i], 0 if d < 0 else (63 if d > 63 else d)] += 1
    return out


# ------------------------------------------------------------------------------------------------ JSON


@numba.njit(cache=True, nogil=True, inline="always")
def _ws(buf: np.ndarray, p: int, end: int) -> int:
    while p < end and (buf[p] == 32 or buf[p] == 9 or buf[p] == 10 or buf[p] == 13):
        p += 1
    return p


@numba.njit(cache=True, nogil=True)
def _string_span(buf: np.ndarray, p: int, end: int) -> tuple[int, int, int, bool]:
    """A string without escapes at p: (start, stop, position after, ok)."""
    if p >= end or buf[p] != 34:
        return 0, 0, p, False
    s = p + 1
    q = s
    while q < end and buf[q] != 34:
        if buf[q] == 92 or buf[q] < 32:
            return 0, 0, q, False
        q += 1
    if q >= end:
        return 0, 0, q, False
    return s, q, q + 1, True


@numba.njit(cache=True, nogil=True)
def _int(buf: np.ndarray, p: int, end: int) -> tuple[int, int, bool]:
    neg = False
    if p < end and buf[p] == 45:
        neg = True
        p += 1
    s = p
    v = 0
    while p < end and 48 <= buf[p] <= 57:
        if p - s >= 18:
            return 0, p, False
        v = v * 10 + (buf[p] - 48)
        p += 1
    if p == s or (p - s > 1 and buf[s] == 48):
        return 0, p, False
    if p < end and (buf[p] == 46 or buf[p] == 101 or buf[p] == 69):
        return 0, p, False
    return (-v if neg else v), p, True


@numba.njit(cache=True, nogil=True)
def _decimal(buf: np.ndarray, p: int, end: int) -> tuple[float, int, int, bool]:
    """A quoted plain decimal ``"123.4500"``: (value, decimals, position after, ok)."""
    if p >= end or buf[p] != 34:
        return 0.0, 0, p, False
    p += 1
    m = 0
    digits = 0
    dec = -1
    while p < end and buf[p] != 34:
        c = buf[p]
        if 48 <= c <= 57:
            m = m * 10 + (c - 48)
            digits += 1
            if dec >= 0:
                dec += 1
            if m >= _MANT_LIMIT:
                return 0.0, 0, p, False
        elif c == 46 and dec < 0 and digits > 0:
            dec = 0
        else:
            return 0.0, 0, p, False
        p += 1
    if p >= end or digits == 0 or dec == 0 or dec > 22:
        return 0.0, 0, p, False
    if dec < 0:
        dec = 0
    return m / _POW10[dec], dec, p + 1, True


@numba.njit(cache=True, nogil=True)
def _skip_value(buf: np.ndarray, p: int, end: int) -> tuple[int, bool]:
    """Skip any JSON value (used for fields we do not read)."""
    p = _ws(buf, p, end)
    if p >= end:
        return p, False
    c = buf[p]
    if c == 34:
        q = p + 1
        while q < end and buf[q] != 34:
            if buf[q] == 92:
                q += 1
            q += 1
        return q + 1, q < end
    if c == 91 or c == 123:
        depth = 0
        q = p
        while q < end:
            d = buf[q]
            if d == 34:
                q += 1
                while q < end and buf[q] != 34:
                    if buf[q] == 92:
                        q += 1
                    q += 1
            elif d == 91 or d == 123:
                depth += 1
            elif d == 93 or d == 125:
                depth -= 1
                if depth == 0:
                    return q + 1, True
            q += 1
        return q, False
    q = p
    while q < end and buf[q] != 44 and buf[q] != 125 and buf[q] != 93 and buf[q] != 32:
        q += 1
    return q, q > p


@numba.njit(cache=True, nogil=True)
def _mix(x: np.int64) -> np.int64:
    x = (x ^ (x >> 31)) * np.int64(-7046029254386353131)
    x = (x ^ (x >> 29)) * np.int64(-4658895280553007687)
    return x ^ (x >> 32)


@numba.njit(cache=True, nogil=True)
def _levels(
    buf: np.ndarray,
    p: int,
    end: int,
    is_bid: bool,
    line: int,
    lv_line: np.ndarray,
    lv_bid: np.ndarray,
    lv_px: np.ndarray,
    lv_qty: np.ndarray,
    lv_pd: np.ndarray,
    lv_qd: np.ndarray,
    k: int,
    scratch: np.ndarray,
    scratch_i: np.ndarray,
) -> tuple[int, int, Any, bool]:
    """``[["p","q"],...]`` into the level columns from row k: (position after, new k, hash, ok)."""
    h = np.int64(0)
    if p >= end or buf[p] != 91:
        return p, k, h, False
    p = _ws(buf, p + 1, end)
    if p < end and buf[p] == 93:
        return p + 1, k, h, True
    while True:
        if p >= end or buf[p] != 91 or k >= lv_px.shape[0]:
            return p, k, h, False
        px, pd, p, ok = _decimal(buf, _ws(buf, p + 1, end), end)
        if not ok:
            return p, k, h, False
        p = _ws(buf, p, end)
        if p >= end or buf[p] != 44:
            return p, k, h, False
        q, qd, p, ok = _decimal(buf, _ws(buf, p + 1, end), end)
        if not ok:
            return p, k, h, False
        p = _ws(buf, p, end)
        if p >= end or buf[p] != 93:
            return p, k, h, False
        lv_line[k] = line
        lv_bid[k] = is_bid
        lv_px[k] = px
        lv_qty[k] = q
        lv_pd[k] = pd
        lv_qd[k] = qd
        scratch[0] = px
        a = scratch_i[0]
        scratch[0] = q
        b = scratch_i[0]
        h += _mix(_mix(a) ^ (b * np.int64(31)) ^ np.int64(1 if is_bid else 2))
        k += 1
        p = _ws(buf, p + 1, end)
        if p < end and buf[p] == 44:
            p = _ws(buf, p + 1, end)
            continue
        if p < end and buf[p] == 93:
            return p + 1, k, h, True
        return p, k, h, False


@numba.njit(cache=True, nogil=True)
def _key_is(buf: np.ndarray, s: int, e: int, lit: np.ndarray) -> bool:
    if e - s != lit.shape[0]:
        return False
    for i in range(lit.shape[0]):  # noqa: SIM110 - a plain loop compiles in numba
        if buf[s + i] != lit[i]:
            return False
    return True


_K_STREAM = np.frombuffer(b"stream", np.uint8)
_K_DATA = np.frombuffer(b"data", np.uint8)
_K_BIDS = np.frombuffer(b"bids", np.uint8)
_K_ASKS = np.frombuffer(b"asks", np.uint8)
_K_LAST = np.frombuffer(b"lastUpdateId", np.uint8)
_K_PU = np.frombuffer(b"pu", np.uint8)
_V_DEPTH = np.frombuffer(b"depthUpdate", np.uint8)


@numba.njit(cache=True, nogil=True)
def _parse_one(
    buf: np.ndarray,
    p: int,
    end: int,
    sym: np.ndarray,
    line: int,
    ints: np.ndarray,
    fl: np.ndarray,
    lv_line: np.ndarray,
    lv_bid: np.ndarray,
    lv_px: np.ndarray,
    lv_qty: np.ndarray,
    lv_pd: np.ndarray,
    lv_qd: np.ndarray,
    k0: int,
    scratch: np.ndarray,
    scratch_i: np.ndarray,
) -> tuple[int, int, Any, bool]:
    """One frame (depth envelope, bare depth event or REST snapshot): (flags, new k, levels hash, ok).

    ``ints`` receives E, T, U, u, pu, lastUpdateId; ``fl`` a bookTicker's b, B, a, A.
    """
    k = k0
    flags = 0
    h = np.int64(0)
    p = _ws(buf, p, end)
    if p >= end or buf[p] != 123:
        return 0, k0, h, False
    p = _ws(buf, p + 1, end)
    level = 1
    if p < end and buf[p] == 125:
        p += 1
        level = 0
    while level > 0:
        ks, ke, p, ok = _string_span(buf, _ws(buf, p, end), end)
        if not ok:
            return 0, k0, h, False
        p = _ws(buf, p, end)
        if p >= end or buf[p] != 58:
            return 0, k0, h, False
        p = _ws(buf, p + 1, end)
        klen = ke - ks
        c0 = buf[ks] if klen > 0 else 0
        entered = False
        if klen == 1:
            if c0 == 69 or c0 == 84 or c0 == 85 or c0 == 117:  # E T U u
                v, p, ok = _int(buf, p, end)
                if not ok:
                    return 0, k0, h, False
                if c0 == 69:
                    ints[I_E] = v
                    flags |= F_E
                elif c0 == 84:
                    ints[I_T] = v
                    flags |= F_T
                elif c0 == 85:
                    ints[I_U] = v
                    flags |= F_U
                else:
                    ints[I_u] = v
                    flags |= F_u
            elif (c0 == 98 or c0 == 97 or c0 == 66 or c0 == 65) and p < end and buf[p] == 34:  # bookTicker
                x, _d, p, ok = _decimal(buf, p, end)
                if not ok:
                    return 0, k0, h, False
                slot = 0 if c0 == 98 else (1 if c0 == 66 else (2 if c0 == 97 else 3))  # b B a A: BT_KEYS
                fl[slot] = x
                flags |= F_BT_B << slot
            elif c0 == 98 or c0 == 97:  # b a
                p, k, hh, ok = _levels(
                    buf,
                    p,
                    end,
                    c0 == 98,
                    line,
                    lv_line,
                    lv_bid,
                    lv_px,
                    lv_qty,
                    lv_pd,
                    lv_qd,
                    k,
                    scratch,
                    scratch_i,
                )
                if not ok:
                    return 0, k0, h, False
                h += hh
                flags |= F_B if c0 == 98 else F_A
            elif c0 == 115:  # s
                s, e, p, ok = _string_span(buf, p, end)
                if not ok:
                    return 0, k0, h, False
                flags |= F_S
                if _key_is(buf, s, e, sym):
                    flags |= F_SYM_OK
            elif c0 == 101:  # e
                s, e, p, ok = _string_span(buf, p, end)
                if not ok:
                    return 0, k0, h, False
                flags |= F_EV
                if _key_is(buf, s, e, _V_DEPTH):
                    flags |= F_EV_DEPTH
            else:
                p, ok = _skip_value(buf, p, end)
                if not ok:
                    return 0, k0, h, False
        elif _key_is(buf, ks, ke, _K_PU):
            v, p, ok = _int(buf, p, end)
            if not ok:
                return 0, k0, h, False
            ints[I_PU] = v
            flags |= F_PU
        elif _key_is(buf, ks, ke, _K_LAST):
            v, p, ok = _int(buf, p, end)
            if not ok:
                return 0, k0, h, False
            ints[I_LAST] = v
            flags |= F_L
        elif _key_is(buf, ks, ke, _K_BIDS) or _key_is(buf, ks, ke, _K_ASKS):
            bid = buf[ks] == 98
            p, k, hh, ok = _levels(
                buf, p, end, bid, line, lv_line, lv_bid, lv_px, lv_qty, lv_pd, lv_qd, k, scratch, scratch_i
            )
            if not ok:
                return 0, k0, h, False
            h += hh
            flags |= F_B if bid else F_A
        elif level == 1 and _key_is(buf, ks, ke, _K_DATA) and p < end and buf[p] == 123:
            level = 2
            p = _ws(buf, p + 1, end)
            entered = True
            if p < end and buf[p] == 125:
                p += 1
                level = 1
                entered = False
        else:
            p, ok = _skip_value(buf, p, end)
            if not ok:
                return 0, k0, h, False
        if entered:
            continue
        # after a value: ',' then a key, or '}' closing (maybe closing "data" then more keys)
        while True:
            p = _ws(buf, p, end)
            if p < end and buf[p] == 44:
                p += 1
                break
            if p < end and buf[p] == 125:
                p += 1
                level -= 1
                if level == 0:
                    break
                continue
            return 0, k0, h, False
    p = _ws(buf, p, end)
    if p != end:
        return 0, k0, h, False
    return flags, k, h, True


@numba.njit(cache=True, nogil=True)
def _parse_frames(
    buf: np.ndarray,
    ts: np.ndarray,
    te: np.ndarray,
    sym_buf: np.ndarray,
    sym_off: np.ndarray,
    fsym: np.ndarray,
    cap: int,
) -> tuple[np.ndarray, ...]:
    """Parse the frames at [ts[i], te[i]); levels go to flat columns tagged with the frame index.

    Frame i's expected symbol (checked against its ``s`` field) is
    ``sym_buf[sym_off[fsym[i]]:sym_off[fsym[i]+1]]``.
    """
    n = ts.shape[0]
    ints = np.zeros((n, N_INTS), np.int64)
    fl = np.zeros((n, 4), np.float64)
    flags = np.zeros(n, np.int32)
    ok = np.zeros(n, np.bool_)
    hashes = np.zeros(n, np.int64)
    lv_line = np.empty(cap, np.int64)
    lv_bid = np.empty(cap, np.bool_)
    lv_px = np.empty(cap, np.float64)
    lv_qty = np.empty(cap, np.float64)
    lv_pd = np.empty(cap, np.int8)
    lv_qd = np.empty(cap, np.int8)
    scratch = np.zeros(1, np.float64)
    scratch_i = scratch.view(np.int64)
    k = 0
    for i in range(n):
        sid = fsym[i]
        sym = sym_buf[sym_off[sid] : sym_off[sid + 1]] if sid >= 0 else sym_buf[:0]
        f, k2, h, good = _parse_one(
            buf,
            ts[i],
            te[i],
            sym,
            i,
            ints[i],
            fl[i],
            lv_line,
            lv_bid,
            lv_px,
            lv_qty,
            lv_pd,
            lv_qd,
            k,
            scratch,
            scratch_i,
        )
        if good:
            k = k2
            flags[i] = f
            hashes[i] = h
            ok[i] = True
    return ints, fl, flags, ok, hashes, lv_line[:k], lv_bid[:k], lv_px[:k], lv_qty[:k], lv_pd[:k], lv_qd[:k]


# ------------------------------------------------------------------------------------------------ slow path


class FrameError(ValueError):
    """A frame that cannot be used; the message is the quarantine reason."""


def _slow_decimal(value: object) -> tuple[float, int]:
    if not isinstance(value, str):
        raise FrameError(f"price/quantity {value!r} is not a decimal string")
    text = value.strip()
    body = text[1:] if text.startswith("-") else text
    whole, _, frac = body.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or text.startswith("-"):
        raise FrameError(f"price/quantity {value!r} is not a plain non-negative decimal")
    return float(text), len(frac)


def _slow_levels(rows: object, side: str) -> list[tuple[float, float, int, int]]:
    if not isinstance(rows, list):
        raise FrameError(f"{side} is not a list of [price, qty]")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 2:
            raise FrameError(f"{side} level {row!r} is not [price, qty]")
        px, pd = _slow_decimal(row[0])
        q, qd = _slow_decimal(row[1])
        out.append((px, q, pd, qd))
    return out


def _slow_int(obj: dict[str, object], key: str, required: bool) -> int | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise FrameError(f"missing field {key!r}")
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise FrameError(f"field {key!r} is not an integer: {v!r}")
    return v


@dataclass
class SlowFrame:
    """A frame parsed by the slow path (same meaning as the fast columns)."""

    ints: list[int | None]  # by slot: I_E, I_T, I_U, I_u, I_PU, I_LAST (INT_KEYS)
    bids: list[tuple[float, float, int, int]]
    asks: list[tuple[float, float, int, int]]
    symbol: str | None
    event_type: str | None


def slow_parse(text: bytes) -> SlowFrame:
    """Parse one frame with orjson; raises FrameError with the reason."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise FrameError("frame is not a JSON object")
    inner = obj.get("data")
    data: dict[str, object] = inner if isinstance(inner, dict) else obj
    ints = [_slow_int(data, key, False) for key in INT_KEYS]
    b = data.get("b", data.get("bids"))
    a = data.get("a", data.get("asks"))
    if b is None or a is None:
        raise FrameError("missing bids/asks (b/a) arrays" + _error_hint(text))
    sym = data.get("s")
    ev = data.get("e")
    return SlowFrame(
        ints,
        _slow_levels(b, "bids"),
        _slow_levels(a, "asks"),
        sym if isinstance(sym, str) else None,
        None if ev is None else str(ev),
    )


# ------------------------------------------------------------------------------------------------ chunks


@dataclass
class QuarantineEntry:
    object_index: int
    line_no: int
    receive_ns: int | None
    reason: str
    text: bytes
    sym: int = (
        -1
    )  # symbol id of the line (ParsedChunk.symbols); -1: not known (a v2 line whose header is bad)


SYM_COLUMN = "sym"  # the symbol id column of a chunk's events, snapshots and book tickers


@dataclass
class ParsedChunk:
    """Typed content of a batch of raw objects of one stream (one symbol per v1 object, many per v2 object).

    ``events``: one row per depth event (line order); ``levels``: one row per level, ``ev`` = row index
    in ``events`` ... see column lists below. Snapshots likewise (``snapshots`` + ``snapshot_levels``).
    ``events``, ``snapshots`` and ``book_tickers`` carry a ``sym`` column: the index of the line's symbol in
    ``symbols``.
    """

    events: pl.DataFrame
    levels: pl.DataFrame
    snapshots: pl.DataFrame
    snapshot_levels: pl.DataFrame
    book_tickers: pl.DataFrame
    meta: list[tuple[int, int, bytes, int]]  # (object index, receive ns, text, symbol id or -1: stream-wide)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    lines: int = 0
    symbols: list[str] = field(default_factory=list)  # symbol id -> symbol
    object_symbols: list[list[int]] = field(
        default_factory=list
    )  # per object: ids of the symbols its lines name


EVENT_SCHEMA: dict[str, pl.DataType] = {
    "obj": pl.Int32(),
    "line_no": pl.Int64(),
    "receive_ns": pl.Int64(),
    "E": pl.Int64(),
    "T": pl.Int64(),
    "U": pl.Int64(),
    "u": pl.Int64(),
    "pu": pl.Int64(),
    "n_levels": pl.Int32(),
    "levels_hash": pl.Int64(),
}
LEVEL_SCHEMA: dict[str, pl.DataType] = {
    "ev": pl.Int64(),
    "is_bid": pl.Boolean(),
    "price": pl.Float64(),
    "qty": pl.Float64(),
    "price_dec": pl.Int8(),
    "qty_dec": pl.Int8(),
}
SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {
    "obj": pl.Int32(),
    "line_no": pl.Int64(),
    "receive_ns": pl.Int64(),
    "E": pl.Int64(),
    "T": pl.Int64(),
    "last_update_id": pl.Int64(),
    "n_levels": pl.Int32(),
}
SNAPSHOT_LEVEL_SCHEMA: dict[str, pl.DataType] = {
    "snap": pl.Int64(),
    "is_bid": pl.Boolean(),
    "price": pl.Float64(),
    "qty": pl.Float64(),
    "price_dec": pl.Int8(),
    "qty_dec": pl.Int8(),
}
BOOK_TICKER_SCHEMA: dict[str, pl.DataType] = {
    "receive_ns": pl.Int64(),
    "u": pl.Int64(),
    "E": pl.Int64(),
    "bid_price": pl.Float64(),
    "bid_qty": pl.Float64(),
    "ask_price": pl.Float64(),
    "ask_qty": pl.Float64(),
}


def _header_reason(line: bytes, layout: int) -> str:
    probe = decode_lines(line, RawObjectContent(), layout)
    if probe.problems:
        return probe.problems[0][1]
    return "line header does not parse"


def _book_ticker(text: bytes, symbol: str) -> tuple[int, int | None, float, float, float, float]:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"invalid JSON: {exc}") from exc
    data = obj.get("data", obj) if isinstance(obj, dict) else None
    if not isinstance(data, dict):
        raise FrameError("bookTicker frame is not a JSON object")
    if data.get("s") not in (None, symbol):
        raise FrameError(f"bookTicker for symbol {data.get('s')!r}, expected {symbol}")
    u = _slow_int(data, "u", True)
    assert u is not None
    vals = [_slow_decimal(data.get(k))[0] for k in BT_KEYS]
    return u, _slow_int(data, "E", False), vals[0], vals[1], vals[2], vals[3]


_NEWLINE_WINDOW = 1 << 20


def newline_positions(buf: np.ndarray) -> np.ndarray:
    """Offsets of every ``\n`` in ``buf``: ``np.flatnonzero(buf == 10)`` a window at a time, so the boolean
    temporary is one reused megabyte, not a fresh array as large as the batch (tens of MB, page-faulted in and
    zeroed by the kernel on every batch: as much CPU as the comparison itself)."""
    if len(buf) <= _NEWLINE_WINDOW:
        return np.flatnonzero(buf == 10)
    hits = np.empty(_NEWLINE_WINDOW, np.bool_)
    out = []
    for at in range(0, len(buf), _NEWLINE_WINDOW):
        window = buf[at : at + _NEWLINE_WINDOW]
        found = hits[: len(window)]
        np.equal(window, 10, out=found)
        out.append(np.flatnonzero(found) + at)
    return np.concatenate(out)


def join_objects(datas: list[bytes]) -> tuple[bytes, np.ndarray]:
    """Concatenate decompressed objects; returns the bytes and where each object starts."""
    obj_starts = np.zeros(len(datas), np.int64)
    if datas:
        obj_starts[1:] = np.cumsum([len(d) for d in datas[:-1]])
    return b"".join(datas), obj_starts


@dataclass
class _Lines:
    """The split lines of a batch and the symbol each belongs to (shared by the per-kind parsers)."""

    joined: bytes
    buf: np.ndarray
    obj: np.ndarray
    lno: np.ndarray
    ns: np.ndarray
    ts: np.ndarray
    te: np.ndarray
    lsym: np.ndarray  # symbol id per line, -1 = stream-wide note or not known
    names: list[str]
    sym_buf: np.ndarray  # the symbol names, concatenated (for the compiled ``s`` check)
    sym_off: np.ndarray

    def text(self, i: int) -> bytes:
        """The bytes of line ``i``."""
        return self.joined[self.ts[i] : self.te[i]]

    def quarantined(self, i: int, reason: str, text: bytes) -> QuarantineEntry:
        """The quarantine entry of line ``i`` (a received frame: it has a receive time)."""
        return QuarantineEntry(
            int(self.obj[i]), int(self.lno[i]), int(self.ns[i]), reason, text, int(self.lsym[i])
        )


def _line_symbols(
    joined: bytes,
    buf: np.ndarray,
    obj: np.ndarray,
    ss: np.ndarray,
    se: np.ndarray,
    ok: np.ndarray,
    object_symbols: list[str | None],
) -> tuple[np.ndarray, list[str]]:
    """Symbol id of every line: a v1 object's key symbol; a v2 line's symbol field (grouped by a compiled
    hash, checked byte for byte); -1 for stream-wide notes and for v2 lines whose header did not parse."""
    names: list[str] = []
    index: dict[str, int] = {}

    def id_of(name: str) -> int:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        return index[name]

    obj_sym = np.array([-1 if s is None else id_of(s) for s in object_symbols], dtype=np.int32)
    lsym = obj_sym[obj] if len(obj) else np.zeros(0, np.int32)
    idx2 = np.flatnonzero(ok & (ss >= 0))
    if len(idx2):
        ss2, se2 = ss[idx2], se[idx2]
        _uniq, first, inv = np.unique(_span_hashes(buf, ss2, se2), return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        codes = np.array(
            [-1 if (t := joined[ss2[r] : se2[r]]) == b"-" else id_of(t.decode()) for r in first.tolist()],
            dtype=np.int32,
        )
        sym2 = codes[inv]
        for i in np.flatnonzero(~_spans_equal(buf, ss2, se2, first[inv])).tolist():  # a hash collision
            t = joined[ss2[i] : se2[i]]
            sym2[i] = -1 if t == b"-" else id_of(t.decode())
        lsym[idx2] = sym2
    return lsym.astype(np.int32), names


def parse_objects(
    datas: list[bytes] | tuple[bytes, np.ndarray],
    symbols: str | Sequence[str | None],
    only: Collection[str] | None = None,
) -> ParsedChunk:
    """Parse decompressed raw objects of one stream into typed columns; never raises for bad lines.

    ``datas``: the objects' texts, or what :func:`join_objects` made of them (so a helper thread can join).
    ``symbols``: per object, the symbol of a v1 object (from its key) or ``None`` for a v2 object (every line
    names its symbol); one string means every object is a v1 object of that symbol.
    ``only``: parse the lines of these symbols only (and lines that name none: stream-wide notes, bad
    headers); the others are skipped unparsed, though ``object_symbols`` still names every symbol an object
    holds.
    """
    quarantine: list[QuarantineEntry] = []
    joined, obj_starts = datas if isinstance(datas, tuple) else join_objects(datas)
    object_symbols: list[str | None] = (
        [symbols] * len(obj_starts) if isinstance(symbols, str) else list(symbols)
    )
    if len(object_symbols) != len(obj_starts):
        raise ValueError(f"{len(object_symbols)} object symbols for {len(obj_starts)} objects")
    layouts = np.array([1 if s is not None else 2 for s in object_symbols], dtype=np.uint8)
    buf = np.frombuffer(joined, np.uint8) if joined else np.zeros(0, np.uint8)
    obj, lno, ns, kind, ts, te, ss, se, ok = _split_lines(buf, obj_starts, newline_positions(buf), layouts)
    lsym, names = _line_symbols(joined, buf, obj, ss, se, ok, object_symbols)
    n_lines = len(obj)
    held = _held(obj, lsym, len(names), len(obj_starts))
    if only is not None:
        wanted = np.array([n in only for n in names] + [True], dtype=np.bool_)  # index -1: no symbol
        take = wanted[lsym]
        obj, lno, ns, kind, ts, te, ok, lsym = (a[take] for a in (obj, lno, ns, kind, ts, te, ok, lsym))
    for i in np.flatnonzero(~ok).tolist():
        line = joined[ts[i] : te[i]]
        quarantine.append(
            QuarantineEntry(
                int(obj[i]), int(lno[i]), None, _header_reason(line, int(layouts[obj[i]])), line, int(lsym[i])
            )
        )
    encoded = [n.encode() for n in names]
    sym_off = np.zeros(len(names) + 1, np.int64)
    sym_off[1:] = np.cumsum([len(b) for b in encoded])
    sym_buf = np.frombuffer(b"".join(encoded), np.uint8) if encoded and sym_off[-1] else np.zeros(0, np.uint8)
    lines = _Lines(joined, buf, obj, lno, ns, ts, te, lsym, names, sym_buf, sym_off)

    # depth events and snapshots share the compiled parser
    events, levels = _parse_kind(lines, ok & (kind == KIND_DEPTH), quarantine, snapshot=False)
    snaps, snap_levels = _parse_kind(lines, ok & (kind == KIND_SNAPSHOT), quarantine, snapshot=True)
    book_tickers = _parse_book_tickers(lines, ok & (kind == KIND_BOOK_TICKER), quarantine)
    meta = [
        (int(obj[i]), int(ns[i]), joined[ts[i] : te[i]], int(lsym[i]))
        for i in np.flatnonzero(ok & (kind == KIND_META)).tolist()
    ]
    return ParsedChunk(
        events, levels, snaps, snap_levels, book_tickers, meta, quarantine, n_lines, names, held
    )


def _held(obj: np.ndarray, lsym: np.ndarray, n_names: int, n_obj: int) -> list[list[int]]:
    """Per object, the ids of the symbols its lines name."""
    held: list[list[int]] = [[] for _ in range(n_obj)]
    named = lsym >= 0
    if named.any():
        pairs = np.unique(obj[named].astype(np.int64) * (n_names + 1) + lsym[named])
        for o, sid in zip((pairs // (n_names + 1)).tolist(), (pairs % (n_names + 1)).tolist(), strict=True):
            held[o].append(sid)
    return held


def _parse_book_tickers(lines: _Lines, sel: np.ndarray, quarantine: list[QuarantineEntry]) -> pl.DataFrame:
    """bookTicker frames: the compiled scanner, the slow path for what it declines."""
    ns, ts, te, lsym = lines.ns, lines.ts, lines.te, lines.lsym
    idx = np.flatnonzero(sel)
    schema = {**BOOK_TICKER_SCHEMA, SYM_COLUMN: pl.Int32()}
    if len(idx) == 0:
        return pl.DataFrame(schema=schema)
    ints, fl, flags, fast_ok, _h, *_lv = _parse_frames(
        lines.buf, ts[idx], te[idx], lines.sym_buf, lines.sym_off, lsym[idx], 0
    )
    usable = fast_ok & ((flags & (F_BT_ALL | F_u)) == (F_BT_ALL | F_u))
    usable &= ((flags & F_S) == 0) | ((flags & F_SYM_OK) != 0)
    keep = np.flatnonzero(usable)
    fast = pl.DataFrame(
        {
            "receive_ns": ns[idx[keep]],
            "u": ints[keep, I_u],
            "E": np.where((flags[keep] & F_E) != 0, ints[keep, I_E], np.iinfo(np.int64).min),
            "bid_price": fl[keep, 0],
            "bid_qty": fl[keep, 1],
            "ask_price": fl[keep, 2],
            "ask_qty": fl[keep, 3],
            SYM_COLUMN: lsym[idx[keep]],
        }
    ).with_columns(
        pl.when(pl.col("E") == np.iinfo(np.int64).min).then(None).otherwise(pl.col("E")).alias("E")
    )
    bt_rows = []
    for j in np.flatnonzero(~usable).tolist():
        i = int(idx[j])
        text = lines.text(i)
        try:
            bt_rows.append((int(ns[i]), *_book_ticker(text, lines.names[lsym[i]]), int(lsym[i])))
        except FrameError as exc:
            quarantine.append(lines.quarantined(i, f"bookTicker: {exc}", text))
    slow = pl.DataFrame(bt_rows, schema=schema, orient="row")
    return pl.concat([fast.select(list(schema)).cast(schema), slow])  # type: ignore[arg-type]


def _parse_kind(
    lines: _Lines, sel: np.ndarray, quarantine: list[QuarantineEntry], snapshot: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    obj, lno, ns, ts, te, lsym = lines.obj, lines.lno, lines.ns, lines.ts, lines.te, lines.lsym
    idx = np.flatnonzero(sel)
    head_schema = {**(SNAPSHOT_SCHEMA if snapshot else EVENT_SCHEMA), SYM_COLUMN: pl.Int32()}
    lv_schema = SNAPSHOT_LEVEL_SCHEMA if snapshot else LEVEL_SCHEMA
    if len(idx) == 0:
        return pl.DataFrame(schema=head_schema), pl.DataFrame(schema=lv_schema)
    s, e = ts[idx], te[idx]
    # capacity: every level has at least 8 bytes ('["1","1"]')
    cap = int((e - s).sum() // 8) + 16
    ints, _fl, flags, fast_ok, hashes, lv_line, lv_bid, lv_px, lv_qty, lv_pd, lv_qd = _parse_frames(
        lines.buf, s, e, lines.sym_buf, lines.sym_off, lsym[idx], cap
    )
    # which frames are usable
    if snapshot:
        need = F_L | F_B | F_A
        usable = fast_ok & ((flags & need) == need)
    else:
        need = F_U | F_u | F_B | F_A | F_E
        usable = fast_ok & ((flags & need) == need)
        usable &= ((flags & F_EV) == 0) | ((flags & F_EV_DEPTH) != 0)
        usable &= ((flags & F_S) == 0) | ((flags & F_SYM_OK) != 0)
    # slow path for everything the fast path declined or found incomplete
    extra_head: list[tuple[int, list[int | None], int]] = []  # (frame j, ints, hash)
    extra_lv: list[tuple[int, bool, float, float, int, int]] = []
    for j in np.flatnonzero(~usable).tolist():
        i = int(idx[j])
        text = lines.text(i)
        try:
            fr = slow_parse(text)
            vals = fr.ints
            if snapshot:
                if vals[I_LAST] is None:
                    raise FrameError("snapshot response without lastUpdateId" + _error_hint(text))
            else:
                if fr.event_type is not None and fr.event_type != "depthUpdate":
                    raise FrameError(f"event type {fr.event_type!r} is not depthUpdate")
                symbol = lines.names[lsym[i]]
                if fr.symbol is not None and fr.symbol != symbol:
                    raise FrameError(f"event for symbol {fr.symbol!r}, expected {symbol}")
                for name, v in (("U", vals[I_U]), ("u", vals[I_u]), ("E", vals[I_E])):
                    if v is None:
                        raise FrameError(f"missing field {name!r}")
                first, last = vals[I_U], vals[I_u]
                assert first is not None and last is not None
                if first > last:
                    raise FrameError(f"U {first} > u {last}")
            h = 0
            for bid, rows in ((True, fr.bids), (False, fr.asks)):
                for px, q, pd, qd in rows:
                    extra_lv.append((j, bid, px, q, pd, qd))
                    h += _py_level_hash(px, q, bid)
            extra_head.append((j, vals, _wrap64(h)))
        except FrameError as exc:
            quarantine.append(lines.quarantined(i, str(exc), text))
    if not snapshot:
        # U > u is malformed even when it parsed
        bad_order = usable & (ints[:, I_U] > ints[:, I_u])
        for j in np.flatnonzero(bad_order).tolist():
            i = int(idx[j])
            quarantine.append(lines.quarantined(i, f"U {ints[j, I_U]} > u {ints[j, I_u]}", lines.text(i)))
        usable &= ~bad_order
    # assemble in numpy: frames kept (fast or slow path) in line order; levels point at their row
    extra_j = np.array([x[0] for x in extra_head], dtype=np.int64)
    kept = usable.copy()
    kept[extra_j] = True
    row_of = np.cumsum(kept) - 1  # frame j -> output row
    keep = np.flatnonzero(kept)
    n_rows = len(keep)
    big = np.iinfo(np.int64).min
    E = np.where((flags & F_E) != 0, ints[:, I_E], big)
    T = np.where((flags & F_T) != 0, ints[:, I_T], big)
    PU = np.where((flags & F_PU) != 0, ints[:, I_PU], big)
    U = (ints[:, I_LAST] if snapshot else ints[:, I_U]).copy()
    u = (ints[:, I_LAST] if snapshot else ints[:, I_u]).copy()
    H = hashes.copy()
    for j, vals, h in extra_head:
        E[j] = big if vals[I_E] is None else vals[I_E]
        T[j] = big if vals[I_T] is None else vals[I_T]
        PU[j] = big if vals[I_PU] is None else vals[I_PU]
        U[j] = (vals[I_LAST] if snapshot else vals[I_U]) or 0
        u[j] = (vals[I_LAST] if snapshot else vals[I_u]) or 0
        H[j] = h
    lv_keep = usable[lv_line]
    lv_row = row_of[lv_line[lv_keep]]
    cols = {
        "is_bid": lv_bid[lv_keep],
        "price": lv_px[lv_keep],
        "qty": lv_qty[lv_keep],
        "price_dec": lv_pd[lv_keep],
        "qty_dec": lv_qd[lv_keep],
    }
    if extra_lv:
        x_row = row_of[np.array([x[0] for x in extra_lv], dtype=np.int64)]
        order = np.argsort(np.concatenate([lv_row, x_row]), kind="stable")
        lv_row = np.concatenate([lv_row, x_row])[order]
        extra_cols = {
            "is_bid": np.array([x[1] for x in extra_lv], dtype=np.bool_),
            "price": np.array([x[2] for x in extra_lv], dtype=np.float64),
            "qty": np.array([x[3] for x in extra_lv], dtype=np.float64),
            "price_dec": np.array([x[4] for x in extra_lv], dtype=np.int8),
            "qty_dec": np.array([x[5] for x in extra_lv], dtype=np.int8),
        }
        cols = {k: np.concatenate([v, extra_cols[k]])[order] for k, v in cols.items()}
    n_levels = np.bincount(lv_row, minlength=n_rows).astype(np.int32) if n_rows else np.zeros(0, np.int32)
    key = "snap" if snapshot else "ev"
    lv = pl.DataFrame({key: lv_row.astype(np.int64, copy=False), **cols})  # int64 already: no copy
    nullable = {"E": E[keep], "T": T[keep], "pu": PU[keep]}
    head = pl.DataFrame(
        {
            "obj": obj[idx[keep]].astype(np.int32, copy=False),
            "line_no": lno[idx[keep]],
            "receive_ns": ns[idx[keep]],
            **nullable,
            "U": U[keep],
            "u": u[keep],
            "n_levels": n_levels,
            "levels_hash": H[keep],
            SYM_COLUMN: lsym[idx[keep]],
        }
    ).with_columns(pl.when(pl.col(c) == big).then(None).otherwise(pl.col(c)).alias(c) for c in nullable)
    if snapshot:
        head = head.select(
            "obj",
            "line_no",
            "receive_ns",
            "E",
            "T",
            pl.col("U").alias("last_update_id"),
            "n_levels",
            SYM_COLUMN,
        )
    else:
        head = head.select(list(head_schema))
    return head.cast(head_schema), lv.cast(lv_schema)  # type: ignore[arg-type]


def _error_hint(text: bytes) -> str:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(obj, dict) and "code" in obj:
        return f" (code {obj.get('code')}: {str(obj.get('msg'))[:100]})"
    return ""


def _wrap64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _py_level_hash(px: float, q: float, bid: bool) -> int:
    """The compiled ``_mix`` hash of one level, in Python (slow-path frames must hash the same)."""
    a = int(np.float64(px).view(np.int64))
    b = int(np.float64(q).view(np.int64))
    return int(_mix_py(_wrap64(_mix_py(a) ^ _wrap64(b * 31) ^ (1 if bid else 2))))


def _mix_py(x: int) -> int:
    x = _wrap64(x)
    x = _wrap64((x ^ (x >> 31)) * -7046029254386353131)
    x = _wrap64((x ^ (x >> 29)) * -4658895280553007687)
    return _wrap64(x ^ (x >> 32))
