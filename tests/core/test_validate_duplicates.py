"""Exact duplicates in validation (``_exact_duplicates``): the same events as the whole-table definition."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from depth_core.validate import _DUP_KEYS, _exact_duplicates


def _reference(events: pl.DataFrame) -> np.ndarray:
    """The definition: in receive order (ties by ev), every event whose whole key was seen before."""
    order = events.select("ev", "receive_ns", *_DUP_KEYS).sort("receive_ns", "ev")
    first = order.select(pl.struct(_DUP_KEYS).is_first_distinct())[:, 0].to_numpy()
    dup = np.empty(events.height, np.bool_)
    dup[order["ev"].to_numpy()] = ~first
    return dup


def _events(rng: np.random.Generator, n: int, ids: int) -> pl.DataFrame:
    """Events with few distinct ids (many share (U, u)), some differing only in one other key, nulls in pu."""
    first = rng.integers(0, ids, n)
    return pl.DataFrame(
        {
            "ev": np.arange(n, dtype=np.int64),
            "receive_ns": rng.integers(0, 50, n),  # ties: ev decides
            "U": first,
            "u": first + rng.integers(0, 2, n),
            "pu": first - 1,
            "E": rng.integers(0, 2, n),
            "n_levels": rng.integers(1, 3, n).astype(np.int32),
            "levels_hash": rng.integers(0, 2, n),
        }
    ).with_columns(pl.when(pl.Series(rng.random(n) < 0.3)).then(None).otherwise(pl.col("pu")).alias("pu"))


@pytest.mark.parametrize("seed", range(5))
def test_duplicates_match_the_whole_table_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n, ids in ((1, 1), (2, 1), (50, 5), (2_000, 40), (2_000, 5_000)):
        events = _events(rng, n, ids)
        got = _exact_duplicates(events)
        assert got.dtype == np.bool_ and np.array_equal(got, _reference(events)), (n, ids)


def test_no_shared_ids_means_no_duplicates() -> None:
    events = _events(np.random.default_rng(9), 100, 10).with_columns(
        pl.Series("U", np.arange(100) * 3), pl.Series("u", np.arange(100) * 3 + 2)
    )
    assert not _exact_duplicates(events).any()
    assert not _exact_duplicates(events.clear()).any()
