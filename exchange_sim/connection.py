"""One websocket client of the simulator: its subscriptions, outgoing queue and send loop, armed faults.

The send loop honours stalls and disconnects a consumer that cannot keep up (as Binance does); what the
faults are and how they are armed is ``faults.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from exchange_sim.batching import Batcher

_STREAM_RE = re.compile(r"^(?P<sym>[a-z0-9]+)@(?P<kind>depth|bookTicker)(?:@(?P<ms>\d+)ms)?$")
_OTHER_STREAM_RE = re.compile(r"^([a-z0-9]+)@[A-Za-z0-9_@]+$")


@dataclass(frozen=True)
class StreamName:
    """A parsed stream name such as ``btcusdt@depth@100ms``."""

    name: str
    symbol: str  # upper case
    kind: str  # depth | bookTicker | other
    interval_ms: int

    @staticmethod
    def parse(name: str, default_depth_ms: int = 1000) -> StreamName | None:
        m = _STREAM_RE.match(name)
        if m is None:
            other = _OTHER_STREAM_RE.match(name)
            if other is None:
                return None
            return StreamName(name, other.group(1).upper(), "other", 0)  # trades, klines...: replay only
        kind = m.group("kind")
        ms = int(m.group("ms")) if m.group("ms") else (default_depth_ms if kind == "depth" else 0)
        if kind == "depth" and ms not in (0, 100, 250, 500, 1000):
            return None
        return StreamName(name, m.group("sym").upper(), kind, ms)


@dataclass
class FaultState:
    """Faults armed on one connection."""

    drop_ranges: list[tuple[str | None, int, int]] = field(default_factory=list)
    stall_until: float = 0.0
    duplicate_left: int = 0
    drop_next: list[tuple[str | None, int]] = field(default_factory=list)  # (symbol or None, messages left)
    batching: dict[str, Any] | None = None


class SimConnection:
    """One websocket client: its subscriptions, outgoing queue, faults and counters."""

    def __init__(
        self, conn_id: int, ws: ServerConnection, combined: bool, path: str, *, max_send_buffer_bytes: int
    ) -> None:
        self.id = conn_id
        self.ws = ws
        self.combined = combined
        self.path = path
        self.opened_at = time.monotonic()
        self.opened_wall = time.time()
        self.streams: dict[str, StreamName] = {}
        self.faults = FaultState()
        self.batchers: dict[str, Batcher] = {}
        self.prev_u: dict[str, int] = {}  # per stream: the previous event's u as this connection saw it
        self.queue: collections.deque[bytes] = collections.deque()
        self.wakeup = asyncio.Event()
        self.sent = 0
        self.dropped = 0
        self.incoming: collections.deque[float] = collections.deque()
        self.closed_reason: str | None = None
        self.max_send_buffer_bytes = max_send_buffer_bytes  # a slower consumer is disconnected

    def info(self) -> dict[str, Any]:
        remote = self.ws.remote_address
        return {
            "id": self.id,
            "path": self.path,
            "combined": self.combined,
            "remote": f"{remote[0]}:{remote[1]}" if remote else None,
            "streams": list(self.streams),
            "age_s": round(time.monotonic() - self.opened_at, 3),
            "sent": self.sent,
            "dropped": self.dropped,
            "queued": len(self.queue),
            "batching": self.faults.batching,
            "drop_ranges": [list(r) for r in self.faults.drop_ranges],
            "drop_next": [list(r) for r in self.faults.drop_next],
            "stalled": self.faults.stall_until > time.monotonic(),
        }

    def enqueue(self, frame: bytes) -> None:
        self.queue.append(frame)
        if self.faults.duplicate_left > 0:
            self.faults.duplicate_left -= 1
            self.queue.append(frame)
        self.wakeup.set()

    def send_shutdown_notice(self) -> None:
        """Binance's ``serverShutdown`` event, sent as a bare event on raw and combined connections alike."""
        self.enqueue(orjson.dumps({"e": "serverShutdown", "E": int(time.time() * 1000)}))

    def rate_ok(self, max_per_s: int) -> bool:
        """Count one incoming message; False once more than ``max_per_s`` came within the last second."""
        now = time.monotonic()
        q = self.incoming
        q.append(now)
        while q and q[0] <= now - 1.0:
            q.popleft()
        return len(q) <= max_per_s

    def is_dropped(self, symbol: str, first_id: int, last_id: int) -> bool:
        for sym, lo, hi in self.faults.drop_ranges:
            if (sym is None or sym == symbol) and first_id <= hi and last_id >= lo:
                return True
        return False

    def drops_depth(self, symbol: str, first_id: int, last_id: int) -> bool:
        """Whether a depth message of ``symbol`` over ``first_id..last_id`` is dropped: by ``drop_ids``, or
        taken (and counted) by an armed ``drop_next``."""
        if self.is_dropped(symbol, first_id, last_id):
            return True
        pending = self.faults.drop_next
        for i, (sym, left) in enumerate(pending):
            if sym is None or sym == symbol:
                if left <= 1:
                    del pending[i]
                else:
                    pending[i] = (sym, left - 1)
                return True
        return False

    def wrap(self, stream: str, data: bytes) -> bytes:
        if self.combined:
            return b'{"stream":"' + stream.encode() + b'","data":' + data + b"}"
        return data

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until the outgoing queue is empty."""
        end = time.monotonic() + timeout
        while self.queue and time.monotonic() < end:
            await asyncio.sleep(0.002)

    async def sender(self) -> None:
        """Send queued frames in order; honours stalls; disconnects a consumer that cannot keep up."""
        with contextlib.suppress(ConnectionClosed):  # the handler notices the close and cleans up
            await self._send_loop()

    async def _send_loop(self) -> None:
        ws = self.ws
        queue = self.queue
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while queue:
                now = time.monotonic()
                if self.faults.stall_until > now:
                    await asyncio.sleep(self.faults.stall_until - now)
                    continue
                frame = queue.popleft()
                await ws.send(frame, text=True)
                self.sent += 1
                transport = ws.transport
                if transport is not None and transport.get_write_buffer_size() > self.max_send_buffer_bytes:
                    self.closed_reason = "slow consumer"
                    transport.abort()
                    return
