"""The as-of level lookup behind ``streams_agree`` (different batchings): dense pass == sorting reference."""

from __future__ import annotations

import numpy as np

from depth_core.checks import _asof_sorted, asof_levels


def test_dense_asof_equals_the_sorting_reference_on_random_chunks() -> None:
    rng = np.random.default_rng(7)
    for i in range(60):
        n, m = int(rng.integers(1, 400)), int(rng.integers(1, 300))
        tick = 10**6 if i % 2 else 1  # 8 decimals with a 0.01 tick: sparse keys, made dense by the gcd
        m_key = (rng.integers(0, 60, n).astype(np.int64) * tick + 6_100_000_000_000) * 2 + rng.integers(
            0, 2, n
        )
        m_b = np.sort(rng.integers(100, 200, n)).astype(np.int64)  # chunk rows in id order, ties = one event
        m_q = rng.integers(0, 5, n).astype(np.float64)
        q_key = np.where(
            rng.random(m) < 0.8,
            m_key[rng.integers(0, n, m)],  # mostly levels the chunk set,
            (6_100_000_000_000 + rng.integers(-10, 70 * tick, m)) * 2,
        )  # some off its grid
        q_b = rng.integers(90, 210, m).astype(np.int64)  # some ends before the chunk's first row
        want = _asof_sorted(m_key, m_b, m_q, q_key, q_b)
        got = asof_levels(m_key, m_b, m_q, q_key, q_b)
        np.testing.assert_array_equal(got, want)


def test_later_row_of_one_event_wins_and_unset_levels_are_nan() -> None:
    m_key = np.array([4, 4, 6], np.int64)
    m_b = np.array([10, 10, 12], np.int64)
    m_q = np.array([1.0, 2.0, 3.0])
    got = asof_levels(m_key, m_b, m_q, np.array([4, 6, 6, 8], np.int64), np.array([10, 11, 12, 12], np.int64))
    np.testing.assert_array_equal(got, [2.0, np.nan, 3.0, np.nan])
