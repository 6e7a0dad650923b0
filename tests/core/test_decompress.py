"""Every gzip member of a raw object is read (issue 14, scenario 7).

``cat a.gz b.gz`` is one valid gzip file (RFC 1952: a file is a series of members). The old reader kept
only the first member, silently, and the cleanup then deleted the object with the other members' lines
never merged. Bytes after the last member that are not gzip are reported (a quarantine entry), never
silently ignored.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import orjson
import polars as pl
import pytest

from depth_core import raw_format
from depth_core.merge import merge_symbol_day
from depth_core.raw_format import RawObjectKey, decompress, encode_line
from depth_core.storeio import read_parquet
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from tests.core.synth import SyntheticExchange, stream_lines

LINES = [b"1 D a\n", b"2 D b\n", b"3 D c\n", b"4 D d\n"]


@pytest.fixture(params=["isal", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both paths: the ISA-L fast path and the zlib salvage path must agree."""
    if request.param == "zlib":
        monkeypatch.setattr(raw_format, "_fast_zlib", None)
    elif raw_format._fast_zlib is None:
        pytest.skip("isal not installed")
    return str(request.param)


def test_every_member_is_read(backend: str) -> None:
    data = gzip.compress(b"".join(LINES[:2])) + gzip.compress(LINES[2]) + gzip.compress(LINES[3])
    text, problem = decompress(data)
    assert text == b"".join(LINES) and problem is None


def test_trailing_bytes_that_are_not_gzip_are_reported(backend: str) -> None:
    data = gzip.compress(b"".join(LINES[:2])) + gzip.compress(b"".join(LINES[2:])) + b"junk after the end"
    text, problem = decompress(data)
    assert text == b"".join(LINES)
    assert problem is not None and "18 bytes after the last of 2 gzip member(s) are not gzip" in problem


def test_a_damaged_second_member_keeps_the_first_and_says_so(backend: str) -> None:
    second = gzip.compress(b"".join(LINES[2:]))
    truncated = gzip.compress(b"".join(LINES[:2])) + second[: len(second) - 6]
    text, problem = decompress(truncated)
    assert text.startswith(b"".join(LINES[:2])) and problem is not None and "member 2" in problem
    corrupt = gzip.compress(b"".join(LINES[:2])) + second[:10] + bytes(b ^ 0xFF for b in second[10:])
    text, problem = decompress(corrupt)
    assert text.startswith(b"".join(LINES[:2])) and problem is not None and "gzip" in problem


def test_empty_and_plain_garbage() -> None:
    assert decompress(b"") == (b"", None)
    text, problem = decompress(b"not gzip at all")
    assert text == b"" and problem is not None
    assert zlib.decompress(gzip.compress(b"x"), 16 + zlib.MAX_WBITS) == b"x"


def test_multi_member_object_is_validated_and_merged_whole(tmp_path: Path) -> None:
    """Both members' events reach the merged day; trailing junk is a quarantine entry of that object."""
    store = open_store(str(tmp_path / "store"))
    ex = SyntheticExchange(seed=51)
    ex.run(80)
    evs = ex.events(4)
    lines = stream_lines(ex, evs, 20, snapshots=[ex.ids[0]])
    body = [encode_line(ns, kind, text) for ns, kind, text in sorted(lines, key=lambda x: x[0])]
    half = len(body) // 2
    data = gzip.compress(b"".join(body[:half])) + gzip.compress(b"".join(body[half:])) + b"\x00garbage"
    key = RawObjectKey.for_segment("spot", "eu-1", "BTCUSDT", sorted(lines)[0][0], "s1", 0).key
    store.put_bytes(key, data)
    rep = validate_symbol_day(store, "spot", "eu-1", "BTCUSDT", "2025-11-24")
    assert rep.events == len(evs)  # the old reader saw only the first member's events
    q = read_parquet(store, rep.file_key("quarantine.parquet"))
    reasons = q.filter(pl.col("object_key") == key)["reason"].to_list()
    assert any("not gzip" in r for r in reasons), reasons
    report = merge_symbol_day(store, "spot", "BTCUSDT", "2025-11-24", ["eu-1"])
    assert report.published and report.events == len(evs), report.markdown()
    manifest = orjson.loads(store.get_bytes(report.manifest_key))
    assert [o["key"] for o in manifest["raw_objects"]] == [key]
