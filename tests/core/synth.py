"""Test helpers: a tiny synthetic exchange (the ground truth) and raw-object writers for streams."""

from __future__ import annotations

import gzip
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from depth_core.names import Market
from depth_core.raw_format import LineKind, RawObjectKey, encode_line, encode_line_v2
from depth_store.base import ObjectStore

DAY0_MS = 1_763_942_400_000  # 2025-11-24 00:00:00 UTC


def fmt(v: float, d: int) -> str:
    return f"{v:.{d}f}"


@dataclass
class SyntheticExchange:
    """One update per id; ``book_after[id]`` is the true book after that id (for the oracle)."""

    market: Market = "spot"
    symbol: str = "BTCUSDT"
    seed: int = 1
    first_id: int = 1000
    start_ms: int = DAY0_MS + 3_600_000
    ids: list[int] = field(default_factory=list)
    changes: dict[int, tuple[bool, float, float]] = field(default_factory=dict)
    times: dict[int, int] = field(default_factory=dict)
    book: dict[bool, dict[float, float]] = field(default_factory=lambda: {True: {}, False: {}})
    books: dict[int, tuple[dict[float, float], dict[float, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for i in range(40):
            self.book[True][100.0 - i * 0.01 - 0.01] = round(1 + i * 0.5, 3)
            self.book[False][100.0 + i * 0.01] = round(2 + i * 0.25, 3)
        self.book = {k: {round(p, 2): q for p, q in v.items()} for k, v in self.book.items()}
        self.last = self.first_id
        self.books[self.last] = (dict(self.book[True]), dict(self.book[False]))
        self.times[self.last] = self.start_ms

    def run(self, n: int, ms_per_id: int = 7) -> None:
        t = self.times[self.last]
        for _ in range(n):
            step = 1 if self.market == "spot" else self.rng.choice([1, 1, 2, 5])
            nid = self.last + step
            is_bid = self.rng.random() < 0.5
            side = self.book[is_bid]
            best_bid = max(self.book[True])
            best_ask = min(self.book[False])
            if is_bid:
                price = round(best_bid - self.rng.randint(0, 30) * 0.01, 2)
            else:
                price = round(best_ask + self.rng.randint(0, 30) * 0.01, 2)
            qty = (
                0.0
                if (self.rng.random() < 0.3 and len(side) > 5)
                else round(self.rng.randint(1, 5000) / 1000, 3)
            )
            if qty == 0.0 and price in ((best_bid,) if is_bid else (best_ask,)) and len(side) < 3:
                qty = 1.0
            if qty:
                side[price] = qty
            else:
                side.pop(price, None)
            self.changes[nid] = (is_bid, price, qty)
            t += ms_per_id
            self.times[nid] = t
            self.ids.append(nid)
            self.last = nid
            self.books[nid] = (dict(self.book[True]), dict(self.book[False]))

    def batch(self, start_idx: int, stop_idx: int, prev_u: int | None) -> dict[str, object]:
        """The depth event covering ``self.ids[start_idx:stop_idx]`` (final value of every touched level)."""
        ids = self.ids[start_idx:stop_idx]
        final: dict[tuple[bool, float], float] = {}
        for i in ids:
            b, p, q = self.changes[i]
            final[(b, p)] = q
        ev: dict[str, object] = {
            "e": "depthUpdate",
            "E": self.times[ids[-1]],
            "s": self.symbol,
            "U": ids[0],
            "u": ids[-1],
        }
        if self.market == "usdm":
            ev["T"] = self.times[ids[-1]] - 1
            ev["pu"] = prev_u if prev_u is not None else ids[0] - 1
        ev["b"] = [[fmt(p, 2), fmt(q, 3)] for (b, p), q in final.items() if b]
        ev["a"] = [[fmt(p, 2), fmt(q, 3)] for (b, p), q in final.items() if not b]
        return ev

    def events(self, sizes: Sequence[int] | int) -> list[dict[str, object]]:
        """Batch every id into events of the given sizes (cycled)."""
        out = []
        i = 0
        k = 0
        prev_u: int | None = self.first_id if self.market == "usdm" else None
        seq = [sizes] if isinstance(sizes, int) else list(sizes)
        while i < len(self.ids):
            n = seq[k % len(seq)]
            ev = self.batch(i, min(i + n, len(self.ids)), prev_u)
            out.append(ev)
            prev_u = ev["u"]  # type: ignore[assignment]
            i += n
            k += 1
        return out

    def snapshot(self, at_id: int) -> dict[str, object]:
        bids, asks = self.books[at_id]
        body: dict[str, object] = {"lastUpdateId": at_id}
        if self.market == "usdm":
            body["E"] = self.times[at_id]
            body["T"] = self.times[at_id]
        body["bids"] = [[fmt(p, 2), fmt(q, 3)] for p, q in sorted(bids.items(), reverse=True)]
        body["asks"] = [[fmt(p, 2), fmt(q, 3)] for p, q in sorted(asks.items())]
        return body


def depth_frame(symbol: str, ev: dict[str, object], speed: str = "@100ms") -> str:
    return orjson.dumps({"stream": f"{symbol.lower()}@depth{speed}", "data": ev}).decode()


def write_stream(
    store: ObjectStore,
    market: Market,
    stream: str,
    symbol: str,
    lines: Sequence[tuple[int, LineKind, str | bytes]],
    per_object: int = 50,
    session: str = "s1",
) -> list[str]:
    """Write lines (receive_ns, kind, text) as raw objects of ``per_object`` lines each; returns keys."""
    keys = []
    ordered = sorted(lines, key=lambda x: x[0])
    seq = 0
    chunk: list[tuple[int, LineKind, str | bytes]] = []

    def flush() -> None:
        nonlocal seq, chunk
        if not chunk:
            return
        key = RawObjectKey.for_segment(market, stream, symbol, chunk[0][0], session, seq)
        body = b"".join(encode_line(ns, kind, text) if kind is not None else text for ns, kind, text in chunk)
        store.put_bytes(key.key, gzip.compress(body, compresslevel=1))
        keys.append(key.key)
        seq += 1
        chunk = []

    day = None
    for line in ordered:
        d = line[0] // 86_400_000_000_000
        if chunk and (len(chunk) >= per_object or d != day):
            flush()
        day = d
        chunk.append(line)
    flush()
    return keys


def stream_lines(
    ex: SyntheticExchange,
    events: list[dict[str, object]],
    latency_ms: float = 20.0,
    drop: Sequence[tuple[int, int]] = (),
    snapshots: Sequence[int] = (),
    snap_latency_ms: float = 50.0,
) -> list[tuple[int, LineKind, str]]:
    """Raw lines of one stream: events (minus those whose u falls in a ``drop`` id range) and snapshots."""
    out: list[tuple[int, LineKind, str]] = []
    for ev in events:
        u = int(ev["u"])  # type: ignore[call-overload]
        if any(a <= u <= b for a, b in drop):
            continue
        ns = int((int(ev["E"]) + latency_ms) * 1_000_000)  # type: ignore[call-overload]
        out.append((ns, LineKind.DEPTH, depth_frame(ex.symbol, ev)))
    for sid in snapshots:
        ns = int((ex.times[sid] + snap_latency_ms) * 1_000_000)
        out.append((ns, LineKind.SNAPSHOT, orjson.dumps(ex.snapshot(sid)).decode()))
    return out


def write_stream_v2(
    store: ObjectStore,
    market: Market,
    stream: str,
    lines: Sequence[tuple[int, LineKind, str, str | bytes]],
    per_object: int = 50,
    session: str = "v2",
) -> list[str]:
    """Write lines (receive_ns, kind, SYMBOL or '-', text) of many symbols as v2 raw objects (one object per
    ``per_object`` lines, none spanning an hour boundary); returns keys."""
    keys = []
    ordered = sorted(lines, key=lambda x: x[0])
    seq = 0
    chunk: list[tuple[int, LineKind, str, str | bytes]] = []

    def flush() -> None:
        nonlocal seq, chunk
        if not chunk:
            return
        key = RawObjectKey.for_stream_segment(market, stream, chunk[0][0], session, seq)
        body = b"".join(encode_line_v2(ns, kind, sym, text) for ns, kind, sym, text in chunk)
        store.put_bytes(key.key, gzip.compress(body, compresslevel=1))
        keys.append(key.key)
        seq += 1
        chunk = []

    hour = None
    for line in ordered:
        h = line[0] // 3_600_000_000_000
        if chunk and (len(chunk) >= per_object or h != hour):
            flush()
        hour = h
        chunk.append(line)
    flush()
    return keys
