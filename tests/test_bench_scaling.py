"""The scaling section of `make bench` judges flat memory on the median peaks of several fresh runs."""

from __future__ import annotations

from typing import Any

from benchmarks.run import Bench, peak_rss_runs


def _result(rows: int, runs: list[float]) -> dict[str, Any]:
    return {
        "events": rows // 40,
        "level_rows": rows,
        "total_s": rows / 3e6,
        "cpu_s": rows / 2e6,
        "peak_rss_mib": runs[len(runs) // 2],
        "peak_rss_runs": runs,
    }


def _render(small: list[float], day: list[float]) -> str:
    bench = Bench(False, None)
    bench._warmed = True  # nothing to compile: every run below is given
    bench.results["scaling"] = {  # every fraction given: the section runs nothing
        0.125: _result(4_800_000, small),
        0.25: _result(9_600_000, [800]),
        0.5: _result(19_200_000, [820]),
        1.0: _result(38_500_000, day),
    }
    return bench.scaling()


def test_the_memory_ratio_is_the_ratio_of_median_peaks() -> None:
    text = _render([741, 760, 752], [874, 1002, 901, 944, 932])
    assert "Peak RSS at 1 ÷ at 0.125: 1.24" in text  # 932 / 752, not 874 / 741 of single runs
    assert "**not met**" in text
    assert "1 day 932 MiB (5 run(s): 874, 1002, 901, 944, 932 MiB" in text


def test_a_flat_median_is_met_whatever_one_run_says() -> None:
    text = _render([800, 790, 810], [1000, 880, 900])
    assert "Peak RSS at 1 ÷ at 0.125: 1.12 (flat: ≤ 1.15, issue 15): met" in text


def test_one_run_counts_as_its_own_median() -> None:
    assert peak_rss_runs({"peak_rss_mib": 700.0}) == [700.0]
    assert peak_rss_runs({"peak_rss_mib": 700.0, "peak_rss_runs": [690, 710]}) == [690.0, 710.0]
