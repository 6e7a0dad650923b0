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
from typing import TYPE_CHECKING, Any

from exchange_sim.generator import ClosedCycle, Formatter

if TYPE_CHECKING:
    from exchange_sim.state import SimulatorCore

_HIGH_WATER = 4 * 1024 * 1024


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


async def run_firehose(sim: SimulatorCore) -> None:
    """Generate ``firehose_rate`` events/s per symbol and write them to every depth subscriber."""
    cfg = sim.config
    rate = float(cfg.firehose_rate or 0)
    pools = {
        sym: ClosedCycle(st.spec, cfg.market, cfg.seed, cfg.firehose_pool) for sym, st in sim.symbols.items()
    }
    sim.firehose = pools
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
            if subs:
                datas = [pool.next_data(now_ms) for _ in range(n)]
            else:
                for _ in range(n):
                    pool.skip()
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


def firehose_snapshot(
    pool: ClosedCycle, limit: int, fmt: Formatter, market: str, now_ms: int
) -> dict[str, Any]:
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
