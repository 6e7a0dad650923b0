"""Cheap parsing of combined-stream frames: only the fields the collector needs.

Binance sends ``{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":...,"U":...,"u":...}}``.
The hot path reads the stream name and the ids by slicing (``bytes.find`` runs in C) instead of parsing
the whole frame with its 40+ price levels; anything that does not look like that falls back to orjson,
so an unusual field order still works, only slower. The frame text itself is never altered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

STREAM_PREFIX = b'{"stream":"'
_PREFIX_LEN = len(STREAM_PREFIX)

# The head of a depth frame exactly as Binance lays it out, matched in one C call (the hot path):
# groups (stream, E, U, u) for spot; (stream, E, u, pu) for usdm, whose event also has "T" and "pu".
# ``\d`` of a bytes pattern is ASCII 0-9 only, so every captured id converts with int(). A frame laid
# out any other way does not match and is read by :func:`depth_head` or :func:`parse_slow` instead.
DEPTH_HEAD_SPOT = re.compile(
    rb'\{"stream":"([^"]{1,100})","data":\{"e":"depthUpdate","E":(\d{1,19}),"s":"[^"]{1,40}",'
    rb'"U":(\d{1,20}),"u":(\d{1,20}),"'
)
DEPTH_HEAD_USDM = re.compile(
    rb'\{"stream":"([^"]{1,100})","data":\{"e":"depthUpdate","E":(\d{1,19}),"T":\d{1,19},"s":"[^"]{1,40}",'
    rb'"U":\d{1,20},"u":(\d{1,20}),"pu":(-?\d{1,20}),"'
)


def stream_name(frame: bytes) -> bytes | None:
    """The ``stream`` of a combined-stream envelope, or None if the frame does not start with one."""
    if frame.startswith(STREAM_PREFIX):
        end = frame.find(b'"', _PREFIX_LEN)
        if end > 0:
            return frame[_PREFIX_LEN:end]
    return None


def int_field(frame: bytes, key: bytes, start: int = 0) -> int | None:
    """The integer after ``key`` (e.g. ``b'"u":'``), or None when absent or not an integer."""
    i = frame.find(key, start)
    if i < 0:
        return None
    i += len(key)
    j = frame.find(b",", i, i + 24)
    if j < 0:
        j = frame.find(b"}", i, i + 24)
        if j < 0:
            return None
    text = frame[i:j]
    # only plain ASCII digits (int() would also take "+1", " 1" or "1_0", which Binance never sends)
    if not (text[1:] if text[:1] == b"-" else text).isdigit():
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the slow path found in a frame."""

    stream: bytes | None
    event: str | None
    first_id: int | None  # U
    last_id: int | None  # u
    prev_id: int | None  # pu (usdm)
    event_time: int | None  # E (ms)


def parse_slow(frame: bytes) -> Envelope | None:
    """Full JSON parse for frames the fast path did not understand; None if it is not a JSON object."""
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    stream = doc.get("stream")
    inner = doc.get("data")
    data: dict[str, object] = inner if isinstance(inner, dict) else doc

    def as_int(v: object) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    return Envelope(
        stream=stream.encode() if isinstance(stream, str) else None,
        event=event if isinstance(event := data.get("e"), str) else None,
        first_id=as_int(data.get("U")),
        last_id=as_int(data.get("u")),
        prev_id=as_int(data.get("pu")),
        event_time=as_int(data.get("E")),
    )


def depth_head(frame: bytes, pos: int, usdm: bool) -> tuple[int, int, int | None, int] | None:
    """``(U, u, pu, E)`` of a depth frame in Binance's field order, read from ``pos`` (after the stream
    name); None when the frame is laid out differently (the caller then uses :func:`parse_slow`).

    Every search is bounded to the short head of the frame, so the 40+ price levels are never scanned.
    """
    i = frame.find(b'"E":', pos, pos + 96)
    if i < 0:
        return None
    j = frame.find(b",", i, i + 30)
    event_time = frame[i + 4 : j]
    i = frame.find(b'"U":', j, j + 128)
    if i < 0:
        return None
    j = frame.find(b',"u":', i, i + 30)
    if j < 0:
        return None
    k = frame.find(b",", j + 5, j + 30)
    first = frame[i + 4 : j]
    last = frame[j + 5 : k]
    if not (first.isdigit() and last.isdigit() and event_time.isdigit()):
        return None
    prev: int | None = None
    if usdm:
        if not frame.startswith(b'"pu":', k + 1):
            return None
        m = frame.find(b",", k + 6, k + 30)
        pu = frame[k + 6 : m]
        if not (pu[1:] if pu[:1] == b"-" else pu).isdigit():
            return None
        prev = int(pu)
    return int(first), int(last), prev, int(event_time)
