"""Layout-2 raw objects for the sensor and cleanup tests: one object per stream flush, every symbol's lines."""

from __future__ import annotations

import gzip
import json

from depth_core.raw_format import STREAM_WIDE, LineKind, RawObjectKey, encode_line_v2
from depth_store import ObjectInfo, ObjectStore


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
        encode_line_v2(first_ns + i, LineKind.DEPTH, sym, json.dumps({"stream": f"{sym.lower()}@depth", "data": {}}))
        for i, sym in enumerate(symbols)
    ]
    for j, (sym, note) in enumerate(notes):
        lines.append(encode_line_v2(first_ns + 1000 + j, LineKind.META, sym or STREAM_WIDE, json.dumps(note)))
    key = RawObjectKey.for_stream_segment(market, stream, first_ns, session, seq)  # type: ignore[arg-type]
    return store.put_bytes(key.key, gzip.compress(b"".join(lines)))
