"""Validated level parts: format 3 (exact integer ticks, compressed in blocks) round-trips every float bit for
bit, falls back to format 1 where ticks are not exact, and formats 1 and 2 of earlier releases stay
readable."""

from __future__ import annotations

import gzip
import io
import threading
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from depth_core.level_parts import (
    _TICK_ARRAYS,
    BLOCK_ROWS,
    LEVEL_COLUMNS,
    LevelPartError,
    encode_level_part,
    format_2_bytes,
    level_part_bytes,
    level_part_columns,
    put_level_part,
    read_level_columns,
    read_level_part,
    read_level_rows,
    release_tick_arrays,
)
from depth_core.storeio import put_parquet
from depth_store import open_store
from depth_store.base import ObjectNotFoundError, ObjectStore

KEY = "validated/market=spot/stream=eu-1/symbol=BTCUSDT/date=2025-11-24/run-levels-00000.parquet"


def _frame(price: list[float], qty: list[float]) -> pl.DataFrame:
    n = len(price)
    return pl.DataFrame(
        {"ev": np.arange(n) // 3, "is_bid": np.arange(n) % 2 == 0, "price": price, "qty": qty},
        schema=LEVEL_COLUMNS,
    )


def _format(store: ObjectStore, key: str) -> tuple[str, dict[bytes, bytes]]:
    """The part's format ("3" in ticks, "1" in floats) and its key-value metadata."""
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    meta = dict(table.schema.metadata or {})
    if str(table.schema.field("price").type) == "double":
        return "1", meta
    return meta[b"depth.level_part_format"].decode(), meta


def _format_2_bytes(frame: pl.DataFrame) -> bytes:
    """A part as earlier releases wrote format 2."""
    return format_2_bytes(encode_level_part(frame)).to_pybytes()


def _bits(frame: pl.DataFrame) -> list[np.ndarray]:
    return [frame[c].to_numpy().view(np.int64) for c in ("price", "qty")]


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def test_ticks_take_the_fewest_decimals_and_round_trip_bit_for_bit(store: ObjectStore) -> None:
    # decimals grow mid-part (0, then 2, then 8): the ticks already written are rescaled
    price = [61837.0, 61837.63, 0.00000001, 61837.6, 12.5, 0.0]
    qty = [1.0, 0.5, 0.00123, 3.0, 0.0, 1234567.89012]
    frame = _frame(price, qty)
    put_level_part(store, KEY, frame)
    kind, meta = _format(store, KEY)
    assert kind == "3"
    assert (meta[b"depth.price_decimals"], meta[b"depth.qty_decimals"]) == (b"8", b"5")
    back = read_level_part(store, KEY)
    assert back.schema == pl.Schema(LEVEL_COLUMNS)
    assert back.select("ev", "is_bid").equals(frame.select("ev", "is_bid"))
    for got, want in zip(_bits(back), _bits(frame), strict=True):
        assert (got == want).all()


def test_a_value_without_exact_ticks_keeps_the_part_in_floats(store: ObjectStore) -> None:
    # 0.1 + 0.2 is not the nearest double to any decimal of <= 15 places; 2**60 is past exact integers
    for bad in (0.1 + 0.2, float(2**60), float("nan"), float("inf")):
        frame = _frame([100.5, bad, 7.25], [1.0, 2.0, 3.0])
        put_level_part(store, KEY, frame)
        kind, meta = _format(store, KEY)
        assert kind == "1", bad
        assert b"depth.level_part_format" not in meta
        back = read_level_part(store, KEY)
        for got, want in zip(_bits(back), _bits(frame), strict=True):
            assert (got == want).all(), bad


def test_ticks_of_long_parts_block_by_block(store: ObjectStore) -> None:
    # past one block of the compiled conversion: decimals grow deep into the part (the blocks before are
    # rescaled), and a value without ticks there still sends the whole part to floats
    rng = np.random.default_rng(7)
    price = np.round(rng.uniform(60_000, 62_000, 20_000), 2)
    qty = np.round(rng.uniform(0, 3, 20_000), 5)
    qty[13_333] = 0.123456789
    frame = pl.DataFrame(
        {"ev": np.arange(20_000) // 7, "is_bid": np.arange(20_000) % 2 == 0, "price": price, "qty": qty},
        schema=LEVEL_COLUMNS,
    )
    put_level_part(store, KEY, frame)
    kind, meta = _format(store, KEY)
    assert kind == "3" and (meta[b"depth.price_decimals"], meta[b"depth.qty_decimals"]) == (b"2", b"9")
    for got, want in zip(_bits(read_level_part(store, KEY)), _bits(frame), strict=True):
        assert (got == want).all()
    qty[17_001] = 0.1 + 0.2
    put_level_part(store, KEY, frame.with_columns(qty=pl.Series(qty)))
    assert _format(store, KEY)[0] == "1"


def test_an_encoded_part_kept_by_a_caller_is_never_overwritten_by_the_next() -> None:
    # tick arrays are reused from part to part, but only once nothing holds them
    first = encode_level_part(_frame([100.25, 100.5, 99.75], [1.0, 2.0, 3.0]))
    kept = first.to_pydict()
    for i in range(5):
        encode_level_part(_frame([1.5 + i, 2.5, 3.5], [4.0, 5.0, 6.0 + i]))
        assert first.to_pydict() == kept
    del first
    again = [encode_level_part(_frame([7.5, 8.5 + i], [9.0, 10.0])) for i in range(2)]
    assert [t["price"].to_pylist() for t in again] == [[75, 85], [75, 95]]


def test_format_1_parts_of_earlier_releases_are_read(store: ObjectStore) -> None:
    frame = _frame([61837.63, 61837.62, 61837.64], [0.5, 0.25, 0.0])
    put_parquet(store, KEY, frame, 131_072, fast=True)  # how level parts were written before format 2
    assert _format(store, KEY)[0] == "1"
    assert read_level_part(store, KEY).equals(frame)


def test_format_2_parts_of_earlier_releases_are_read(store: ObjectStore) -> None:
    frame = _long_part(100_000, 3)  # three row groups
    store.put_bytes(KEY, _format_2_bytes(frame))
    assert _format(store, KEY)[0] == "2"
    assert read_level_part(store, KEY).equals(frame)
    ev, _b, price, _q = read_level_columns(store, KEY, (40_000, 40_001), np.array([40_000]))
    assert ev.tolist() == [40_000] * 3 + [40_001] * 3
    assert price.tolist() == frame.filter(pl.col("ev").is_between(40_000, 40_001))["price"].to_list()


def test_an_event_range_reads_only_those_rows(store: ObjectStore) -> None:
    frame = _frame([float(i) for i in range(30)], [1.0] * 30)
    put_level_part(store, KEY, frame)
    ev, _is_bid, price, _qty = read_level_columns(store, KEY, (3, 5))
    assert ev.tolist() == [3] * 3 + [4] * 3 + [5] * 3
    assert price.tolist() == [float(i) for i in range(9, 18)]


def _with_metadata(data: bytes, metadata: dict[bytes, bytes]) -> bytes:
    table = pq.read_table(io.BytesIO(data))
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), buf)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["2", "3"])
def test_integer_prices_without_their_decimals_are_refused(fmt: str) -> None:
    frame = _frame([61837.63, 61837.62], [0.5, 0.25])
    data = _format_2_bytes(frame) if fmt == "2" else level_part_bytes(encode_level_part(frame)).to_pybytes()
    assert level_part_columns(data)[2].tolist() == [61837.63, 61837.62]
    with pytest.raises(LevelPartError, match="without valid format metadata"):
        level_part_columns(_with_metadata(data, {}), name="p")
    bad = {
        b"depth.level_part_format": fmt.encode(),
        b"depth.price_decimals": b"40",
        b"depth.qty_decimals": b"0",
    }
    with pytest.raises(LevelPartError, match="out of range"):
        level_part_columns(_with_metadata(data, bad))


def test_a_format_3_part_that_does_not_decode_is_an_error_naming_it() -> None:
    frame = _frame([61837.63, 61837.62, 61837.61], [0.5, 0.25, 0.0])  # one event of three rows
    table = pq.read_table(pa.BufferReader(level_part_bytes(encode_level_part(frame))))
    shorter = pq.read_table(pa.BufferReader(level_part_bytes(encode_level_part(frame[:2]))))
    fewer = _frame([61837.63, 61837.62, 61837.61], [0.5, 0.0, 0.0])  # one non-zero quantity, not two
    one_nonzero = pq.read_table(pa.BufferReader(level_part_bytes(encode_level_part(fewer))))
    for column, value, reason in (
        ("price", b"not pcodec", "does not decode"),
        ("ev_rows", shorter["ev_rows"][0].as_py(), "2 event numbers for 3 rows"),
        ("price", shorter["price"][0].as_py(), "price has 2 values for 3 rows"),
        ("qty", one_nonzero["qty"][0].as_py(), "1 non-zero quantities, bits for another number"),
        ("qty_bits", b"", "0 bytes of non-zero bits for 3 rows"),
    ):
        i = table.schema.get_field_index(column)
        broken = table.set_column(i, table.schema.field(i), pa.array([value], pa.binary()))
        buf = io.BytesIO()
        pq.write_table(broken, buf)
        with pytest.raises(LevelPartError, match=f"some part.*{reason}"):
            level_part_columns(buf.getvalue(), name="some part")


def test_a_missing_part_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        read_level_columns(store, KEY)


def _places(text: str) -> int:
    """Decimal places of a decimal string without its trailing zeros ("0.01000000" -> 2)."""
    return len(text.partition(".")[2].rstrip("0"))


@pytest.mark.parametrize(
    "filename", ["hftbacktest_spot_btcusdt_20240808.gz", "hftbacktest_usdm_btcusdt_20240808.gz"]
)
def test_real_levels_round_trip_in_format_2(real_data: Path, store: ObjectStore, filename: str) -> None:
    """Every level of a real recording (decimal strings as Binance sends them, parsed by Python's float), at
    the decimals the strings need (Binance pads them with zeros to 8)."""
    price: list[float] = []
    qty: list[float] = []
    places = [0, 0]
    with gzip.open(real_data / filename) as fh:
        for raw in fh:
            msg = orjson.loads(raw.split(b" ", 1)[1])
            data = msg.get("data", {})
            if "@depth" not in msg.get("stream", ""):
                continue
            for p, q in [*data["b"], *data["a"]]:
                price.append(float(p))
                qty.append(float(q))
                places = [max(places[0], _places(p)), max(places[1], _places(q))]
    assert len(price) > 10_000
    frame = _frame(price, qty)
    put_level_part(store, KEY, frame)
    kind, meta = _format(store, KEY)
    assert kind == "3"
    assert (meta[b"depth.price_decimals"], meta[b"depth.qty_decimals"]) == (
        str(places[0]).encode(),
        str(places[1]).encode(),
    )
    back = read_level_part(store, KEY)
    for got, want in zip(_bits(back), _bits(frame), strict=True):
        assert (got == want).all()
    assert encode_level_part(frame).num_rows == frame.height


def test_a_part_of_several_frames_is_their_concatenation(store: ObjectStore) -> None:
    """The validation hands a part's buffered frames over as they are: ticks continue from frame to frame,
    rescaled when a later frame needs more decimals; one frame without exact ticks keeps all in floats."""
    frames = [
        _frame([61837.0, 61838.0, 61839.0], [1.0, 2.0, 3.0]),
        _frame([61837.5, 61837.25], [4.0, 0.001]),
        _frame([0.00000001, 7.0, 9.5], [5.0, 6.0, 7.0]),
    ]
    whole = pl.concat(frames)
    put_level_part(store, KEY, frames)
    kind, meta = _format(store, KEY)
    assert kind == "3"
    assert (meta[b"depth.price_decimals"], meta[b"depth.qty_decimals"]) == (b"8", b"3")
    back = read_level_part(store, KEY)
    assert back.select("ev", "is_bid").equals(whole.select("ev", "is_bid"))
    for got, want in zip(_bits(back), _bits(whole), strict=True):
        assert (got == want).all()
    frames.append(_frame([0.1 + 0.2], [1.0]))
    put_level_part(store, KEY, frames)
    assert _format(store, KEY)[0] == "1"
    assert read_level_part(store, KEY).equals(pl.concat(frames))


def _long_part(n_events: int, per_event: int) -> pl.DataFrame:
    """``n_events`` events of ``per_event`` rows each (more than one row group of a part)."""
    n = n_events * per_event
    return pl.DataFrame(
        {
            "ev": np.repeat(np.arange(n_events), per_event),
            "is_bid": np.arange(n) % 2 == 0,
            "price": (np.arange(n) % 5000 + 60000).astype(np.float64) / 100,
            "qty": (np.arange(n) % 977).astype(np.float64) / 1000,
        },
        schema=LEVEL_COLUMNS,
    )


def test_events_read_only_the_blocks_that_hold_them(any_store: ObjectStore) -> None:
    """On both backends: with wanted events, blocks holding none are not read; the range is cut exactly
    and the values are those written."""
    frame = _long_part(100_000, 3)  # 300,000 rows: five blocks of 65,536
    assert BLOCK_ROWS == 65_536
    put_level_part(any_store, KEY, frame)
    wanted = np.array([50_000, 50_001])  # both in the third block (rows 131,072 .. 196,607)
    ev, is_bid, price, qty = read_level_columns(any_store, KEY, (0, 99_999), wanted)
    assert ev.min() >= 131_072 // 3 and ev.max() <= 196_607 // 3  # the other blocks were skipped
    for e in wanted.tolist():
        rows = frame.filter(pl.col("ev") == e)
        mine = ev == e
        assert is_bid[mine].tolist() == rows["is_bid"].to_list()
        assert price[mine].tolist() == rows["price"].to_list()
        assert qty[mine].tolist() == rows["qty"].to_list()
    ev, _b, price, _q = read_level_columns(any_store, KEY, (40_000, 40_001))
    assert ev.tolist() == [40_000] * 3 + [40_001] * 3
    assert price.tolist() == frame.filter(pl.col("ev").is_between(40_000, 40_001))["price"].to_list()
    assert len(read_level_columns(any_store, KEY, (200_000, 300_000))[0]) == 0


def test_several_parts_are_read_into_one_set_of_arrays_keeping_only_the_wanted_events(
    store: ObjectStore,
) -> None:
    """A merged file's events often lie in two parts: they are read into one set of arrays, in the parts'
    order; of format-3 blocks only the rows of the wanted events are kept (the other stream's events of
    another batching are a third of its rows), of older formats every row of the event range."""
    first, second = _long_part(100_000, 3), _long_part(150_000, 3).filter(pl.col("ev") >= 100_000)
    old = _long_part(200_000, 2).filter(pl.col("ev") >= 150_000)
    keys = [KEY, KEY.replace("00000", "00001"), KEY.replace("00000", "00002")]
    put_level_part(store, keys[0], first)
    put_level_part(store, keys[1], second)
    store.put_bytes(keys[2], _format_2_bytes(old))
    wanted = np.array([5, 99_999, 100_000, 120_003, 149_999, 150_001])
    ev, is_bid, price, qty = read_level_rows(store, keys, (5, 150_002), wanted)
    rows = pl.concat([first, second, old])
    want = pl.concat(
        [
            rows.filter(pl.col("ev").is_in(wanted[:5].tolist())),
            old.filter(pl.col("ev").is_between(150_000, 150_002)),
        ]
    )
    assert ev.tolist() == want["ev"].to_list()
    assert is_bid.tolist() == want["is_bid"].to_list()
    assert price.tolist() == want["price"].to_list() and qty.tolist() == want["qty"].to_list()
    ev, *_ = read_level_rows(store, keys[:2], None, np.array([7, 7, 130_000]))  # repeated: kept once
    assert ev.tolist() == [7] * 3 + [130_000] * 3
    assert len(read_level_rows(store, keys[:2], None, np.zeros(0, np.int64))[0]) == 0
    store.delete(keys[1])
    with pytest.raises(ObjectNotFoundError) as missing:
        read_level_rows(store, keys, (5, 150_002), wanted)
    assert missing.value.args[0] == keys[1]


def test_a_part_out_of_event_order_is_still_cut_right(store: ObjectStore) -> None:
    frame = _frame([float(i) for i in range(12)], [1.0] * 12).reverse()  # events 3, 2, 1, 0
    put_level_part(store, KEY, frame)
    ev, _is_bid, price, _qty = read_level_columns(store, KEY, (1, 2))
    assert ev.tolist() == [2, 2, 2, 1, 1, 1]
    assert price.tolist() == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0]


def test_tick_arrays_are_one_pool_for_every_writing_thread() -> None:
    # a part encoded on a thread that lives on, then dropped: a part on another thread reuses its ticks
    encoded, done = threading.Event(), threading.Event()

    def encode(out: list[pa.Table], wait: bool) -> None:
        out.append(encode_level_part(_frame([100.25, 100.5, 99.75], [1.0, 2.0, 3.0])))
        if wait:
            encoded.set()
            done.wait(30)

    first: list[pa.Table] = []
    alive = threading.Thread(target=encode, args=(first, True))
    alive.start()
    try:
        assert encoded.wait(30)
        address = first[0]["price"].chunk(0).buffers()[1].address
        first.clear()
        second: list[pa.Table] = []
        other = threading.Thread(target=encode, args=(second, False))
        other.start()
        other.join()
        assert second[0]["price"].chunk(0).buffers()[1].address == address
    finally:
        done.set()
        alive.join()


def test_tick_arrays_not_in_use_are_dropped_when_a_pass_ends() -> None:
    release_tick_arrays()
    kept = encode_level_part(_frame([100.25, 100.5], [1.0, 2.0]))
    before = kept.to_pydict()
    encode_level_part(_frame([7.5, 8.5, 9.5], [9.0, 10.0, 11.0]))  # dropped at once: its ticks are free
    assert len(_TICK_ARRAYS.arrays) == 4
    release_tick_arrays()
    assert len(_TICK_ARRAYS.arrays) == 2  # the kept part's price and qty only
    assert kept.to_pydict() == before


@pytest.mark.parametrize("start", [0, 3])
def test_blocks_keep_every_bit_across_their_boundaries(store: ObjectStore, start: int) -> None:
    """Format 3 cuts a part into blocks: a block ending mid-byte of ``is_bid``, an event split by a block
    boundary, and a frame that starts mid-byte of its Arrow buffer (a slice) all read back exactly."""
    rng = np.random.default_rng(11)
    n = BLOCK_ROWS + 13
    frame = pl.DataFrame(
        {
            "ev": np.repeat(np.arange(n // 7 + 1), 7)[:n] + 1_000_000,
            "is_bid": rng.random(n) < 0.5,
            "price": np.round(rng.uniform(60_000, 62_000, n), 2),
            "qty": np.round(rng.uniform(0, 3, n), 5),
        },
        schema=LEVEL_COLUMNS,
    )[start:]
    put_level_part(store, KEY, frame)
    assert _format(store, KEY)[0] == "3"
    blocks = pq.read_table(io.BytesIO(store.get_bytes(KEY)))
    assert blocks["rows"].to_pylist() == [BLOCK_ROWS, n - start - BLOCK_ROWS]
    assert blocks["first_ev"][1].as_py() == blocks["last_ev"][0].as_py()  # an event across the boundary
    back = read_level_part(store, KEY)
    assert back.select("ev", "is_bid").equals(frame.select("ev", "is_bid"))
    for got, want in zip(_bits(back), _bits(frame), strict=True):
        assert (got == want).all()
    middle = int(blocks["last_ev"][0].as_py())
    ev, is_bid, _p, _q = read_level_columns(store, KEY, (middle, middle))
    assert ev.tolist() == [middle] * 7
    assert is_bid.tolist() == frame.filter(pl.col("ev") == middle)["is_bid"].to_list()


def test_an_empty_part_reads_back_empty(store: ObjectStore) -> None:
    put_level_part(store, KEY, [pl.DataFrame(schema=LEVEL_COLUMNS)])
    assert _format(store, KEY)[0] == "3"
    assert read_level_part(store, KEY).equals(pl.DataFrame(schema=LEVEL_COLUMNS))
    assert all(len(c) == 0 for c in read_level_columns(store, KEY, (0, 10), np.array([1])))


def test_zero_quantities_as_bits_read_back_exactly_whole_and_by_range(store: ObjectStore) -> None:
    """Format 3 keeps ``qty`` as the bits of its non-zero rows and their ticks: a block of mixed rows
    (about half zero, as real days), one of zeros only and one without a zero all read back bit for bit,
    whole and by event ranges that start and end mid-block and mid-byte."""
    rng = np.random.default_rng(5)
    n = 2 * BLOCK_ROWS + 1_001
    qty = np.where(rng.random(n) < 0.46, 0.0, np.round(rng.uniform(0, 3, n), 5))
    qty[BLOCK_ROWS : 2 * BLOCK_ROWS] = 0.0  # the second block: zeros only
    qty[2 * BLOCK_ROWS :] = np.round(rng.uniform(0.001, 3, n - 2 * BLOCK_ROWS), 5)  # the last: none
    frame = pl.DataFrame(
        {
            "ev": np.repeat(np.arange(n // 5 + 1), 5)[:n],
            "is_bid": rng.random(n) < 0.5,
            "price": np.round(rng.uniform(60_000, 62_000, n), 2),
            "qty": qty,
        },
        schema=LEVEL_COLUMNS,
    )
    put_level_part(store, KEY, frame)
    blocks = pq.read_table(io.BytesIO(store.get_bytes(KEY)))
    assert blocks["rows"].to_pylist() == [BLOCK_ROWS, BLOCK_ROWS, 1_001]
    assert [len(b) for b in blocks["qty_bits"].to_pylist()] == [BLOCK_ROWS // 8, BLOCK_ROWS // 8, 126]
    assert (
        read_level_part(store, KEY)["qty"].to_numpy().view(np.int64).tolist() == qty.view(np.int64).tolist()
    )
    for lo, hi in ((3, 9), (BLOCK_ROWS // 5 - 2, BLOCK_ROWS // 5 + 3), (n // 5 - 1, n // 5 + 9)):
        ev, _b, _p, got = read_level_columns(store, KEY, (lo, hi))
        want = frame.filter(pl.col("ev").is_between(lo, hi))
        assert ev.tolist() == want["ev"].to_list()
        assert got.view(np.int64).tolist() == want["qty"].to_numpy().view(np.int64).tolist()
