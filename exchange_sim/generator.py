"""Deterministic generator of a Binance-like order book and its canonical diff-depth update sequence.

The canonical sequence is made of *fine-grained* level changes, each tagged with the update id it
belongs to. A canonical event groups the changes of one tick (one ``event_interval_ms``); a server
connection may regroup them differently (see ``exchange_sim.batching``), which is how two
connections get different partials ``[U; u]`` of one id sequence while the book at every id stays
the same. Everything here is pure Python, needs no server and is deterministic given a seed, so
benchmarks can generate a real-sized day of events directly.

Prices and quantities are integers (price in ticks, quantity in lots) and are formatted as
fixed-decimal strings exactly like Binance prints them (``"61837.63000000"``).
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

BID = 0
ASK = 1

# Level changes per event are log-normal: mean ~40, p99 ~380 like real spot BTCUSDT @depth@100ms.
_CHANGES_MU = 2.8
_CHANGES_SIGMA = 1.6
_MAX_CHANGES = 1500


@dataclass(frozen=True)
class SymbolSpec:
    """How one instrument looks: tick and lot sizes, string decimals, starting price and depth."""

    symbol: str
    tick_decimals: int = 2  # price step 10**-tick_decimals
    price_str_decimals: int = 8  # digits after the point in the price string
    lot_decimals: int = 5  # quantity step 10**-lot_decimals
    qty_str_decimals: int = 8
    start_price: float = 60000.0
    typical_qty: float = 0.3  # median level quantity
    first_update_id: int = 50_000_000_000
    initial_levels: int = 1200  # levels per side at start
    max_offset_ticks: int = 400_000  # how far from the top a change may land

    @property
    def tick_scale(self) -> int:
        return 10**self.tick_decimals

    @property
    def lot_scale(self) -> int:
        return 10**self.lot_decimals


_KNOWN_SPOT = {
    "BTCUSDT": dict(start_price=60000.0, typical_qty=0.05),
    "ETHUSDT": dict(start_price=2600.0, typical_qty=0.8, lot_decimals=4, first_update_id=38_000_000_000),
    "BNBUSDT": dict(start_price=520.0, typical_qty=2.0, lot_decimals=3, first_update_id=8_000_000_000),
}
_KNOWN_USDM = {
    "BTCUSDT": dict(
        start_price=60000.0,
        tick_decimals=1,
        price_str_decimals=2,
        lot_decimals=3,
        qty_str_decimals=3,
        typical_qty=0.2,
        first_update_id=5_123_000_000_000,
    ),
    "ETHUSDT": dict(
        start_price=2600.0,
        tick_decimals=2,
        price_str_decimals=2,
        lot_decimals=3,
        qty_str_decimals=3,
        typical_qty=3.0,
        first_update_id=4_100_000_000_000,
    ),
}


def spec_for(symbol: str, market: str = "spot") -> SymbolSpec:
    """A realistic spec for ``symbol``: known majors get their real tick sizes; others a stable made-up
    one."""
    symbol = symbol.upper()
    known = (_KNOWN_USDM if market == "usdm" else _KNOWN_SPOT).get(symbol)
    if known is not None:
        return SymbolSpec(symbol=symbol, **known)  # type: ignore[arg-type]
    h = zlib.crc32(symbol.encode())
    price = 0.5 + (h % 20000) / 10.0
    if market == "usdm":
        return SymbolSpec(
            symbol=symbol,
            tick_decimals=3,
            price_str_decimals=3,
            lot_decimals=1,
            qty_str_decimals=1,
            start_price=price,
            typical_qty=50.0,
            first_update_id=1_000_000_000_000 + (h % 10**9) * 100,
        )
    return SymbolSpec(
        symbol=symbol,
        tick_decimals=4,
        price_str_decimals=8,
        lot_decimals=2,
        qty_str_decimals=8,
        start_price=price,
        typical_qty=40.0,
        first_update_id=1_000_000_000 + (h % 10**9),
    )


@dataclass(slots=True)
class CanonicalEvent:
    """One tick of the canonical sequence: fine-grained changes, each with its update id (sorted)."""

    symbol: str
    first_id: int  # U
    last_id: int  # u
    event_time_ms: int  # E
    transaction_time_ms: int  # T (usdm)
    ids: list[int] = field(default_factory=list)
    sides: list[int] = field(default_factory=list)
    prices: list[int] = field(default_factory=list)  # ticks
    qtys: list[int] = field(default_factory=list)  # lots; 0 removes the level

    def __len__(self) -> int:
        return len(self.ids)


class Formatter:
    """Integer ticks/lots to Binance's fixed-decimal strings, with a cache for repeated prices."""

    def __init__(self, spec: SymbolSpec) -> None:
        self.spec = spec
        self._price_cache: dict[int, str] = {}
        self._qty_cache: dict[int, str] = {}
        self._price_pad = "0" * (spec.price_str_decimals - spec.tick_decimals)
        self._qty_pad = "0" * (spec.qty_str_decimals - spec.lot_decimals)

    def price(self, ticks: int) -> str:
        s = self._price_cache.get(ticks)
        if s is None:
            s = _fixed_str(ticks, self.spec.tick_decimals, self.spec.tick_scale, self._price_pad)
            if len(self._price_cache) > 500_000:
                self._price_cache.clear()
            self._price_cache[ticks] = s
        return s

    def qty(self, lots: int) -> str:
        s = self._qty_cache.get(lots)
        if s is None:
            s = _fixed_str(lots, self.spec.lot_decimals, self.spec.lot_scale, self._qty_pad)
            if len(self._qty_cache) > 200_000:
                self._qty_cache.clear()
            self._qty_cache[lots] = s
        return s

    def parse_price(self, text: str) -> int:
        """Decimal string back to ticks (exact, no float)."""
        return _parse_fixed(text, self.spec.tick_decimals)

    def parse_qty(self, text: str) -> int:
        return _parse_fixed(text, self.spec.lot_decimals)


def _fixed_str(units: int, decimals: int, scale: int, pad: str) -> str:
    """Integer ticks/lots as the exchange's decimal string (the formatter's cache-miss path)."""
    if decimals:
        whole, frac = divmod(units, scale)
        return f"{whole}.{frac:0{decimals}d}{pad}"
    return f"{units}.{pad}" if pad else str(units)


def _parse_fixed(text: str, decimals: int) -> int:
    whole, _, frac = text.partition(".")
    frac = (frac + "0" * decimals)[:decimals]
    return int(whole) * 10**decimals + (int(frac) if frac else 0)


class BookGenerator:
    """Evolves one symbol's book and emits canonical events; deterministic for (spec, market, seed).

    The book keeps hundreds of levels a side, the top never crosses, and each event's number of
    level changes is heavy-tailed. Spot ids are contiguous (each id in ``[U; u]`` carries at least
    one change); USD-M ids skip (``U`` of an event is not ``previous u + 1``).
    """

    def __init__(self, spec: SymbolSpec, market: str = "spot", seed: int = 1) -> None:
        if market not in ("spot", "usdm"):
            raise ValueError(f"market must be 'spot' or 'usdm', not {market!r}")
        self.spec = spec
        self.market = market
        self.rng = random.Random(f"{seed}:{market}:{spec.symbol}")
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.last_update_id = spec.first_update_id
        mid = round(spec.start_price * spec.tick_scale)
        self.best_bid = mid
        self.best_ask = mid + 1
        self._log_max_offset = math.log(spec.max_offset_ticks)
        self._qty_mu = math.log(max(spec.typical_qty * spec.lot_scale, 1.0))
        # quantities are drawn from a fixed log-normal table: as realistic, far cheaper per change
        self._qty_table = [max(1, int(self.rng.lognormvariate(self._qty_mu, 1.3))) for _ in range(8192)]
        self._fill_initial()

    # -- book state ----------------------------------------------------------------------------
    def _random_qty(self) -> int:
        return self._qty_table[self.rng.getrandbits(13)]

    def _fill_initial(self) -> None:
        rng = self.rng
        for side, book, top, sign in (
            (BID, self.bids, self.best_bid, -1),
            (ASK, self.asks, self.best_ask, 1),
        ):
            del side
            book[top] = self._random_qty()
            while len(book) < self.spec.initial_levels:
                off = int(math.exp(rng.random() * self._log_max_offset * 0.75))
                p = top + sign * off
                if p > 0:
                    book[p] = self._random_qty()

    def snapshot_levels(self) -> tuple[dict[int, int], dict[int, int]]:
        """Copies of the current book (bids, asks) in ticks -> lots."""
        return dict(self.bids), dict(self.asks)

    # -- event generation ---------------------------------------------------------------------
    def _n_changes(self) -> int:
        n = int(self.rng.lognormvariate(_CHANGES_MU, _CHANGES_SIGMA))
        return 1 if n < 1 else min(n, _MAX_CHANGES)

    def next_event(self, event_time_ms: int) -> CanonicalEvent:
        """Generate, apply and return the next canonical event."""
        rng = self.rng
        rand = rng.random
        bids, asks = self.bids, self.asks
        n_target = self._n_changes()
        sides: list[int] = []
        prices: list[int] = []
        qtys: list[int] = []

        def change(side: int, price: int, qty: int) -> None:
            sides.append(side)
            prices.append(price)
            qtys.append(qty)
            book = bids if side == BID else asks
            if qty:
                book[price] = qty
            else:
                book.pop(price, None)

        # 1) sometimes the top moves; levels that would cross are removed in the same event
        if rand() < 0.3:
            step = 1 + int(rng.expovariate(0.5))
            if rand() < 0.5:  # down
                new_bb = max(1, self.best_bid - step)
                for p in range(self.best_bid, new_bb, -1):
                    if p in bids:
                        change(BID, p, 0)
                if new_bb not in bids:
                    change(BID, new_bb, self._random_qty())
                self.best_bid = new_bb
                if new_bb + 1 < self.best_ask:
                    change(ASK, new_bb + 1, self._random_qty())
                    self.best_ask = new_bb + 1
            else:  # up
                new_ba = self.best_ask + step
                for p in range(self.best_ask, new_ba):
                    if p in asks:
                        change(ASK, p, 0)
                if new_ba not in asks:
                    change(ASK, new_ba, self._random_qty())
                self.best_ask = new_ba
                if new_ba - 1 > self.best_bid:
                    change(BID, new_ba - 1, self._random_qty())
                    self.best_bid = new_ba - 1

        # 2) the rest: heavy near the top, a long tail far away; modify, add, remove, remove-absent
        log_max2 = self._log_max_offset * 2.0
        exp = math.exp
        qty_table = self._qty_table
        bits = rng.getrandbits
        best_bid, best_ask = self.best_bid, self.best_ask
        n = len(sides)
        while n < n_target:
            r = rand()
            if r < 0.5:  # one draw gives the side and a log-uniform offset
                off = int(exp(r * log_max2)) - 1
                side, book, price = BID, bids, best_bid - off
                if price <= 0:
                    continue
            else:
                off = int(exp((r - 0.5) * log_max2)) - 1
                side, book, price = ASK, asks, best_ask + off
            if off == 0:
                qty = qty_table[bits(13)]
            elif price in book:
                qty = 0 if rand() < 0.35 else qty_table[bits(13)]
            else:
                r = rand()
                if r < (0.75 if off < 200 else 150.0 / off):
                    qty = qty_table[bits(13)]
                elif r > 0.88:
                    qty = 0  # removing a level the book does not hold: Binance does it too
                else:
                    continue
            sides.append(side)
            prices.append(price)
            qtys.append(qty)
            if qty:
                book[price] = qty
            else:
                book.pop(price, None)
            n += 1

        # 3) update ids for every change
        n = len(sides)
        first = self.last_update_id + 1
        if self.market == "spot":
            n_ids = max(1, int(n * (0.5 + 0.5 * rand())))
            ids = [first + (i * n_ids) // n for i in range(n)]
        else:
            first += int(rng.expovariate(1 / 200.0))  # ids used by other (unseen) order-book paths
            n_ids = max(1, int(n * (0.5 + 0.5 * rand())))
            slot_ids = [first]
            for _ in range(n_ids - 1):
                slot_ids.append(slot_ids[-1] + 1 + int(rng.expovariate(0.7)))
            ids = [slot_ids[(i * n_ids) // n] for i in range(n)]
        self.last_update_id = ids[-1]
        t_ms = event_time_ms - int(rand() * 3) if self.market == "usdm" else event_time_ms
        return CanonicalEvent(
            symbol=self.spec.symbol,
            first_id=ids[0],
            last_id=ids[-1],
            event_time_ms=event_time_ms,
            transaction_time_ms=t_ms,
            ids=ids,
            sides=sides,
            prices=prices,
            qtys=qtys,
        )


# -- net effect and encoding -------------------------------------------------------------------------


@dataclass(slots=True)
class Partial:
    """A connection's view of part of the sequence: ids ``[first_id; last_id]`` with net level changes."""

    symbol: str
    first_id: int
    last_id: int
    event_time_ms: int
    transaction_time_ms: int
    bids: dict[int, int]
    asks: dict[int, int]
    prev_last_id: int = -1  # pu (usdm): the previous event's u on the same connection


def net_changes(
    events: list[CanonicalEvent], lo_id: int | None = None, hi_id: int | None = None
) -> tuple[dict[int, int], dict[int, int], int, int]:
    """Net level changes of ``events`` restricted to ids in ``[lo_id; hi_id]``: (bids, asks, U, u).

    U and u are the first and last ids that carry a change in range (-1, -1 if none).
    """
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    first = last = -1
    for ev in events:
        if (hi_id is not None and ev.first_id > hi_id) or (lo_id is not None and ev.last_id < lo_id):
            continue
        whole = (lo_id is None or ev.first_id >= lo_id) and (hi_id is None or ev.last_id <= hi_id)
        for i, uid in enumerate(ev.ids):
            if not whole and ((lo_id is not None and uid < lo_id) or (hi_id is not None and uid > hi_id)):
                continue
            if first < 0:
                first = uid
            last = uid
            if ev.sides[i] == BID:
                bids[ev.prices[i]] = ev.qtys[i]
            else:
                asks[ev.prices[i]] = ev.qtys[i]
    return bids, asks, first, last


def partial_of(events: list[CanonicalEvent], lo_id: int | None = None, hi_id: int | None = None) -> Partial:
    bids, asks, first, last = net_changes(events, lo_id, hi_id)
    tail = events[-1]
    for ev in reversed(events):
        if ev.first_id <= last:
            tail = ev
            break
    return Partial(tail.symbol, first, last, tail.event_time_ms, tail.transaction_time_ms, bids, asks)


def depth_data(partial: Partial, fmt: Formatter, market: str) -> dict[str, object]:
    """The ``data`` object Binance sends for a diff-depth event (bids high->low, asks low->high)."""
    p, q = fmt.price, fmt.qty
    b = [[p(k), q(partial.bids[k])] for k in sorted(partial.bids, reverse=True)]
    a = [[p(k), q(partial.asks[k])] for k in sorted(partial.asks)]
    if market == "usdm":
        return {
            "e": "depthUpdate",
            "E": partial.event_time_ms,
            "T": partial.transaction_time_ms,
            "s": partial.symbol,
            "U": partial.first_id,
            "u": partial.last_id,
            "pu": partial.prev_last_id,
            "b": b,
            "a": a,
        }
    return {
        "e": "depthUpdate",
        "E": partial.event_time_ms,
        "s": partial.symbol,
        "U": partial.first_id,
        "u": partial.last_id,
        "b": b,
        "a": a,
    }


def encode_depth(partial: Partial, fmt: Formatter, market: str, stream: str | None = None) -> bytes:
    """JSON text of a depth event; wrapped as ``{"stream","data"}`` when ``stream`` is given."""
    data = depth_data(partial, fmt, market)
    return orjson.dumps({"stream": stream, "data": data} if stream is not None else data)


def generate_events(
    symbol: str | SymbolSpec,
    n_events: int,
    *,
    market: str = "spot",
    seed: int = 1,
    start_ms: int = 1_764_000_000_000,
    interval_ms: int = 100,
) -> Iterator[CanonicalEvent]:
    """``n_events`` canonical events of one symbol, one every ``interval_ms`` of exchange time."""
    spec = symbol if isinstance(symbol, SymbolSpec) else spec_for(symbol, market)
    gen = BookGenerator(spec, market, seed)
    for k in range(n_events):
        yield gen.next_event(start_ms + k * interval_ms)


def generate_messages(
    symbol: str,
    n_events: int,
    *,
    market: str = "spot",
    seed: int = 1,
    start_ms: int = 1_764_000_000_000,
    interval_ms: int = 100,
    stream: str | None = None,
) -> Iterator[bytes]:
    """Encoded combined-stream frames of the canonical sequence (for benchmarks and fixtures)."""
    spec = spec_for(symbol, market)
    fmt = Formatter(spec)
    stream = stream or f"{symbol.lower()}@depth@100ms"
    prev_u = spec.first_update_id
    for ev in generate_events(
        spec, n_events, market=market, seed=seed, start_ms=start_ms, interval_ms=interval_ms
    ):
        part = partial_of([ev])
        part.prev_last_id = prev_u
        prev_u = ev.last_id
        yield encode_depth(part, fmt, market, stream)


# -- closed cycles: endless consistent streams at template speed ----------------------------------------

_CHECKPOINT_EVERY = 64


class ClosedCycle:
    """A pool of canonical events whose net effect is nil, pre-encoded as byte templates.

    After ``size`` generated events, extra events put every level back to the starting book, so
    cycling the pool forever is still one consistent order book with increasing ids: the book after
    any number of events is known exactly (checkpoints), and a frame costs one ``bytes % (...)``.
    Used by the firehose mode and to produce a real-sized day of messages in seconds.
    """

    def __init__(self, spec: SymbolSpec, market: str = "spot", seed: int = 1, size: int = 2048) -> None:
        gen = BookGenerator(spec, market, seed)
        self.spec = spec
        self.market = market
        self.start_bids, self.start_asks = gen.snapshot_levels()
        events = [gen.next_event(0) for _ in range(max(16, size))]
        fixes: list[tuple[int, int, int]] = []  # removals first, so no step crosses the book
        for side, now, start in ((BID, gen.bids, self.start_bids), (ASK, gen.asks, self.start_asks)):
            fixes += [(side, p, 0) for p in now if p not in start]
        for side, now, start in ((BID, gen.bids, self.start_bids), (ASK, gen.asks, self.start_asks)):
            fixes += [(side, p, q) for p, q in start.items() if now.get(p) != q]
        next_id = gen.last_update_id
        for i in range(0, len(fixes), 40):
            chunk = fixes[i : i + 40]
            ids = [next_id + 1 + j // 2 for j in range(len(chunk))]
            next_id = ids[-1]
            events.append(
                CanonicalEvent(
                    spec.symbol,
                    ids[0],
                    ids[-1],
                    0,
                    0,
                    ids,
                    [c[0] for c in chunk],
                    [c[1] for c in chunk],
                    [c[2] for c in chunk],
                )
            )
        self.events = events
        fmt = Formatter(spec)
        self.templates: list[bytes] = []  # data JSON with %d for E, (T,) U, u, (pu)
        self.spans: list[tuple[int, int]] = []  # (U - previous u, u - U)
        prev_u = spec.first_update_id
        marker = {"E": -101, "T": -102, "U": -103, "u": -104, "pu": -105}
        for ev in events:
            data = depth_data(partial_of([ev]), fmt, market)
            for key, val in marker.items():
                if key in data:
                    data[key] = val
            text = orjson.dumps(data).replace(b"%", b"%%")
            for val in marker.values():
                text = text.replace(str(val).encode(), b"%d", 1)
            self.templates.append(text)
            self.spans.append((ev.first_id - prev_u, ev.last_id - ev.first_id))
            prev_u = ev.last_id
        self.checkpoints: list[tuple[dict[int, int], dict[int, int]]] = []
        bids, asks = dict(self.start_bids), dict(self.start_asks)
        for i, ev in enumerate(events):
            if i % _CHECKPOINT_EVERY == 0:
                self.checkpoints.append((dict(bids), dict(asks)))
            _apply(bids, asks, ev)
        self.k = 0  # events emitted so far
        self.last_u = spec.first_update_id  # u of the last emitted event

    def book_after(self, k: int) -> tuple[dict[int, int], dict[int, int]]:
        """The book after ``k`` events of the endless cycle (ticks -> lots)."""
        pos = k % len(self.events)
        cp = pos // _CHECKPOINT_EVERY
        bids, asks = dict(self.checkpoints[cp][0]), dict(self.checkpoints[cp][1])
        for ev in self.events[cp * _CHECKPOINT_EVERY : pos]:
            _apply(bids, asks, ev)
        return bids, asks

    def next_data(self, event_time_ms: int) -> bytes:
        """The next event's ``data`` JSON; advances the cycle."""
        i = self.k % len(self.templates)
        gap, span = self.spans[i]
        first = self.last_u + gap
        last = first + span
        tmpl = self.templates[i]
        if self.market == "usdm":
            out = tmpl % (event_time_ms, event_time_ms, first, last, self.last_u)
        else:
            out = tmpl % (event_time_ms, first, last)
        self.last_u = last
        self.k += 1
        return out

    def skip(self) -> None:
        """Advance one event without encoding it."""
        gap, span = self.spans[self.k % len(self.spans)]
        self.last_u += gap + span
        self.k += 1


def _apply(bids: dict[int, int], asks: dict[int, int], ev: CanonicalEvent) -> None:
    for i in range(len(ev.ids)):
        book = bids if ev.sides[i] == BID else asks
        if ev.qtys[i]:
            book[ev.prices[i]] = ev.qtys[i]
        else:
            book.pop(ev.prices[i], None)


def day_frames(
    symbol: str,
    n_events: int = 864_000,
    *,
    market: str = "spot",
    seed: int = 1,
    start_ms: int = 1_764_000_000_000,
    interval_ms: int = 100,
    pool_size: int = 20_000,
    stream: str | None = None,
) -> tuple[dict[str, object], Iterator[tuple[int, bytes]]]:
    """A real-sized day fast: (REST snapshot body at the start, iterator of (E ms, combined frame)).

    The events cycle a closed pool of ``pool_size`` generated events, so the stream is one
    consistent book that the snapshot syncs to; ``n_events`` of 864,000 is one day at 100 ms.
    """
    spec = spec_for(symbol, market)
    cycle = ClosedCycle(spec, market, seed, pool_size)
    fmt = Formatter(spec)
    snapshot: dict[str, object] = {"lastUpdateId": cycle.last_u}
    if market == "usdm":
        snapshot["E"] = start_ms
        snapshot["T"] = start_ms
    snapshot["bids"] = [
        [fmt.price(p), fmt.qty(cycle.start_bids[p])] for p in sorted(cycle.start_bids, reverse=True)
    ]
    snapshot["asks"] = [[fmt.price(p), fmt.qty(cycle.start_asks[p])] for p in sorted(cycle.start_asks)]
    head = b'{"stream":"' + (stream or f"{symbol.lower()}@depth@100ms").encode() + b'","data":'

    def frames() -> Iterator[tuple[int, bytes]]:
        for k in range(n_events):
            e_ms = start_ms + k * interval_ms
            yield e_ms, head + cycle.next_data(e_ms) + b"}"

    return snapshot, frames()
