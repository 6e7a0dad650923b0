"""Raw layout v2 (one object holds every symbol of a stream): the line decoder, the compiled parser and
validation read v2 objects exactly as they read v1 ones."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depth_core.events import parse_objects
from depth_core.level_parts import read_level_part
from depth_core.raw_format import (
    LineKind,
    RawObjectKey,
    decode_lines,
    encode_line,
    encode_line_v2,
    stream_date_prefix,
)
from depth_core.storeio import read_parquet
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from depth_store.base import ObjectStore
from tests.core.synth import SyntheticExchange, stream_lines, write_stream, write_stream_v2

DATE = "2025-11-24"


def _depth(symbol: str, U: int, u: int) -> str:
    return orjson.dumps(
        {
            "stream": f"{symbol.lower()}@depth@100ms",
            "data": {
                "e": "depthUpdate",
                "E": 1_700_000_000_000,
                "s": symbol,
                "U": U,
                "u": u,
                "b": [["1.00", "2.0"]],
                "a": [],
            },
        }
    ).decode()


def test_v2_key_and_line_round_trip() -> None:
    key = RawObjectKey.for_stream_segment("spot", "eu-1", 1_763_946_000_000_000_000, "abc", 7)
    assert key.layout == 2 and key.symbol is None
    assert key.key.startswith(stream_date_prefix("spot", "eu-1", "2025-11-24"))
    assert RawObjectKey.parse(key.key) == key
    v1 = RawObjectKey.for_segment("spot", "eu-1", "BTCUSDT", 1_763_946_000_000_000_000, "abc", 7)
    assert v1.layout == 1 and RawObjectKey.parse(v1.key) == v1
    data = (
        encode_line_v2(5, LineKind.DEPTH, "BTCUSDT", _depth("BTCUSDT", 1, 2))
        + encode_line_v2(6, LineKind.META, "-", '{"event":"connect"}')
        + encode_line_v2(7, LineKind.SNAPSHOT, "ETHUSDT", '{"lastUpdateId":1,"bids":[],"asks":[]}')
    )
    content = decode_lines(data, layout=2)
    assert not content.problems
    assert [(ln.receive_ns, ln.kind, ln.symbol) for ln in content.lines] == [
        (5, LineKind.DEPTH, "BTCUSDT"),
        (6, LineKind.META, None),
        (7, LineKind.SNAPSHOT, "ETHUSDT"),
    ]
    assert content.lines[0].text == _depth("BTCUSDT", 1, 2).encode()


BAD_V2 = [
    b"12 D BTCUSDT",
    b"12 D btcusdt {}",
    b"12 D - {}",
    b"12 D B {}",
    b"12 D " + b"A" * 31 + b" {}",
    b"12 D  {}",
    b"x1 D BTCUSDT {}",
    b"12 Q BTCUSDT {}",
    b"12 D BTC-USDT {}",
]


def test_v2_header_problems_have_the_same_reasons_in_both_readers() -> None:
    chunk = parse_objects([b"\n".join(BAD_V2) + b"\n"], [None])
    want = [decode_lines(line, layout=2).problems[0][1] for line in BAD_V2]
    assert all(want)
    assert [q.reason for q in chunk.quarantine] == want
    assert [q.sym for q in chunk.quarantine] == [-1] * len(BAD_V2)  # no symbol to attribute them to


symbol_field = st.one_of(
    st.sampled_from([b"BTCUSDT", b"-", b"ETHUSDT", b"B", b"btc"]),
    st.binary(max_size=8).filter(lambda b: b" " not in b and b"\n" not in b),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"1", b"12", b"x", b""]),
            st.sampled_from([b"D", b"M", b"S", b"Q"]),
            symbol_field,
            st.sampled_from([b"{}", b"", b"a b"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_compiled_splitter_accepts_exactly_what_the_decoder_accepts(
    parts: list[tuple[bytes, bytes, bytes, bytes]],
) -> None:
    lines = [b" ".join(p) for p in parts]
    data = b"\n".join(lines) + b"\n"
    decoded = decode_lines(data, layout=2)
    chunk = parse_objects([data], [None])
    header_bad = {q.line_no for q in chunk.quarantine if q.receive_ns is None}
    assert header_bad == {n for n, _r, _t in decoded.problems}


def test_one_v2_batch_splits_into_symbols_and_checks_each_frame_symbol() -> None:
    data = (
        encode_line_v2(1, LineKind.DEPTH, "BTCUSDT", _depth("BTCUSDT", 1, 2))
        + encode_line_v2(2, LineKind.DEPTH, "ETHUSDT", _depth("ETHUSDT", 10, 12))
        + encode_line_v2(3, LineKind.DEPTH, "ETHUSDT", _depth("BTCUSDT", 3, 4))  # frame of another symbol
        + encode_line_v2(4, LineKind.META, "-", '{"event":"connect"}')
        + encode_line_v2(5, LineKind.DEPTH, "BTCUSDT", _depth("BTCUSDT", 3, 4).replace('"1.00"', '"1e0"'))
    )
    v1 = encode_line(6, LineKind.DEPTH, _depth("SOLUSDT", 7, 8))
    chunk = parse_objects([data, v1], [None, "SOLUSDT"])
    names = chunk.symbols
    ev = chunk.events.with_columns(pl.col("sym").replace_strict(dict(enumerate(names))).alias("symbol"))
    assert ev.select("symbol", "u", "obj").rows() == [
        ("BTCUSDT", 2, 0),
        ("ETHUSDT", 12, 0),
        ("SOLUSDT", 8, 1),
    ]
    assert sorted((names[q.sym], q.line_no) for q in chunk.quarantine) == [("BTCUSDT", 5), ("ETHUSDT", 3)]
    assert any("expected ETHUSDT" in q.reason for q in chunk.quarantine)
    assert [(m[1], m[3]) for m in chunk.meta] == [(4, -1)]
    assert [sorted(names[i] for i in held) for held in chunk.object_symbols] == [
        ["BTCUSDT", "ETHUSDT"],
        ["SOLUSDT"],
    ]


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def _validated(store: ObjectStore, stream: str, symbol: str) -> tuple[dict[str, pl.DataFrame], object]:
    rep = validate_symbol_day(store, "spot", stream, symbol, DATE)
    files = {
        name: read_parquet(store, rep.file_key(name))
        for name in ("events.parquet", "snapshots.parquet", "snapshot_levels.parquet", "meta.parquet")
    }
    levels = (
        pl.concat([read_level_part(store, k) for k in rep.level_parts]) if rep.level_parts else pl.DataFrame()
    )
    files["levels"] = levels
    return files, rep


def test_v1_and_v2_objects_of_one_stream_day_validate_like_v1_only(tmp_path: Path) -> None:
    exes = {
        sym: SyntheticExchange(symbol=sym, seed=i + 40, first_id=1000 * (i + 1))
        for i, sym in enumerate(("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    }
    lines: dict[str, list[tuple[int, LineKind, str]]] = {}
    for sym, ex in exes.items():
        ex.run(300)
        lines[sym] = stream_lines(ex, ex.events(3), 20, snapshots=[ex.ids[0], ex.ids[150]])
    v1_only = open_store(str(tmp_path / "v1"))
    mixed = open_store(str(tmp_path / "mixed"))
    for sym, ls in lines.items():
        write_stream(v1_only, "spot", "eu-1", sym, ls, per_object=30)
    # mixed: the first third of every symbol as v1 objects (a collector before the upgrade), the rest as v2
    cut = min(ls[len(ls) // 3][0] for ls in lines.values())
    for sym, ls in lines.items():
        write_stream(mixed, "spot", "eu-1", sym, [ln for ln in ls if ln[0] < cut], per_object=30)
    write_stream_v2(
        mixed,
        "spot",
        "eu-1",
        [(ns, k, sym, t) for sym, ls in lines.items() for ns, k, t in ls if ns >= cut],
        per_object=45,
    )
    assert any(RawObjectKey.parse(i.key).layout == 2 for i in mixed.list("raw/"))
    for sym in lines:
        want, rep_a = _validated(v1_only, "eu-1", sym)
        got, rep_b = _validated(mixed, "eu-1", sym)
        for name, frame in want.items():
            cols = [c for c in frame.columns if c not in ("obj", "line_no", "part")]
            assert got[name].select(cols).equals(frame.select(cols)), (sym, name)
        for attr in (
            "events",
            "levels",
            "snapshots",
            "segments",
            "gaps",
            "quarantined",
            "duplicates",
            "price_decimals",
            "qty_decimals",
            "first_update_id",
            "last_update_id",
        ):
            assert getattr(rep_a, attr) == getattr(rep_b, attr), (sym, attr)
        # every object listed holds this symbol; v2 objects are listed by each symbol they hold
        assert all(o.events > 0 for o in rep_b.objects)  # type: ignore[attr-defined]


def test_stream_day_pass_finds_v1_symbols_without_a_filter(tmp_path: Path) -> None:
    """No ``symbols``: the v1 symbols of the stream are found by a skip-scan listing, v2 ones by reading."""
    from depth_core.validate import validate_stream_day
    from depth_store.counting import CountingStore

    exes = {
        sym: SyntheticExchange(symbol=sym, seed=i + 50, first_id=1000 * (i + 1))
        for i, sym in enumerate(("ADAUSDT", "BTCUSDT", "BTCUSDT2", "ETHUSDT"))
    }
    store = CountingStore(open_store(str(tmp_path / "mixed")))
    v1_only = open_store(str(tmp_path / "v1"))
    for i, (sym, ex) in enumerate(exes.items()):
        ex.run(120)
        ls = stream_lines(ex, ex.events(3), 20, snapshots=[ex.ids[0]])
        write_stream(v1_only, "spot", "eu-1", sym, ls, per_object=20)
        if sym != "ETHUSDT":  # v1 (BTCUSDT beside BTCUSDT2: the skip-scan must not skip the longer name)
            write_stream(store, "spot", "eu-1", sym, ls, per_object=20)
        else:
            write_stream_v2(
                store, "spot", "eu-1", [(ns, k, sym, t) for ns, k, t in ls], per_object=20, session=f"v{i}"
            )
    store.snapshot_and_reset()
    result = validate_stream_day(store, "spot", "eu-1", DATE)
    assert set(result.reports) == set(exes)
    assert store.snapshot()["GET"] == len(list(store.inner.list("raw/"))) + 1 + len(exes)
    for sym in exes:
        want = validate_symbol_day(v1_only, "spot", "eu-1", sym, DATE)
        got = result.reports[sym]
        assert (got.events, got.levels, got.snapshots, got.segments) == (
            want.events,
            want.levels,
            want.snapshots,
            want.segments,
        )
