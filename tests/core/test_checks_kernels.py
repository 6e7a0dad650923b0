"""The merge checks' compiled passes against their plain definitions, and corrupted inputs they must catch."""

from __future__ import annotations

import numpy as np
import polars as pl

from depth_core.checks import SAME_U_RUN_LIMIT, MergeChecker, _same_range_differs
from depth_core.merge_types import StreamInput


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
