"""The compiled frame parser: exact decimals, the slow path, quarantine reasons, bookTickers."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depth_core.checks import round_trip_failures
from depth_core.events import newline_positions, parse_objects
from depth_core.raw_format import LineKind, decode_lines, encode_line


def lines(*items: tuple[int, LineKind, str]) -> bytes:
    return b"".join(encode_line(ns, kind, text) for ns, kind, text in items)


def depth(U: int, u: int, bids: list[list[str]], asks: list[list[str]], **extra: object) -> str:
    return orjson.dumps(
        {
            "stream": "btcusdt@depth@100ms",
            "data": {
                "e": "depthUpdate",
                "E": 1_700_000_000_000,
                "s": "BTCUSDT",
                "U": U,
                "u": u,
                "b": bids,
                "a": asks,
                **extra,
            },
        }
    ).decode()


decimal_text = st.builds(
    lambda whole, frac, places: f"{whole}.{str(frac).zfill(places)[:places]}" if places else str(whole),
    st.integers(0, 10**7),
    st.integers(0, 10**8),
    st.integers(0, 8),
)


def _assert_parsed_exactly(levels: list[tuple[str, str]]) -> None:
    data = lines((1, LineKind.DEPTH, depth(1, 2, [list(x) for x in levels], [])))
    chunk = parse_objects([data], "BTCUSDT")
    assert chunk.events.height == 1 and not chunk.quarantine
    got = chunk.levels
    for (p_text, q_text), p, q, pd in zip(
        levels, got["price"].to_list(), got["qty"].to_list(), got["price_dec"].to_list(), strict=True
    ):
        assert p == float(p_text) and q == float(q_text)
        assert f"{p:.{pd}f}" == p_text
    assert len(round_trip_failures(got["price"].to_numpy(), int(got["price_dec"].max()))) == 0  # type: ignore[arg-type]


# fewer examples with up to 200 levels each: as many levels checked as 200 examples of up to 20, 1/4 of
# the parses
@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(decimal_text, decimal_text), min_size=1, max_size=200))
def test_decimals_parse_to_the_nearest_double_and_round_trip(levels: list[tuple[str, str]]) -> None:
    _assert_parsed_exactly(levels)


def test_many_random_decimals_parse_exactly_in_one_frame() -> None:
    """A seeded sweep over every decimals count 0..8 and magnitudes up to 10**7 (20,000 levels, one parse)."""
    rng = np.random.default_rng(11)
    levels = []
    for _ in range(20_000):
        places = int(rng.integers(0, 9))
        whole, frac = int(rng.integers(0, 10**7)), int(rng.integers(0, 10**8))
        text = f"{whole}.{str(frac).zfill(places)[:places]}" if places else str(whole)
        levels.append((text, text))
    _assert_parsed_exactly(levels)


def test_round_trip_check_catches_a_value_off_by_one_ulp() -> None:
    vals = np.array([99.99, 0.1, 61837.63])
    assert len(round_trip_failures(vals, 2)) == 0
    assert round_trip_failures(np.nextafter(vals, 1e9), 2).tolist() == [0, 1, 2]


def test_long_mantissa_takes_the_slow_path_and_exponent_is_quarantined() -> None:
    long = "12345678901234567890.5"
    data = lines(
        (1, LineKind.DEPTH, depth(1, 2, [[long, "1"]], [])),
        (2, LineKind.DEPTH, depth(3, 4, [["1e3", "1"]], [])),
        (3, LineKind.DEPTH, depth(5, 6, [], [["2.5", "0.00000001"]], pu=4, T=5)),
    )
    chunk = parse_objects([data], "BTCUSDT")
    assert chunk.events["u"].to_list() == [2, 6]
    assert chunk.levels["price"].to_list() == [float(long), 2.5]
    assert chunk.events["pu"].to_list() == [None, 4]
    assert chunk.events["T"].to_list() == [None, 5]
    assert [q.line_no for q in chunk.quarantine] == [2]
    assert "not a plain non-negative decimal" in chunk.quarantine[0].reason


def test_header_problems_have_the_raw_format_reasons() -> None:
    bad = [b"12 D", b"x1 D {}", b"12 Q {}", b"1" * 20 + b" D {}", b"12  D {}"]
    chunk = parse_objects([b"\n".join(bad) + b"\n"], "BTCUSDT")
    want = [decode_lines(line).problems[0][1] for line in bad]
    assert [q.reason for q in chunk.quarantine] == want
    assert [q.line_no for q in chunk.quarantine] == [1, 2, 3, 4, 5]


def test_objects_keep_their_own_line_numbers_and_unterminated_last_line() -> None:
    a = lines((1, LineKind.DEPTH, depth(1, 2, [["1.0", "1"]], [])))
    b = lines((2, LineKind.DEPTH, "{")).rstrip(b"\n")  # cut JSON, no final newline
    chunk = parse_objects([a, b], "BTCUSDT")
    assert chunk.events["obj"].to_list() == [0]
    assert [(q.object_index, q.line_no) for q in chunk.quarantine] == [(1, 1)]


def test_book_tickers_spot_and_usdm_forms() -> None:
    spot = '{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"1.5","B":"2","a":"1.6","A":"3"}}'
    usdm = (
        '{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":8,"s":"BTCUSDT","b":"1.5","B":"2",'
        '"a":"1.6","A":"3.25","T":5,"E":6}}'
    )
    other = '{"stream":"ethusdt@bookTicker","data":{"u":9,"s":"ETHUSDT","b":"1","B":"1","a":"2","A":"1"}}'
    chunk = parse_objects(
        [
            lines(
                (1, LineKind.BOOK_TICKER, spot),
                (2, LineKind.BOOK_TICKER, usdm),
                (3, LineKind.BOOK_TICKER, other),
            )
        ],
        "BTCUSDT",
    )
    bt = chunk.book_tickers
    assert bt["u"].to_list() == [7, 8]
    assert bt["E"].to_list() == [None, 6]
    assert bt["ask_qty"].to_list() == [3.0, 3.25]
    assert len(chunk.quarantine) == 1 and "ETHUSDT" in chunk.quarantine[0].reason


def test_snapshot_bodies_spot_usdm_and_error() -> None:
    spot = orjson.dumps(
        {"lastUpdateId": 10, "bids": [["1.00", "2.000"]], "asks": [["1.01", "1.000"]]}
    ).decode()
    usdm = orjson.dumps(
        {"lastUpdateId": 11, "E": 5, "T": 4, "bids": [], "asks": [["1.01", "1.000"]]}
    ).decode()
    err = '{"code":-1003,"msg":"Too much request weight used"}'
    chunk = parse_objects(
        [lines((1, LineKind.SNAPSHOT, spot), (2, LineKind.SNAPSHOT, usdm), (3, LineKind.SNAPSHOT, err))],
        "BTCUSDT",
    )
    assert chunk.snapshots["last_update_id"].to_list() == [10, 11]
    assert chunk.snapshots["E"].to_list() == [None, 5]
    assert chunk.snapshots["n_levels"].to_list() == [2, 1]
    assert chunk.snapshot_levels["snap"].to_list() == [0, 0, 1]
    assert "code -1003" in chunk.quarantine[0].reason


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) - 7])
def test_newline_positions_match_a_whole_buffer_comparison(size: int) -> None:
    """Found a window at a time, newlines at and across window edges included."""
    rng = np.random.default_rng(size)
    buf = rng.choice(np.array([10, 32, 48, 123], np.uint8), size=size)
    if size > 2:
        buf[[0, size - 1, min(size - 1, 1 << 20), min(size - 1, (1 << 20) - 1)]] = 10
    assert np.array_equal(newline_positions(buf), np.flatnonzero(buf == 10))
