"""The universe pipeline benchmark's truth check (benchmarks/bench_universe_pipeline.py) finds what is
missing."""

from __future__ import annotations

from benchmarks.bench_universe_pipeline import check_truth


def test_truth_check_counts_missing_ids_inside_the_window_and_the_edges_apart() -> None:
    truth = {"spans": {"AUSDT": [[1, 100]], "BUSDT": [[1, 50]]}, "events": {}}
    windows = {"lo": {"AUSDT": 11, "BUSDT": 1}, "hi": {"AUSDT": 90, "BUSDT": 50}}
    merged = {"AUSDT": [(11, 20), (21, 40), (44, 90)], "BUSDT": [(1, 50)]}
    r = check_truth(truth, windows, merged)
    assert r["ids_missing_inside_window"] == 3  # 41..43
    assert r["missing_examples"] == {"AUSDT": [(41, 43)]}
    assert (r["ids_before_first_received"], r["ids_after_last_received"]) == (10, 10)
    assert r["ids_published_inside_window"] == 80 + 50

    whole = check_truth(truth, windows, {"AUSDT": [(11, 90)], "BUSDT": [(1, 50)]})
    assert whole["ids_missing_inside_window"] == 0 and not whole["truth_record_broken"]


def test_truth_check_names_a_symbol_without_output_and_ids_received_but_never_published() -> None:
    truth = {"spans": {"AUSDT": [[1, 10], [20, 30]], "BUSDT": [[1, 5]]}, "events": {}}
    windows = {"lo": {"AUSDT": 1, "BUSDT": 1}, "hi": {"AUSDT": 30, "BUSDT": 5}}
    r = check_truth(truth, windows, {"AUSDT": [(1, 30)]})
    assert r["symbols_without_output"] == ["BUSDT"] and r["ids_missing_inside_window"] == 5
    assert r["truth_record_broken"] == {"AUSDT": [(11, 19)]}
