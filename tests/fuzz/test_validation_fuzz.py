"""Property tests of the per-stream validation on hostile raw objects (``depth_core.validate``).

Raw objects come from collectors we run, but a bug, a disk error or a stranger with write access to the
bucket can put anything under ``raw/``. Validation must read every line into an event, a snapshot, a note
or a quarantine entry with a reason, never crash, never count a bad line as an event, and never touch a
foreign object.
"""

from __future__ import annotations

import datetime as dt
import gzip
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depth_core.raw_format import LineKind, RawObjectKey, encode_line
from depth_store import open_store

validate = pytest.importorskip("depth_core.validate", reason="the per-stream validation is not there yet")

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DATE = "2026-11-24"
DAY_MS = int(dt.datetime.fromisoformat(DATE).replace(tzinfo=dt.UTC).timestamp() * 1000)
SYMBOL = "BTCUSDT"
STREAM = "eu-1"

BAD_QTY = ["NaN", "-1.00000000", "1e5", "inf", "", "0x10", "1,5"]


def _frame(data: dict[str, object], symbol: str = SYMBOL) -> bytes:
    return orjson.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": data})


def _event(
    first: int, last: int, ms: int, qty: object = "0.50000000", symbol: str = SYMBOL
) -> dict[str, object]:
    return {"e": "depthUpdate", "E": ms, "s": symbol, "U": first, "u": last, "b": [["100.00", qty]], "a": []}


kinds = st.sampled_from(
    [
        "good",
        "good",
        "good",
        "bad_qty",
        "u_before_U",
        "ids_as_text",
        "other_symbol",
        "garbage",
        "backwards",
        "snapshot",
        "bad_snapshot",
        "meta",
    ]
)


@st.composite
def raw_objects(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    """Lines of one raw object; returns (lines, good events, bad event-like lines)."""
    next_id = 1000
    good = bad = 0
    lines: list[bytes] = []
    for i, kind in enumerate(draw(st.lists(kinds, min_size=1, max_size=40))):
        ns = (DAY_MS + 1000 + i) * 10**6
        ms = DAY_MS + 1000 + i
        if kind == "good":
            n = draw(st.integers(1, 5))
            lines.append(encode_line(ns, LineKind.DEPTH, _frame(_event(next_id, next_id + n - 1, ms))))
            next_id += n
            good += 1
        elif kind == "backwards":
            if next_id > 1010:
                lines.append(encode_line(ns, LineKind.DEPTH, _frame(_event(next_id - 10, next_id - 8, ms))))
        elif kind == "bad_qty":
            lines.append(
                encode_line(
                    ns, LineKind.DEPTH, _frame(_event(next_id, next_id, ms, draw(st.sampled_from(BAD_QTY))))
                )
            )
            bad += 1
        elif kind == "u_before_U":
            lines.append(encode_line(ns, LineKind.DEPTH, _frame(_event(next_id + 5, next_id, ms))))
            bad += 1
        elif kind == "ids_as_text":
            ev = _event(next_id, next_id, ms)
            ev["U"], ev["u"] = str(next_id), str(next_id)
            lines.append(encode_line(ns, LineKind.DEPTH, _frame(ev)))
            bad += 1
        elif kind == "other_symbol":
            lines.append(
                encode_line(
                    ns, LineKind.DEPTH, _frame(_event(next_id, next_id, ms, symbol="ETHUSDT"), "ETHUSDT")
                )
            )
            bad += 1
        elif kind == "garbage":
            text = draw(st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b))
            lines.append(encode_line(ns, LineKind.DEPTH, text))
            bad += 1
        elif kind == "snapshot":
            body = {
                "lastUpdateId": next_id - 1,
                "bids": [["100.00", "1.00000000"]],
                "asks": [["101.00", "1.00000000"]],
            }
            lines.append(encode_line(ns, LineKind.SNAPSHOT, orjson.dumps(body)))
        elif kind == "bad_snapshot":
            lines.append(encode_line(ns, LineKind.SNAPSHOT, b'{"lastUpdateId": "x", "bids": 5}'))
        else:
            lines.append(encode_line(ns, LineKind.META, b'{"event":"connect"}'))
    return lines, good, bad


@FUZZ
@given(raw_objects(), st.integers(0, 3))
def test_hostile_raw_objects_are_quarantined_not_fatal(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[list[bytes], int, int], cut: int
) -> None:
    lines, good, bad = case
    root: Path = tmp_path_factory.mktemp("validate") / uuid.uuid4().hex
    store = open_store(str(root))
    key = RawObjectKey.for_segment("spot", STREAM, SYMBOL, (DAY_MS + 1000) * 10**6, "fuzz", 1)
    blob = gzip.compress(b"".join(lines))
    if cut:  # a truncated upload: the complete lines before the cut still count
        blob = blob[: max(10, len(blob) - cut * 7)]
    store.put_bytes(key.key, blob)
    # foreign objects under the raw prefix: skipped, never read, never listed as consumed
    prefix = key.key.rsplit("/", 1)[0]
    foreign = [f"{prefix}/notes.txt", f"{prefix}/0000000000000000001-x-1.ndjson.gz", "raw/README"]
    for k in foreign:
        store.put_bytes(k, b"not a raw object \x00\xff")

    report = validate.validate_symbol_day(store, "spot", STREAM, SYMBOL, DATE)

    assert {o.key for o in report.objects} == {key.key}
    assert all(store.exists(k) for k in foreign)
    if not cut:
        assert report.lines_read == len(lines)
        # every good event is an event; nothing bad became one (a "backwards" line may be a duplicate)
        assert report.events >= good
        assert report.events + report.duplicates <= len(lines) - bad
        assert report.quarantined >= bad
    else:
        assert report.events + report.duplicates <= len(lines) - bad
        assert report.quarantined >= 1, "a truncated object must leave a quarantine entry saying so"


def _as_v2(line: bytes, symbol: bytes) -> bytes:
    ns, kind, rest = line.split(b" ", 2)
    return b" ".join((ns, kind, symbol, rest))


hostile_symbols = st.one_of(
    st.sampled_from([b"btcusdt", b"B", b"", b"-", b"BTC/USDT", b"A" * 31]),
    st.binary(min_size=1, max_size=12).filter(lambda b: b" " not in b and b"\n" not in b and b"\r" not in b),
)


@FUZZ
@given(raw_objects(), st.lists(hostile_symbols, max_size=6), st.integers(0, 3))
def test_hostile_v2_objects_split_by_symbol_are_quarantined_not_fatal(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[list[bytes], int, int],
    symbols: list[bytes],
    cut: int,
) -> None:
    """A v2 object (every symbol of the stream): this symbol's hostile lines, another symbol's good ones and
    lines whose symbol field is garbage. Every line lands in its symbol's output or the stream-day
    quarantine."""
    lines, good, bad = case
    mine = [_as_v2(ln, SYMBOL.encode()) for ln in lines]
    other = [
        encode_line(
            (DAY_MS + 2000 + i) * 10**6,
            LineKind.DEPTH,
            _frame(_event(5000 + i, 5000 + i, DAY_MS + 2000 + i, symbol="ETHUSDT"), "ETHUSDT"),
        )
        for i in range(3)
    ]
    other = [_as_v2(ln, b"ETHUSDT") for ln in other]
    garbage = [
        _as_v2(encode_line((DAY_MS + 3000) * 10**6, LineKind.DEPTH, b"{}"), s)
        for s in symbols
        if s != b"-" and not (2 <= len(s) <= 30 and s.isalnum() and s.upper() == s and s.isascii())
    ]
    garbage += (
        [_as_v2(encode_line((DAY_MS + 3001) * 10**6, LineKind.DEPTH, b"{}"), b"-")] if b"-" in symbols else []
    )
    root: Path = tmp_path_factory.mktemp("validate2") / uuid.uuid4().hex
    store = open_store(str(root))
    key = RawObjectKey.for_stream_segment("spot", STREAM, (DAY_MS + 1000) * 10**6, "fuzz", 1)
    blob = gzip.compress(b"".join(mine + other + garbage))
    if cut:
        blob = blob[: max(10, len(blob) - cut * 7)]
    store.put_bytes(key.key, blob)

    result = validate.validate_stream_day(store, "spot", STREAM, DATE)

    report = result.reports.get(SYMBOL)
    if not cut:
        if lines:
            assert report is not None and {o.key for o in report.objects} == {key.key}
            assert report.lines_read == len(lines)
            assert report.events >= good and report.events + report.duplicates <= len(lines) - bad
            assert report.quarantined >= bad
        else:  # the object holds no line of this symbol: nothing to validate for it
            assert report is None
        assert result.reports["ETHUSDT"].events == 3
        assert result.unattributed_quarantined == len(garbage)
        assert [o.key for o in result.objects] == [key.key]
    elif report is not None:
        assert report.events + report.duplicates <= len(lines) - bad
