"""Raw layout 2 primitives beside layout 1: keys of both parse, sort together and rebuild exactly."""

from __future__ import annotations

import gzip

import pytest

from depth_core.raw_format import (
    STREAM_WIDE,
    LineKind,
    RawFormatError,
    RawObjectKey,
    encode_line,
    encode_line_v2,
    read_raw_object,
    stream_date_prefix,
    stream_day_prefix,
)

NS = 1_764_000_000_123_456_789  # 2025-11-24T16:00:00.123456789Z


def test_v2_key_has_no_symbol_part_and_round_trips() -> None:
    key = RawObjectKey.for_stream_segment("spot", "eu-1", NS, "ab12", 3)
    assert key.symbol is None and key.layout == 2
    assert (
        key.key == "raw/market=spot/stream=eu-1/date=2025-11-24/1764000000123456789-ab12-00000003.ndjson.gz"
    )
    assert key.key.startswith(stream_date_prefix("spot", "eu-1", "2025-11-24"))
    assert RawObjectKey.parse(key.key) == key


def test_v1_keys_still_parse_and_build() -> None:
    key = RawObjectKey.for_segment("usdm", "ap-1", "BTCUSDT", NS, "zz", 0)
    assert key.layout == 1 and key.symbol == "BTCUSDT"
    assert key.key.startswith(stream_day_prefix("usdm", "ap-1", "BTCUSDT", "2025-11-24"))
    assert RawObjectKey.parse(key.key) == key


def test_keys_of_both_layouts_sort_together() -> None:
    v2 = RawObjectKey.for_stream_segment("spot", "eu-1", NS + 5, "ab", 2)
    v2_early = RawObjectKey.for_stream_segment("spot", "eu-1", NS, "ab", 1)
    v1 = RawObjectKey.for_segment("spot", "eu-1", "BTCUSDT", NS, "ab", 1)
    assert sorted([v1, v2, v2_early]) == [v2_early, v2, v1]
    assert len({v1, v2, v2_early, RawObjectKey.parse(v2.key)}) == 3


@pytest.mark.parametrize(
    "key",
    [
        "raw/market=spot/stream=eu-1/date=2026-11-24/notes.json",
        "raw/market=spot/stream=eu-1/date=2026-11-24/0000000000000000001-ab-00000001.ndjson",
        "raw/market=spot/stream=EU-1/date=2026-11-24/0000000000000000001-ab-00000001.ndjson.gz",
        "raw/market=spot/stream=eu-1/date=2026-13-24/0000000000000000001-ab-00000001.ndjson.gz",
        "raw/market=spot/stream=eu-1/date=2026-11-24/x/0000000000000000001-ab-00000001.ndjson.gz",
        "raw/market=perp/stream=eu-1/date=2026-11-24/0000000000000000001-ab-00000001.ndjson.gz",
        "raw/market=spot/stream=eu-1/symbol=/date=2026-11-24/0000000000000000001-ab-00000001.ndjson.gz",
    ],
)
def test_foreign_v2_like_keys_are_refused(key: str) -> None:
    with pytest.raises(RawFormatError, match="raw object"):
        RawObjectKey.parse(key)


def test_v2_lines_name_their_symbol_or_the_whole_stream() -> None:
    assert encode_line_v2(7, LineKind.DEPTH, "BTCUSDT", b'{"stream":"btcusdt@depth"}') == (
        b'7 D BTCUSDT {"stream":"btcusdt@depth"}\n'
    )
    assert (
        encode_line_v2(8, LineKind.META, STREAM_WIDE, '{"event":"connect"}') == b'8 M - {"event":"connect"}\n'
    )
    for bad in ("btcusdt", "BTC/USDT", "", " -"):
        with pytest.raises(RawFormatError):
            encode_line_v2(1, LineKind.DEPTH, bad, b"{}")
    with pytest.raises(RawFormatError, match="CR or LF"):
        encode_line_v2(1, LineKind.DEPTH, "BTCUSDT", b"{\n}")


def test_v1_lines_unchanged() -> None:
    line = encode_line(5, LineKind.SNAPSHOT, b'{"lastUpdateId":1}')
    assert line == b'5 S {"lastUpdateId":1}\n'
    assert read_raw_object(gzip.compress(line)).lines[0].text == b'{"lastUpdateId":1}'
