"""Replay of real Binance recordings: timestamps shifted to now, time compressible, the recording's snapshot.

Two formats are read:
- hftbacktest (gzip text): ``<receive_ns> <combined-stream JSON>``; a line without ``stream`` holding
  ``lastUpdateId`` is the REST depth snapshot of the file's symbol.
- cryptofeed: a ``.ws.`` file of ``<receive_epoch_s>: <combined-stream JSON>`` lines (a first
  ``wss://... <-> t`` header line) and beside it a ``.http.`` file of
  ``<url> -> <receive_epoch_s>: <snapshot JSON>`` lines.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from exchange_sim.state import SimulatorCore


class ReplayFormatError(ValueError):
    """The recording is not in a known format."""


@dataclass(slots=True)
class ReplayMessage:
    recv_ns: int
    stream: str  # as recorded, e.g. btcusdt@depth@100ms
    symbol: str  # upper case
    kind: str  # depth | bookTicker | other
    data: dict[str, Any]


@dataclass(slots=True)
class ReplaySnapshot:
    recv_ns: int
    symbol: str
    body: dict[str, Any]


def _classify(stream: str) -> tuple[str, str]:
    sym, _, rest = stream.partition("@")
    if rest.startswith("depth"):
        return sym.upper(), "depth"
    if rest == "bookTicker":
        return sym.upper(), "bookTicker"
    return sym.upper(), "other"


def _message(recv_ns: int, obj: dict[str, Any]) -> ReplayMessage:
    stream = str(obj["stream"])
    sym, kind = _classify(stream)
    return ReplayMessage(recv_ns, stream, sym, kind, obj["data"])


def load_recording(
    path: str | Path, snapshot_path: str | Path | None = None
) -> tuple[list[ReplayMessage], list[ReplaySnapshot]]:
    """Messages in receive order and snapshots of a recording (format detected from the content)."""
    path = Path(path)
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return _load_hftbacktest(path)
    return _load_cryptofeed(path, Path(snapshot_path) if snapshot_path else None)


def _load_hftbacktest(path: Path) -> tuple[list[ReplayMessage], list[ReplaySnapshot]]:
    messages: list[ReplayMessage] = []
    raw_snapshots: list[tuple[int, dict[str, Any]]] = []
    with gzip.open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            ts, _, text = line.partition(b" ")
            try:
                recv_ns = int(ts)
                obj = orjson.loads(text)
            except (ValueError, orjson.JSONDecodeError) as exc:
                raise ReplayFormatError(f"{path}:{n}: not '<receive_ns> <json>': {exc}") from None
            if "stream" in obj and "data" in obj:
                messages.append(_message(recv_ns, obj))
            elif "lastUpdateId" in obj:
                raw_snapshots.append((recv_ns, obj))
    symbols = sorted({m.symbol for m in messages if m.kind == "depth"})
    if raw_snapshots and len(symbols) != 1:
        raise ReplayFormatError(f"{path}: snapshot lines need exactly one depth symbol, found {symbols}")
    snaps = [ReplaySnapshot(ns, symbols[0], body) for ns, body in raw_snapshots]
    return messages, snaps


def _load_cryptofeed(
    path: Path, snapshot_path: Path | None
) -> tuple[list[ReplayMessage], list[ReplaySnapshot]]:
    messages: list[ReplayMessage] = []
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith(b"wss://") or line.startswith(b"ws://"):
                continue
            ts, sep, text = line.partition(b": ")
            if not sep:
                raise ReplayFormatError(f"{path}:{n}: not '<epoch_s>: <json>'")
            try:
                recv_ns = int(Decimal(ts.decode()) * 1_000_000_000)
                obj = orjson.loads(text)
            except (ValueError, ArithmeticError, orjson.JSONDecodeError) as exc:
                raise ReplayFormatError(f"{path}:{n}: not '<epoch_s>: <json>': {exc}") from None
            if isinstance(obj, dict) and "stream" in obj and "data" in obj:
                messages.append(_message(recv_ns, obj))
    if snapshot_path is None and ".ws." in path.name:
        prefix = path.name.split(".ws.")[0]
        found = sorted(path.parent.glob(f"{prefix}.http.*"))
        snapshot_path = found[0] if found else None
    snaps: list[ReplaySnapshot] = []
    if snapshot_path is not None:
        with snapshot_path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                url, sep, rest = line.partition(b" -> ")
                ts, sep2, text = rest.partition(b": ")
                if not sep or not sep2:
                    raise ReplayFormatError(f"{snapshot_path}:{n}: not '<url> -> <epoch_s>: <json>'")
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(url.decode()).query)
                symbol = query.get("symbol", [""])[0].upper()
                snaps.append(
                    ReplaySnapshot(int(Decimal(ts.decode()) * 1_000_000_000), symbol, orjson.loads(text))
                )
    messages.sort(key=lambda m: m.recv_ns)
    return messages, snaps


class ReplayEngine:
    """Plays a recording to the simulator's subscribers on the simulator's clock."""

    def __init__(self, sim: SimulatorCore, path: str, snapshot_path: str | None) -> None:
        self.sim = sim
        self.messages, self.snapshots = load_recording(path, snapshot_path)
        if not self.messages:
            raise ReplayFormatError(f"{path}: no stream messages")
        self.symbols: dict[str, int] = {}
        for m in self.messages:
            self.symbols[m.symbol] = self.symbols.get(m.symbol, 0) + 1
        self.done = asyncio.Event()
        self._start = asyncio.Event()
        if sim.config.replay_start == "immediate":
            self._start.set()
        first_e = next(
            (int(m.data["E"]) for m in self.messages if "E" in m.data), self.messages[0].recv_ns // 10**6
        )
        self.first_e_ms = first_e
        self.shift_ms = 0
        self.position_ns = 0  # receive time (recording clock) of the last message played
        self.last_u: dict[str, int] = {}
        self.played: dict[str, list[dict[str, Any]]] = {}  # symbol -> depth events played (shifted)

    def on_subscribe(self) -> None:
        if self.sim.config.replay_start == "on_subscribe":
            self._start.set()

    def start_now(self) -> None:
        self._start.set()

    def _shift(self, data: dict[str, Any]) -> dict[str, Any]:
        if "E" not in data and "T" not in data:
            return data
        out = dict(data)
        if "E" in out:
            out["E"] = int(out["E"]) + self.shift_ms
        if "T" in out:
            out["T"] = int(out["T"]) + self.shift_ms
        return out

    async def run(self) -> None:
        await self._start.wait()
        sim = self.sim
        loop = asyncio.get_running_loop()
        speed = sim.config.speed
        self.shift_ms = int(time.time() * 1000) - self.first_e_ms
        first_ns = self.messages[0].recv_ns
        t0 = loop.time()
        for m in self.messages:
            if sim.paused.is_set():
                paused_at = loop.time()
                while sim.paused.is_set():
                    await asyncio.sleep(0.01)
                t0 += loop.time() - paused_at
            due = t0 + (m.recv_ns - first_ns) / 1e9 / speed
            delay = due - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            self._play(m)
        self.done.set()

    def _play(self, m: ReplayMessage) -> None:
        self.position_ns = m.recv_ns
        data = self._shift(m.data)
        if m.kind == "depth":
            self.played.setdefault(m.symbol, []).append(data)
            self.last_u[m.symbol] = int(data["u"])
            lo, hi = int(data["U"]), int(data["u"])
        elif m.kind == "bookTicker":
            lo = hi = int(data.get("u", -1))
        else:
            lo = hi = -1
        encoded: bytes | None = None
        for conn in list(self.sim.subscribers.get(m.symbol, ())):
            for stream in conn.streams.values():
                if stream.symbol != m.symbol or stream.kind != m.kind:
                    continue
                if m.kind == "other" and stream.name != m.stream:
                    continue
                if lo >= 0 and conn.is_dropped(m.symbol, lo, hi):
                    conn.dropped += 1
                    continue
                if encoded is None:
                    encoded = orjson.dumps(data)
                conn.enqueue(conn.wrap(stream.name, encoded))

    # -- REST and truth ---------------------------------------------------------------------------
    def _snapshot_for(self, symbol: str) -> ReplaySnapshot | None:
        candidates = [s for s in self.snapshots if s.symbol == symbol]
        if not candidates:
            return None
        best = candidates[0]
        for s in candidates:
            if s.recv_ns <= self.position_ns:
                best = s
        return best

    def snapshot_body(self, symbol: str, limit: int) -> dict[str, Any] | None:
        """The recording's snapshot of ``symbol`` (the latest one played so far, else the first)."""
        snap = self._snapshot_for(symbol)
        if snap is None:
            return None
        body = self._shift(snap.body)
        body = dict(body)
        body["bids"] = body["bids"][:limit]
        body["asks"] = body["asks"][:limit]
        return body

    def last_update_id(self, symbol: str) -> int:
        return self.last_u.get(symbol, -1)

    def truth_events(self, symbol: str, from_id: int, to_id: int, max_count: int) -> list[dict[str, Any]]:
        """Depth events played so far overlapping ``[from_id; to_id]`` (the recording is the truth)."""
        out = []
        for ev in self.played.get(symbol, []):
            if ev["u"] >= from_id and ev["U"] <= to_id:
                out.append(ev)
                if len(out) >= max_count:
                    break
        return out

    def book_body(self, symbol: str, update_id: int, limit: int) -> dict[str, Any]:
        """The book at ``update_id``: the recording's snapshot plus the recorded events (sync rules
        applied)."""
        snap = self._snapshot_for(symbol)
        if snap is None:
            raise LookupError(f"the recording has no snapshot of {symbol}")
        usdm = self.sim.config.market == "usdm"
        lid = int(snap.body["lastUpdateId"])
        bids = {p: q for p, q in snap.body["bids"]}
        asks = {p: q for p, q in snap.body["asks"]}
        at = lid
        if update_id < 0:
            update_id = self.last_update_id(symbol)
        for m in self.messages:
            if m.symbol != symbol or m.kind != "depth":
                continue
            u = int(m.data["u"])
            if (u < lid) if usdm else (u <= lid):
                continue
            if u > update_id:
                break
            for side, levels in ((bids, m.data["b"]), (asks, m.data["a"])):
                for p, q in levels:
                    if Decimal(q) == 0:
                        side.pop(p, None)
                    else:
                        side[p] = q
            at = u
        return {
            "symbol": symbol,
            "update_id": at,
            "bids": [[p, bids[p]] for p in sorted(bids, key=Decimal, reverse=True)[:limit]],
            "asks": [[p, asks[p]] for p in sorted(asks, key=Decimal)[:limit]],
        }
