"""The merge checks' compiled passes against their plain definitions, and corrupted inputs they must catch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from depth_core.checks import SAME_U_RUN_LIMIT, MergeChecker, _groups_and_order, _same_range_differs
from depth_core.merge import merge_symbol_day
from depth_core.merge_types import StreamInput
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from depth_store.base import ObjectStore
from tests.core.synth import SyntheticExchange, stream_lines, write_stream

DATE = "2025-11-24"
SYM = "BTCUSDT"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def _events(lo: np.ndarray, u: np.ndarray, h: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"U": lo + 1, "u": u, "lo": lo, "levels_hash": h})


def _disagreements(*streams: pl.DataFrame) -> tuple[int, list[dict[str, object]]]:
    checker = MergeChecker("spot", [f"s{i}" for i in range(len(streams))], 2, 5)
    checker.inputs = [
        StreamInput(f"s{i}", {}, e, pl.DataFrame(), pl.DataFrame(), pl.DataFrame())
        for i, e in enumerate(streams)
    ]
    checker._streams_agree_same_ranges()
    return checker.disagreements_total, checker.disagreements


def _reference(lo: np.ndarray, u: np.ndarray, h: np.ndarray) -> bool:
    hashes: dict[tuple[int, int], set[int]] = {}
    for a, b, c in zip(lo.tolist(), u.tolist(), h.tolist(), strict=True):
        hashes.setdefault((a, b), set()).add(c)
    return any(len(v) > 1 for v in hashes.values())


def test_same_range_pass_equals_its_definition_on_random_events() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        u = rng.integers(0, 12, n).astype(np.int64)
        lo = u - rng.integers(1, 3, n)  # two batchings of some ends
        h = rng.integers(0, 2 if rng.random() < 0.5 else 1, n).astype(np.int64)
        assert _same_range_differs(lo, u, h, np.argsort(u, kind="stable")) == _reference(lo, u, h)


def test_streams_agree_names_a_range_whose_events_differ_and_passes_equal_ones() -> None:
    u = np.arange(10, 1010, 10, dtype=np.int64)
    a = _events(u - 10, u, u * 7)
    b = _events(u - 10, u, u * 7)
    assert _disagreements(a, b) == (0, [])
    b_bad = b.with_columns(
        pl.when(pl.col("u") == 500).then(1).otherwise(pl.col("levels_hash")).alias("levels_hash")
    )
    total, listed = _disagreements(a, b_bad)
    assert total == 1
    assert listed == [{"first_id": 491, "last_id": 500, "streams": ["s0", "s1"], "variants": 2}]
    # another batching of the same end is no conflict here (different lo): the replay check compares those
    other = _events(u - 5, u, u * 3)
    assert _disagreements(a, other) == (0, [])


def test_many_events_of_one_range_are_decided_exactly() -> None:
    """Past SAME_U_RUN_LIMIT events of one u the compiled pass says "maybe" and the sort decides."""
    n = SAME_U_RUN_LIMIT + 6
    lo, u = np.full(n, 90, np.int64), np.full(n, 100, np.int64)
    same = np.full(n, 42, np.int64)
    assert _same_range_differs(lo, u, same, np.arange(n))  # too long to compare pairwise: maybe
    assert _disagreements(_events(lo, u, same)) == (0, [])
    differs = same.copy()
    differs[-1] = 43
    total, listed = _disagreements(_events(lo, u, differs))
    assert total == 1 and listed[0]["variants"] == 2


def _order_reference(snap: np.ndarray, last: np.ndarray, exact: np.ndarray) -> tuple[int, int, bool, bool]:
    """The order rules of schema_and_sort_order written as plain array expressions."""
    d = np.diff(last)
    exact_event = ~snap & exact
    bad = np.flatnonzero((d < 0) | ((d == 0) & snap[1:] & exact_event[:-1]))
    back = np.flatnonzero(exact_event[1:] & ~exact[:-1] & ~snap[:-1])
    return len(bad), int(bad[0] + 1) if len(bad) else -1, bool(np.any(snap & ~exact)), bool(len(back))


def test_order_pass_equals_its_definition_on_random_chunks() -> None:
    rng = np.random.default_rng(9)
    for _ in range(300):
        n = int(rng.integers(1, 80))
        last = np.cumsum(rng.integers(-1 if rng.random() < 0.3 else 0, 3, n)).astype(np.int64)
        first = last - rng.integers(0, 2, n)
        snap = rng.random(n) < 0.2
        exact = rng.random(n) < (0.9 if rng.random() < 0.5 else 1.0)
        starts, *problems = _groups_and_order(snap, last, first, exact)
        assert tuple(problems) == _order_reference(snap, last, exact)
        change = np.r_[True, (snap[1:] != snap[:-1]) | (last[1:] != last[:-1]) | (first[1:] != first[:-1])]
        assert starts.tolist() == np.flatnonzero(change).tolist()


def test_a_merged_chunk_out_of_order_fails_schema_and_sort_order(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merged chunk whose rows are corrupted before the checks see them (two events swapped; an image row
    marked inexact) fails the blocking ``schema_and_sort_order`` check and is not published."""
    ex = SyntheticExchange(seed=31)
    ex.run(120)
    evs = ex.events(3)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[0]]))
    validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    on_chunk = MergeChecker.on_chunk

    def corrupted(self: MergeChecker, chunk: pa.Table, *args: object, **kwargs: object) -> None:
        last = chunk["last_update_id"].to_numpy()
        ends = np.flatnonzero(np.diff(last)) + 1  # first row of each event after the first
        a, b, c = (int(x) for x in ends[10:13])
        rows = np.r_[np.arange(a), np.arange(b, c), np.arange(a, b), np.arange(c, chunk.num_rows)]
        bad = chunk.take(pa.array(rows))
        exact = bad["book_exact"].to_numpy().copy()
        exact[0] = False
        bad = bad.set_column(bad.schema.get_field_index("book_exact"), "book_exact", pa.array(exact))
        on_chunk(self, bad, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MergeChecker, "on_chunk", corrupted)
    report = merge_symbol_day(store, "spot", SYM, DATE, ["eu-1"])
    outcome = next(c for c in report.checks if c.name == "schema_and_sort_order")
    assert not outcome.passed and outcome.blocking and not report.published
    problems = outcome.metadata["problems"]
    assert any(p.startswith("rows out of order at id") for p in problems), problems
    assert "an image row has book_exact false" in problems
