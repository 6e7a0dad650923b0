"""A merge written as many small files equals the same merge written as one file.

The output loop reads each file's plan items back from the merge's temporary item file and finds that file's
other-batching candidates by plan position; splitting the day into files of a few rows puts images, gaps,
different batchings and usdm's ``pu``/``T`` at file edges, where an off-by-one would show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import orjson
import polars as pl
import pytest

from depth_core.layout import merged_manifest_key
from depth_core.merge import merge_symbol_day
from depth_core.storeio import read_parquet
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from tests.core.synth import SyntheticExchange, stream_lines, write_stream

DATE = "2025-11-24"
SYM = "BTCUSDT"
STABLE = (
    "rows",
    "events",
    "gaps",
    "covered",
    "images",
    "opening",
    "coverage",
    "inexact_events",
    "per_stream",
)


def _write_days(root: Path, market: str, conflict: bool) -> None:
    """Two streams with different batchings (every other end of eu-1's events is an end of ap-1's), disjoint
    outages, a common hole and several snapshots; with ``conflict`` one event of ap-1 disagrees with
    eu-1's batching of the same ids (a different-batching conflict, named by ``streams_agree``)."""
    ex = SyntheticExchange(market=market, seed=21)
    ex.run(700)
    ids = ex.ids
    a = ex.events(2)
    b = ex.events(4)
    if conflict:
        victim = dict(b[60])  # ids outside both outages: eu-1's events are chosen there
        victim["a"] = [[p, "9.999"] for p, _q in cast(list[list[str]], victim["a"])] or [["100.00", "9.999"]]
        b[60] = victim
    hole = (ids[450], ids[470])
    # the day opens with unanchored events, then the first image: the conflict lies after that image, in the
    # first file of a one-file merge (each segment between images is compared)
    first = 10
    store = open_store(str(root))
    write_stream(
        store,
        market,
        "eu-1",
        SYM,
        stream_lines(ex, a, 20, drop=[(ids[100], ids[180]), hole], snapshots=[ids[first], ids[480]]),
    )
    write_stream(
        store,
        market,
        "ap-1",
        SYM,
        stream_lines(ex, b, 30, drop=[(ids[300], ids[420]), hole], snapshots=[ids[first + 2], ids[500]]),
    )


def _merge(root: Path, market: str) -> tuple[pl.DataFrame | None, dict[str, Any] | None, list[Any]]:
    """The merged rows and manifest (None: not published) and the checks' outcomes."""
    store = open_store(str(root))
    for s in ("eu-1", "ap-1"):
        validate_symbol_day(store, market, s, SYM, DATE)  # type: ignore[arg-type]
    report = merge_symbol_day(store, market, SYM, DATE, ["eu-1", "ap-1"])  # type: ignore[arg-type]
    checks = [(c.name, c.passed, c.description, c.metadata) for c in report.checks]
    if not report.published:
        return None, None, checks
    frame = pl.concat([read_parquet(store, k) for k in report.files])
    manifest = orjson.loads(store.get_bytes(merged_manifest_key(market, SYM, DATE)))  # type: ignore[arg-type]
    return frame, manifest, checks


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_many_small_files_equal_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, market: str
) -> None:
    _write_days(tmp_path / "one", market, conflict=False)
    _write_days(tmp_path / "many", market, conflict=False)
    one, one_manifest, one_checks = _merge(tmp_path / "one", market)
    monkeypatch.setattr("depth_core.merge.ROWS_PER_FILE", 37)
    many, many_manifest, many_checks = _merge(tmp_path / "many", market)
    assert one is not None and one_manifest is not None and many_manifest is not None
    assert len(one_manifest["files"]) == 1 and len(many_manifest["files"]) > 20
    assert many is not None and many.equals(one)
    assert {k: many_manifest[k] for k in STABLE} == {k: one_manifest[k] for k in STABLE}
    assert many_checks == one_checks and all(c[1] for c in one_checks)
    assert one_manifest["gaps"] and len(one_manifest["images"]) >= 2  # an image after a gap, mid-day
    # spot has no transaction time nor previous update id (written as null columns, never filled); usdm
    # has both on every event row, and no previous update id on image rows
    events = one.filter(~one["is_snapshot"])
    if market == "spot":
        assert one["transaction_time"].null_count() == one["prev_update_id"].null_count() == one.height
    else:
        assert events["transaction_time"].null_count() == events["prev_update_id"].null_count() == 0
        assert one.filter(one["is_snapshot"])["prev_update_id"].null_count() > 0


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_a_batching_conflict_is_found_the_same_in_small_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, market: str
) -> None:
    _write_days(tmp_path / "one", market, conflict=True)
    _write_days(tmp_path / "many", market, conflict=True)
    _f, _m, one_checks = _merge(tmp_path / "one", market)
    monkeypatch.setattr("depth_core.merge.ROWS_PER_FILE", 37)
    _f, _m, many_checks = _merge(tmp_path / "many", market)
    assert many_checks == one_checks
    agree = next(c for c in one_checks if c[0] == "streams_agree")
    assert not agree[1] and [e.get("kind") for e in agree[3]["examples"]] == ["different batching"]


def test_level_spans_of_events_in_order_and_out_of_order() -> None:
    """A file's chosen events are found among its level rows in one pass when they are in order, by binary
    search when not; both give each event's first row and row count (0 for an event with no levels)."""
    import numpy as np

    from depth_core.merge import _Levels

    ev = np.array([3, 3, 3, 5, 8, 8, 9], np.int64)
    n = len(ev)
    levels = _Levels(ev, np.zeros(n, np.bool_), np.arange(n, dtype=np.float64), np.ones(n))
    for events in ([3, 5, 8, 9], [3, 4, 9, 10], [9, 3, 8], [2, 8, 8]):
        wanted = np.array(events, np.int64)
        start, count = levels.spans(wanted)
        assert start.tolist() == np.searchsorted(ev, wanted, "left").tolist(), events
        assert count.tolist() == [int((ev == e).sum()) for e in events], events
    rows, which, k = levels.rows_of(np.array([8, 3], np.int64))
    assert (
        rows.tolist() == [4, 5, 0, 1, 2]
        and which.tolist() == [0, 0, 1, 1, 1]
        and k.tolist() == [0, 1, 0, 1, 2]
    )
