"""Firehose mode: a source faster than any collector, for throughput benchmarks.

A pool of canonical events is generated once per symbol and *closed* (extra events at the end put
every level back to the starting book), so cycling it forever is still one consistent order book:
ids keep increasing, a REST snapshot at any event boundary is exact, and a collector can sync and
verify as usual. Each event is pre-encoded as a byte template (only ``E``/``T``/``U``/``u``/``pu``
are filled in) and frames are written straight to the transport in large batches, bypassing
per-message ``send()`` calls. Websocket framing is done here (server frames are unmasked).

Per-connection faults other than ``close`` are not applied in this mode.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from exchange_sim.generator import ASK, BID, BookGenerator, CanonicalEvent, Formatter, depth_data, partial_of
from exchange_sim.truth import apply_event

if TYPE_CHECKING:
    from exchange_sim.server import ExchangeSimulator, SymbolState

_HIGH_WATER = 4 * 1024 * 1024
_CHECKPOINT_EVERY = 64


@dataclass
class FirehosePool:
    """One symbol's closed cycle of pre-encoded events and book checkpoints."""

    symbol: str
    templates: list[bytes]  # data JSON with %d placeholders
    spans: list[tuple[int, int]]  # per event: (U - previous u, u - U)
    cycle_ids: int  # ids advanced by one whole cycle
    start_bids: dict[int, int]
    start_asks: dict[int, int]
    events: list[CanonicalEvent]
    checkpoints: list[tuple[dict[int, int], dict[int, int]]] = field(default_factory=list)
    # moving state
    k: int = 0  # events sent so far
    last_u: int = 0
    first_u: int = 0  # u before the first event

    def book_after(self, k: int) -> tuple[dict[int, int], dict[int, int]]:
        """The book after ``k`` events of the endless cycle."""
        pos = k % len(self.events)
        cp = pos // _CHECKPOINT_EVERY
        bids, asks = dict(self.checkpoints[cp][0]), dict(self.checkpoints[cp][1])
        for ev in self.events[cp * _CHECKPOINT_EVERY:pos]:
            apply_event(bids, asks, ev)
        return bids, asks


def build_pool(st: SymbolState, market: str, size: int, seed: int) -> FirehosePool:
    gen = BookGenerator(st.spec, market, seed)
    start_bids, start_asks = gen.snapshot_levels()
    events = [gen.next_event(0) for _ in range(max(16, size))]
    # close the cycle: remove what the start book lacks, then restore every differing level
    fixes: list[tuple[int, int, int]] = []
    for side, now, start in ((BID, gen.bids, start_bids), (ASK, gen.asks, start_asks)):
        fixes += [(side, p, 0) for p in now if p not in start]
    for side, now, start in ((BID, gen.bids, start_bids), (ASK, gen.asks, start_asks)):
        fixes += [(side, p, q) for p, q in start.items() if now.get(p) != q]
    next_id = gen.last_update_id
    for i in range(0, len(fixes), 40):
        chunk = fixes[i:i + 40]
        ids = [next_id + 1 + j // 2 for j in range(len(chunk))]
        next_id = ids[-1]
        events.append(CanonicalEvent(
            st.spec.symbol, ids[0], ids[-1], 0, 0, ids, [c[0] for c in chunk], [c[1] for c in chunk],
            [c[2] for c in chunk],
        ))
    fmt = Formatter(st.spec)
    templates: list[bytes] = []
    spans: list[tuple[int, int]] = []
    prev_u = st.spec.first_update_id
    for ev in events:
        data = depth_data(partial_of([ev]), fmt, market)
        marker = {"E": -101, "T": -102, "U": -103, "u": -104, "pu": -105}
        for key, val in marker.items():
            if key in data:
                data[key] = val
        text = orjson.dumps(data).replace(b"%", b"%%")
        for val in marker.values():
            text = text.replace(str(val).encode(), b"%d", 1)
        templates.append(text)
        spans.append((ev.first_id - prev_u, ev.last_id - ev.first_id))
        prev_u = ev.last_id
    pool = FirehosePool(st.spec.symbol, templates, spans, prev_u - st.spec.first_update_id,
                        start_bids, start_asks, events)
    bids, asks = dict(start_bids), dict(start_asks)
    for i, ev in enumerate(events):
        if i % _CHECKPOINT_EVERY == 0:
            pool.checkpoints.append((dict(bids), dict(asks)))
        apply_event(bids, asks, ev)
    pool.first_u = pool.last_u = st.spec.first_update_id
    return pool


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


async def run_firehose(sim: ExchangeSimulator) -> None:
    """Generate ``firehose_rate`` events/s per symbol and write them to every depth subscriber."""
    cfg = sim.config
    rate = float(cfg.firehose_rate or 0)
    pools = {sym: build_pool(st, cfg.market, cfg.firehose_pool, cfg.seed) for sym, st in sim.symbols.items()}
    sim.firehose = pools
    usdm = cfg.market == "usdm"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    emitted = 0
    while True:
        if sim.paused.is_set():
            while sim.paused.is_set():
                await asyncio.sleep(0.01)
            t0 = loop.time() - emitted / rate
        # backpressure: wait while any subscriber's socket buffer is full (the benchmark measures the reader)
        waiting = True
        while waiting:
            waiting = False
            for conns in sim.subscribers.values():
                for conn in conns:
                    tr = conn.ws.transport
                    if tr is not None and not tr.is_closing() and tr.get_write_buffer_size() > _HIGH_WATER:
                        waiting = True
            if waiting:
                await asyncio.sleep(0.0005)
        due = int((loop.time() - t0) * rate)
        n = min(due - emitted, max(1, int(rate * 0.01)))
        if n <= 0:
            await asyncio.sleep(max(0.0005, (emitted + 1) / rate - (loop.time() - t0)))
            continue
        now_ms = int(time.time() * 1000)
        for sym, pool in pools.items():
            subs = [c for c in sim.subscribers.get(sym, ()) if c.ws.transport is not None]
            datas: list[bytes] = []
            size = len(pool.templates)
            for _ in range(n):
                i = pool.k % size
                gap, span = pool.spans[i]
                first = pool.last_u + gap
                last = first + span
                if subs:
                    tmpl = pool.templates[i]
                    if usdm:
                        datas.append(tmpl % (now_ms, now_ms, first, last, pool.last_u))
                    else:
                        datas.append(tmpl % (now_ms, first, last))
                pool.last_u = last
                pool.k += 1
            sim.events_generated += n
            for conn in subs:
                for stream in conn.streams.values():
                    if stream.symbol != sym or stream.kind != "depth":
                        continue
                    if conn.combined:
                        head = b'{"stream":"' + stream.name.encode() + b'","data":'
                        chunk = b"".join([_frame(head + d + b"}") for d in datas])
                    else:
                        chunk = b"".join([_frame(d) for d in datas])
                    tr = conn.ws.transport
                    if tr is not None and not tr.is_closing():
                        tr.write(chunk)
                        conn.sent += len(datas)
        emitted += n
        await asyncio.sleep(0)


def firehose_snapshot(pool: FirehosePool, limit: int, fmt: Formatter, market: str, now_ms: int) -> dict[str, Any]:
    """An exact snapshot at the current event boundary."""
    from exchange_sim.truth import top_levels

    bids, asks = pool.book_after(pool.k)
    body: dict[str, Any] = {"lastUpdateId": pool.last_u}
    if market == "usdm":
        body["E"] = now_ms
        body["T"] = now_ms
    body["bids"] = [[fmt.price(p), fmt.qty(q)] for p, q in top_levels(bids, limit, True)]
    body["asks"] = [[fmt.price(p), fmt.qty(q)] for p, q in top_levels(asks, limit, False)]
    return body
