"""Synthetic but well-formed raw objects (docs/raw-format.md) for pipeline tests, written with the real
``depth_core.raw_format`` encoder: a REST snapshot and a contiguous run of spot diff-depth events."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from dataclasses import dataclass

from depth_core.raw_format import LineKind, RawObjectKey, encode_line
from depth_store import ObjectInfo, ObjectStore


def day_start_ns(date: str) -> int:
    return int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()) * 10**9


@dataclass
class DayPlan:
    """Events of one symbol-day: ``events`` diff-depth events 100 ms apart from ``start_offset_s``."""

    date: str
    symbol: str = "BTCUSDT"
    first_id: int = 1_000_000
    events: int = 60
    start_offset_s: float = 60.0
    latency_ms: int = 20

    def event(self, i: int) -> tuple[int, bytes]:
        """(receive_ns, frame) of event ``i``: id ``first_id + i``, one bid and one ask level change."""
        e_ms = day_start_ns(self.date) // 10**6 + int(self.start_offset_s * 1000) + 100 * i
        uid = self.first_id + i
        bid = f"{100 + (i % 5):.2f}"
        ask = f"{110 + (i % 5):.2f}"
        data = {
            "e": "depthUpdate",
            "E": e_ms,
            "s": self.symbol,
            "U": uid,
            "u": uid,
            "b": [[bid, f"{1 + i % 3}.000"]],
            "a": [[ask, f"{2 + i % 2}.000"]],
        }
        frame = json.dumps(
            {"stream": f"{self.symbol.lower()}@depth@100ms", "data": data}, separators=(",", ":")
        )
        return (e_ms + self.latency_ms) * 10**6, frame.encode()

    def snapshot(self) -> tuple[int, bytes]:
        """A REST snapshot taken just before the first event."""
        receive_ns, _ = self.event(0)
        body = {
            "lastUpdateId": self.first_id - 1,
            "bids": [[f"{100 + k:.2f}", "1.000"] for k in range(5)],
            "asks": [[f"{110 + k:.2f}", "1.000"] for k in range(5)],
        }
        return receive_ns - 50 * 10**6, json.dumps(body, separators=(",", ":")).encode()


def write_object(
    store: ObjectStore,
    stream: str,
    symbol: str,
    lines: list[tuple[int, LineKind, bytes]],
    session: str = "s1",
    seq: int = 0,
    market: str = "spot",
) -> ObjectInfo:
    """One raw object holding ``lines`` (receive order), keyed by its first receive time."""
    key = RawObjectKey.for_segment(market, stream, symbol, lines[0][0], session, seq)  # type: ignore[arg-type]
    body = b"".join(encode_line(ns, kind, text) for ns, kind, text in lines)
    return store.put_bytes(key.key, gzip.compress(body))


def write_stream_day(
    store: ObjectStore,
    stream: str,
    plan: DayPlan,
    *,
    per_object: int = 20,
    session: str = "s1",
    skip: range | None = None,
    with_snapshot: bool = True,
) -> list[ObjectInfo]:
    """Write the plan's snapshot + events as ``stream``'s raw objects; events in ``skip`` are left out."""
    lines: list[tuple[int, LineKind, bytes]] = []
    if with_snapshot:
        lines.append((plan.snapshot()[0], LineKind.SNAPSHOT, plan.snapshot()[1]))
    for i in range(plan.events):
        if skip is not None and i in skip:
            continue
        ns, frame = plan.event(i)
        lines.append((ns, LineKind.DEPTH, frame))
    out: list[ObjectInfo] = []
    for seq, start in enumerate(range(0, len(lines), per_object)):
        out.append(write_object(store, stream, plan.symbol, lines[start : start + per_object], session, seq))
    return out
