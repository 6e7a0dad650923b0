"""Live continuity per symbol and the cheap frame parser, on real Binance recordings and edge cases."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from collectors.frames import int_field, parse_slow, stream_name
from collectors.state import Continuity


def real_depth_frames(path: Path) -> list[bytes]:
    out = []
    with gzip.open(path, "rb") as f:
        for raw in f:
            frame = raw.rstrip(b"\n").split(b" ", 1)[1]
            if b"@depth" in frame[:40]:
                out.append(frame)
    return out


def test_fast_path_matches_json_on_real_spot_and_usdm(real_data: Path) -> None:
    for name, usdm in (
        ("hftbacktest_spot_btcusdt_20240808.gz", False),
        ("hftbacktest_usdm_btcusdt_20240808.gz", True),
    ):
        frames = real_depth_frames(real_data / name)
        assert len(frames) > 3000
        track = Continuity()
        for frame in frames:
            data = orjson.loads(frame)["data"]
            assert stream_name(frame) == orjson.loads(frame)["stream"].encode()
            assert int_field(frame, b'"U":') == data["U"]
            assert int_field(frame, b'"u":') == data["u"]
            assert int_field(frame, b'"E":') == data["E"]
            assert int_field(frame, b'"pu":') == data.get("pu")
            start = data["pu"] + 1 if usdm else data["U"]
            assert track.observe(start, data["u"]) is None, f"{name}: unexpected gap at {data['U']}"
        assert track.gaps == 0 and track.duplicates == 0


def test_spot_gap_duplicate_and_overlap() -> None:
    t = Continuity()
    assert t.observe(10, 12) is None
    assert t.observe(13, 15) is None
    assert t.observe(11, 14) is None and t.duplicates == 1  # already covered: a duplicate
    assert t.observe(14, 18) is None  # overlaps (another batching): continues
    assert t.observe(22, 25) == (19, 21)
    assert (t.gaps, t.missing_ids, t.last_id) == (1, 3, 25)
    assert t.observe(26, 26) is None  # never resets: carries on after the gap


def test_usdm_chain_on_pu() -> None:
    t = Continuity()
    # usdm start = pu + 1
    assert t.observe(100 + 1, 120) is None
    assert t.observe(120 + 1, 150) is None  # pu == previous u
    assert t.observe(170 + 1, 200) == (151, 170)  # pu 170 != 150: events (150, 170] missed
    assert t.gaps == 1


def test_slow_path_handles_other_field_orders_and_garbage() -> None:
    frame = b'{"data":{"u":5,"U":3,"E":9,"e":"depthUpdate","s":"X"},"stream":"x@depth@100ms"}'
    assert stream_name(frame) is None
    env = parse_slow(frame)
    assert env is not None and (env.stream, env.first_id, env.last_id, env.event_time) == (
        b"x@depth@100ms",
        3,
        5,
        9,
    )
    assert parse_slow(b"not json") is None
    assert parse_slow(b"[1,2]") is None
    assert int_field(b'{"U":12a,', b'"U":') is None
    assert int_field(b'{"U":+12,', b'"U":') is None
    assert int_field(b'{"U":12}', b'"U":') == 12


def test_depth_head_agrees_with_json_or_declines(real_data: Path) -> None:
    from collectors.frames import depth_head

    for name, usdm in (
        ("hftbacktest_spot_btcusdt_20240808.gz", False),
        ("hftbacktest_usdm_btcusdt_20240808.gz", True),
    ):
        for frame in real_depth_frames(real_data / name)[:2000]:
            data = orjson.loads(frame)["data"]
            pos = frame.find(b'"', 11)
            assert depth_head(frame, pos, usdm) == (data["U"], data["u"], data.get("pu"), data["E"])
    # another field order or a foreign value: declined (the slow path takes over), never guessed
    assert depth_head(b'{"stream":"x@depth","data":{"u":5,"U":3,"E":9}}', 18, False) is None
    assert depth_head(b'{"stream":"x@depth","data":{"E":9,"U":3,"u":5x,"b":[]}}', 18, False) is None
    assert (
        depth_head(b'{"stream":"x@depth","data":{"E":9,"U":3,"u":5,"b":[]}}', 18, True) is None
    )  # usdm needs pu
    assert depth_head(b'{"stream":"x@depth","data":{"E":9,"U":3,"u":5,"pu":-1,"b":[]}}', 18, True) == (
        3,
        5,
        -1,
        9,
    )


def test_depth_head_regex_matches_every_real_frame_and_agrees_with_json(real_data: Path) -> None:
    """The hot path's one-match head read takes every real Binance depth frame (spot and usdm) and
    reads the same ids as a JSON parse; anything laid out otherwise does not match (general path)."""
    from collectors.frames import DEPTH_HEAD_SPOT, DEPTH_HEAD_USDM

    for name, pattern in (
        ("hftbacktest_spot_btcusdt_20240808.gz", DEPTH_HEAD_SPOT),
        ("hftbacktest_usdm_btcusdt_20240808.gz", DEPTH_HEAD_USDM),
    ):
        for frame in real_depth_frames(real_data / name):
            doc = orjson.loads(frame)
            data = doc["data"]
            m = pattern.match(frame)
            assert m is not None, frame[:160]
            expected = (data["U"], data["u"]) if pattern is DEPTH_HEAD_SPOT else (data["u"], data["pu"])
            assert (m[1].decode(), int(m[2]), int(m[3]), int(m[4])) == (doc["stream"], data["E"], *expected)
    for other in (
        b'{"stream":"x@depth","data":{"u":5,"U":3,"E":9}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":9,"s":"X","U":3,"u":5x,"b":[]}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":9,"s":"X","U":-3,"u":5,"b":[]}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":9,"s":"X","U":\xd9\xa3,"u":5,"b":[]}}',
    ):
        assert DEPTH_HEAD_SPOT.match(other) is None
    usdm = b'{"stream":"x@depth","data":{"e":"depthUpdate","E":9,"T":8,"s":"X","U":3,"u":5,"pu":-1,"b":[]}}'
    assert DEPTH_HEAD_USDM.match(usdm) is not None and DEPTH_HEAD_USDM.match(usdm)[4] == b"-1"  # type: ignore[index]
    assert DEPTH_HEAD_SPOT.match(usdm) is None  # spot's pattern has no "T"
