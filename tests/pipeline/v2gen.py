"""Layout-2 raw objects for the sensor and cleanup tests: one object per stream flush, every symbol's
lines."""

from __future__ import annotations

import gzip
import json

from depth_core.raw_format import STREAM_WIDE, LineKind, RawObjectKey, encode_line_v2
from depth_store import ObjectInfo, ObjectStore
from tests.pipeline.rawgen import DayPlan


def write_v2(
    store: ObjectStore,
    stream: str,
    first_ns: int,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    *,
    session: str = "live",
    seq: int = 0,
    notes: list[tuple[str, dict[str, object]]] = (),  # type: ignore[assignment]
    market: str = "spot",
) -> ObjectInfo:
    """A v2 object whose first line was received at ``first_ns``: one depth line per symbol, then ``notes``
    (symbol or ``-``, JSON) as ``M`` lines."""
    lines = [
        encode_line_v2(
            first_ns + i, LineKind.DEPTH, sym, json.dumps({"stream": f"{sym.lower()}@depth", "data": {}})
        )
        for i, sym in enumerate(symbols)
    ]
    for j, (sym, note) in enumerate(notes):
        lines.append(encode_line_v2(first_ns + 1000 + j, LineKind.META, sym or STREAM_WIDE, json.dumps(note)))
    key = RawObjectKey.for_stream_segment(market, stream, first_ns, session, seq)  # type: ignore[arg-type]
    return store.put_bytes(key.key, gzip.compress(b"".join(lines)))


def write_stream_day_v2(
    store: ObjectStore,
    stream: str,
    plans: list[DayPlan],
    *,
    per_object: int = 20,
    session: str = "s1",
    skip: range | None = None,
    with_snapshot: bool = True,
    seq0: int = 0,
) -> list[ObjectInfo]:
    """The plans' snapshots and events (several symbols) as ``stream``'s v2 objects, in receive order."""
    lines: list[tuple[int, LineKind, str, bytes]] = []
    for plan in plans:
        if with_snapshot:
            ns, body = plan.snapshot()
            lines.append((ns, LineKind.SNAPSHOT, plan.symbol, body))
        for i in range(plan.events):
            if skip is not None and i in skip:
                continue
            ns, frame = plan.event(i)
            lines.append((ns, LineKind.DEPTH, plan.symbol, frame))
    lines.sort(key=lambda line: line[0])
    out: list[ObjectInfo] = []
    for n, start in enumerate(range(0, len(lines), per_object)):
        chunk = lines[start : start + per_object]
        key = RawObjectKey.for_stream_segment("spot", stream, chunk[0][0], session, seq0 + n)
        body = b"".join(encode_line_v2(ns, kind, sym, text) for ns, kind, sym, text in chunk)
        out.append(store.put_bytes(key.key, gzip.compress(body)))
    return out
