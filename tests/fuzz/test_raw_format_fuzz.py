"""Property tests of the raw-line reader and of every name that reaches a key.

Bad input must become a quarantine entry or a clear error, never a crash that drops other data, and no
name or key a caller (or an attacker-controlled frame) supplies may address anything outside the prefix.
"""

from __future__ import annotations

import gzip
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depth_core.names import (
    COLLECTOR_ID_RE,
    SYMBOL_RE,
    InvalidNameError,
    validate_collector_id,
    validate_symbol,
)
from depth_core.raw_format import (
    SESSION_RE,
    LineKind,
    RawFormatError,
    RawObjectContent,
    RawObjectKey,
    encode_line,
    read_raw_object,
)
from depth_store.base import InvalidKeyError, validate_key

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a frame could carry: anything but CR/LF (Binance never sends them; the writer refuses them).
frame_text = st.binary(max_size=400).filter(lambda b: b"\n" not in b and b"\r" not in b)
raw_lines = st.lists(
    st.tuples(st.integers(0, 10**19 - 1), st.sampled_from(list(LineKind)), frame_text), max_size=30
)
# Names an attacker would try: separators, traversal, NUL, unicode, case tricks.
hostile_names = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["..", ".", "/", "a/b", "../x", "eu-1/../../etc", "x\x00y", "ĀBC", "btc usdt", "", "Eu-1"]
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "-_./\\\x00é", max_size=40),
)


def _gz(lines: list[tuple[int, LineKind, bytes]]) -> tuple[bytes, bytes]:
    plain = b"".join(encode_line(ns, kind, text) for ns, kind, text in lines)
    return plain, gzip.compress(plain)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_the_reader(data: bytes) -> None:
    content = read_raw_object(data)
    assert isinstance(content, RawObjectContent)
    # Whatever did not decode is accounted for as a problem with a reason.
    for _lineno, reason, _text in content.problems:
        assert reason


@FUZZ
@given(st.binary(max_size=4096))
def test_random_plain_text_in_gzip_is_decoded_or_quarantined(data: bytes) -> None:
    content = read_raw_object(gzip.compress(data))
    non_empty = [line for line in data.split(b"\n") if line]
    assert len(content.lines) + len(content.problems) == len(non_empty)


@FUZZ
@given(raw_lines)
def test_encoded_lines_round_trip_exactly(lines: list[tuple[int, LineKind, bytes]]) -> None:
    _plain, data = _gz(lines)
    content = read_raw_object(data)
    assert content.problems == [] or all(not text for _, _, text in lines)
    kept = [(line.receive_ns, line.kind, line.text) for line in content.lines]
    # A line with an empty text still has its receive time and kind; the text is kept byte for byte.
    assert kept == [(ns, kind, text) for ns, kind, text in lines]


@FUZZ
@given(raw_lines.filter(lambda ls: len(ls) > 0), st.data())
def test_truncated_gzip_keeps_every_complete_line_before_the_cut(
    lines: list[tuple[int, LineKind, bytes]], data: st.DataObject
) -> None:
    _plain, whole = _gz(lines)
    # cut >= 1: a zero-byte object decodes as empty without a problem (it holds nothing to lose).
    cut = data.draw(st.integers(1, len(whole) - 1), label="cut")
    content = read_raw_object(whole[:cut])
    kept = [(line.receive_ns, line.kind, line.text) for line in content.lines]
    expected = [(ns, kind, text) for ns, kind, text in lines]
    # What is kept is a prefix of what was written: never an invented or reordered line.
    assert kept == expected[: len(kept)]
    assert any("gzip" in reason for _, reason, _ in content.problems)


@FUZZ
@given(st.binary(max_size=200))
def test_writer_refuses_line_breaks(text: bytes) -> None:
    bad = text + b"\n" + text
    with pytest.raises(RawFormatError):
        encode_line(1, LineKind.DEPTH, bad)


def test_huge_frame_round_trips() -> None:
    frame = b'{"stream":"btcusdt@depth@100ms","data":{"b":[' + b'["1.0","2.0"],' * 400_000 + b'["1","0"]]}}'
    data = gzip.compress(encode_line(123, LineKind.DEPTH, frame))
    content = read_raw_object(data)
    assert content.problems == []
    assert content.lines[0].text == frame


@FUZZ
@given(
    st.one_of(hostile_names, st.from_regex(COLLECTOR_ID_RE, fullmatch=True)),
    st.one_of(hostile_names, st.from_regex(SYMBOL_RE, fullmatch=True)),
    st.integers(0, 10**19 - 1),
    st.one_of(st.text(max_size=20), st.from_regex(SESSION_RE, fullmatch=True)),
    st.integers(0, 10**8 - 1),
)
def test_raw_keys_never_escape_the_raw_prefix(
    stream: str, symbol: str, ns: int, session: str, seq: int
) -> None:
    try:
        key = RawObjectKey.for_segment("spot", stream, symbol, ns, session, seq)
    except InvalidNameError:
        return
    text = key.key
    assert text.startswith(f"raw/market=spot/stream={stream}/symbol={symbol}/")
    assert validate_key(text) == text
    assert ".." not in text.split("/")
    assert text.isascii() and "\x00" not in text
    assert RawObjectKey.parse(text) == key


@FUZZ
@given(hostile_names)
def test_names_are_validated_before_use(name: str) -> None:
    for check in (validate_collector_id, validate_symbol):
        try:
            out = check(name)
        except InvalidNameError as exc:
            assert str(exc)
            continue
        assert out.isascii() and "/" not in out and "\x00" not in out and ".." not in out


foreign_keys = st.one_of(
    st.text(max_size=120).map(lambda s: "raw/" + s),
    st.sampled_from(
        [
            "raw/README.txt",
            "raw/market=spot/stream=eu-1/symbol=BTCUSDT/date=2026-11-24/notes.json",
            "raw/market=spot/stream=eu-1/symbol=BTCUSDT/date=2026-11-24/0000000000000000001-ab-00000001.ndjson",
            "raw/market=spot/stream=EU-1/symbol=BTCUSDT/date=2026-11-24/0000000000000000001-ab-00000001.ndjson.gz",
            "raw/market=spot/stream=eu-1/symbol=btcusdt/date=2026-11-24/0000000000000000001-ab-00000001.ndjson.gz",
            "raw/market=spot/stream=eu-1/symbol=BTCUSDT/date=2026-13-24/0000000000000000001-ab-00000001.ndjson.gz",
            "raw/market=spot/stream=eu-1/symbol=BTCUSDT/date=2026-11-24/../0000000000000000001-ab-00000001.ndjson.gz",
            "raw/market=perp/stream=eu-1/symbol=BTCUSDT/date=2026-11-24/0000000000000000001-ab-00000001.ndjson.gz",
        ]
    ),
)


@FUZZ
@given(foreign_keys)
def test_foreign_keys_under_raw_are_refused_with_a_clear_error(key: str) -> None:
    try:
        parsed = RawObjectKey.parse(key)
    except RawFormatError as exc:
        assert "raw object" in str(exc)
        return
    # Only a canonical key parses, and it rebuilds to exactly itself.
    assert parsed.key == key


@FUZZ
@given(st.text(max_size=200))
def test_store_keys_are_safe_or_refused(key: str) -> None:
    try:
        validate_key(key)
    except InvalidKeyError:
        return
    segments = key.split("/")
    assert key.isascii() and not key.startswith("/")
    assert all(seg not in ("", ".", "..") for seg in segments)
