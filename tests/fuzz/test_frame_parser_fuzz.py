"""Property tests of the collector's frame parser (``collectors.frames``).

Whatever bytes a websocket delivers, the parser must return a value or None, never raise (an exception
on the receive path would drop the frames behind it), and its fast slicing path must agree with a full
JSON parse wherever the frame is a well-formed Binance event.
"""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depth_core.names import COLLECTOR_ID_RE, SYMBOL_RE

frames = pytest.importorskip("collectors.frames", reason="the collector's frame parser is not there yet")

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = (b'"U":', b'"u":', b'"pu":', b'"E":')

decimal_text = st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False).map(str)
levels = st.lists(st.tuples(decimal_text, decimal_text).map(list), max_size=60)
update_ids = st.integers(0, 2**63 - 1)


@st.composite
def binance_frames(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """A combined-stream depth frame as Binance sends it, fields possibly in another order."""
    symbol = draw(st.from_regex(r"[a-z0-9]{2,12}", fullmatch=True))
    first = draw(update_ids)
    last = draw(st.integers(first, min(first + 10**6, 2**63 - 1)))
    data: dict[str, object] = {
        "e": "depthUpdate",
        "E": draw(st.integers(0, 2**53)),
        "s": symbol.upper(),
        "U": first,
        "u": last,
        "b": draw(levels),
        "a": draw(levels),
    }
    if draw(st.booleans()):
        data["T"] = draw(st.integers(0, 2**53))
        data["pu"] = draw(st.integers(-1, last))
    items = list(data.items())
    if draw(st.booleans()):
        items = draw(st.permutations(items))
    frame = orjson.dumps({"stream": f"{symbol}@depth@100ms", "data": dict(items)})
    return frame, data


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    for candidate in (data, frames.STREAM_PREFIX + data):
        name = frames.stream_name(candidate)
        assert name is None or isinstance(name, bytes)
        for key in KEYS:
            value = frames.int_field(candidate, key)
            assert value is None or isinstance(value, int)
        env = frames.parse_slow(candidate)
        assert env is None or isinstance(env, frames.Envelope)


@FUZZ
@given(binance_frames())
def test_fast_path_agrees_with_a_full_parse(case: tuple[bytes, dict[str, object]]) -> None:
    frame, data = case
    assert frames.stream_name(frame) == f"{str(data['s']).lower()}@depth@100ms".encode()
    assert frames.int_field(frame, b'"U":') == data["U"]
    assert frames.int_field(frame, b'"u":') == data["u"]
    assert frames.int_field(frame, b'"pu":') == data.get("pu")
    env = frames.parse_slow(frame)
    assert env is not None
    assert (env.first_id, env.last_id, env.prev_id, env.event_time) == (
        data["U"],
        data["u"],
        data.get("pu"),
        data["E"],
    )


wrong_values = st.one_of(
    st.text(max_size=30).map(lambda s: orjson.dumps(s)),
    st.floats(allow_nan=False, allow_infinity=False)
    .filter(lambda f: not f.is_integer())
    .map(repr)
    .map(str.encode),
    st.sampled_from(
        [b"NaN", b"Infinity", b"-Infinity", b"1e5", b"1E+5", b"true", b"false", b"null", b"[]", b"{}"]
    ),
    st.integers(10**30, 10**40).map(lambda i: str(i).encode()),  # far beyond int64
)


@FUZZ
@given(wrong_values)
def test_ids_of_the_wrong_type_are_refused_not_guessed(value: bytes) -> None:
    frame = b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":' + value
    frame += b',"u":' + value + b',"b":[],"a":[]}}'
    for key in (b'"U":', b'"u":'):
        got = frames.int_field(frame, key)
        # Never a number the frame did not hold: an id is an integer or nothing.
        assert got is None or (value.strip().lstrip(b"-").isdigit() and got == int(value))
    env = frames.parse_slow(frame)
    if env is not None:
        assert env.first_id is None or isinstance(env.first_id, int)
        assert not isinstance(env.first_id, bool)


def test_nan_and_exponent_ids_are_none() -> None:
    for value in (b"NaN", b"1e5", b"1.0", b'"12"', b"true"):
        frame = b'{"stream":"x@depth","data":{"U":' + value + b',"u":' + value + b"}}"
        assert frames.int_field(frame, b'"U":') is None
        env = frames.parse_slow(frame)
        assert env is None or env.first_id is None
    assert math.isnan(float("nan"))  # the float parser is not what reads ids


@FUZZ
@given(st.integers(1, 5000))
def test_deep_json_is_refused_without_a_crash(depth: int) -> None:
    frame = b'{"stream":"x@depth","data":' + b"[" * depth + b"]" * depth + b"}"
    env = frames.parse_slow(frame)
    assert env is None or env.first_id is None


def test_huge_frame_is_parsed_on_the_fast_path() -> None:
    levels_text = b",".join([b'["1.00000000","2.00000000"]'] * 200_000)
    frame = (
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":5,"u":9,"b":['
        + levels_text
        + b'],"a":[]}}'
    )
    assert frames.stream_name(frame) == b"btcusdt@depth@100ms"
    assert frames.int_field(frame, b'"U":') == 5
    assert frames.int_field(frame, b'"u":') == 9
    env = frames.parse_slow(frame)
    assert env is not None and (env.first_id, env.last_id) == (5, 9)


config = pytest.importorskip("collectors.config", reason="the collector's configuration is not there yet")
hostile = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["..", "../../etc", "eu-1/../x", "eu\x001", "ëu-1", "EU-1", "", " ", "a" * 33, "btc/usdt"]
    ),
)


@FUZZ
@given(
    st.one_of(hostile, st.from_regex(COLLECTOR_ID_RE, fullmatch=True)),
    st.one_of(hostile, st.from_regex(r"[A-Za-z0-9]{2,12}(,[A-Za-z0-9]{2,12}){0,3}", fullmatch=True)),
)
def test_collector_refuses_bad_names_before_touching_disk(collector_id: str, symbols: str) -> None:
    """A bad id or symbol is a ConfigError (exit 2) before anything starts; a good one never puts the
    default spool outside the user's state dir."""
    env = {"XDG_STATE_HOME": "/nonexistent-state", "HOME": "/nonexistent-home"}
    argv = ["--collector-id", collector_id, "--symbols", symbols, "--store", "/nonexistent-store"]
    try:
        cfg = config.parse_config(argv, env)
    except (config.ConfigError, SystemExit):
        return
    resolved = cfg.spool_dir.resolve()
    assert str(resolved).startswith(("/nonexistent-state/", "/nonexistent-home/")), resolved
    assert cfg.collector_id in resolved.parts
    assert all(SYMBOL_RE.fullmatch(sym) for sym in cfg.symbols)
