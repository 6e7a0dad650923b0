"""Small helpers for simulator tests: a websocket reader with deadlines and a plain dict book."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import websockets
from sortedcontainers import SortedDict


def http_get(url: str) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON body) of a GET, also for 4xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


async def collect(
    url: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 10.0,
    send: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Open ``url``, send ``send`` messages, read JSON frames until ``until(frames)`` or the deadline."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    async with websockets.connect(url, max_size=None, max_queue=None) as ws:
        for msg in send or []:
            await ws.send(json.dumps(msg))
        while not until(frames):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met after {timeout} s; {len(frames)} frames")
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
    return frames


def depth_events(frames: list[dict[str, Any]], stream: str | None = None) -> list[dict[str, Any]]:
    out = []
    for f in frames:
        if "stream" in f and "data" in f:
            if (stream is None or f["stream"] == stream) and f["data"].get("e") == "depthUpdate":
                out.append(f["data"])
        elif f.get("e") == "depthUpdate":
            out.append(f)
    return out


class DictBook:
    """The simplest correct book: per side, exact Decimal price -> (price text, qty text), kept sorted."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.bids: SortedDict = SortedDict({Decimal(p): (p, q) for p, q in snapshot["bids"]})
        self.asks: SortedDict = SortedDict({Decimal(p): (p, q) for p, q in snapshot["asks"]})
        self.last_update_id = int(snapshot["lastUpdateId"])

    def apply(self, event: dict[str, Any]) -> None:
        for side, levels in ((self.bids, event["b"]), (self.asks, event["a"])):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = (p, q)
        self.last_update_id = int(event["u"])

    def best(self) -> tuple[str, str, str, str]:
        bp, bq = self.bids.peekitem(-1)[1]
        ap, aq = self.asks.peekitem(0)[1]
        return bp, bq, ap, aq

    def levels(self, side: str, limit: int) -> list[list[str]]:
        book = self.bids if side == "bids" else self.asks
        values = list(reversed(book.values())) if side == "bids" else list(book.values())
        return [[p, q] for p, q in values[:limit]]
