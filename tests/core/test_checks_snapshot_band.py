"""``agrees_with_rest_snapshots`` compares only the price band both the snapshot and the replay know.

A REST snapshot of limit N knows the top N levels a side; the replay knows the levels of its anchoring image's
price band (plus levels events set). Snapshots of different depths must not disagree about levels beyond
either band, while a disagreement inside the band still fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from depth_core.checks import CheckOutcome
from depth_core.merge import MergeReport, merge_symbol_day
from depth_core.raw_format import LineKind
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from depth_store.base import ObjectStore
from tests.core.synth import DAY0_MS, SyntheticExchange, stream_lines, write_stream

DATE = "2025-11-24"
SYM = "BTCUSDT"
SHALLOW = 10  # levels a side of a shallow snapshot (the synthetic book holds about 40)


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def truncated_snapshot(ex: SyntheticExchange, at_id: int, depth: int | None) -> dict[str, Any]:
    """The exchange's snapshot at ``at_id`` as a REST call with ``limit=depth`` returns it (None: whole
    book)."""
    body = ex.snapshot(at_id)
    if depth is not None:
        body["bids"] = cast(list[list[str]], body["bids"])[:depth]
        body["asks"] = cast(list[list[str]], body["asks"])[:depth]
    return body


def snapshot_line(ex: SyntheticExchange, body: dict[str, Any]) -> tuple[int, LineKind, str]:
    ns = (ex.times[int(body["lastUpdateId"])] + 50) * 1_000_000
    return ns, LineKind.SNAPSHOT, orjson.dumps(body).decode()


def merge_with(
    store: ObjectStore, ex: SyntheticExchange, anchor: dict[str, Any], later: dict[str, Any]
) -> CheckOutcome:
    """eu-1: every event plus the anchoring snapshot; ap-1: only the later snapshot. The snapshot outcome."""
    lines = stream_lines(ex, ex.events(4), 20)
    write_stream(store, "spot", "eu-1", SYM, [*lines, snapshot_line(ex, anchor)])
    write_stream(store, "spot", "ap-1", SYM, [snapshot_line(ex, later)])
    for s in ("eu-1", "ap-1"):
        validate_symbol_day(store, "spot", s, SYM, DATE)
    report: MergeReport = merge_symbol_day(store, "spot", SYM, DATE, ["eu-1", "ap-1"])
    assert report.opening["source"] == "snapshot:eu-1"
    return next(c for c in report.checks if c.name == "agrees_with_rest_snapshots")


def untouched_bid_inside(ex: SyntheticExchange, body: dict[str, Any], straddler_ids: list[int]) -> int:
    """Index of a bid of ``body`` among its top SHALLOW levels whose price no straddling id changed."""
    touched = {ex.changes[i][1] for i in straddler_ids if ex.changes[i][0]}
    bids = cast(list[list[str]], body["bids"])
    return next(k for k in range(1, SHALLOW - 1) if float(bids[k][0]) not in touched)


def test_deep_anchor_compared_with_shallow_snapshot_passes(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=21)
    ex.run(300)
    outcome = merge_with(
        store, ex, truncated_snapshot(ex, ex.ids[0], None), truncated_snapshot(ex, ex.ids[150], SHALLOW)
    )
    assert outcome.passed, outcome.description
    assert outcome.metadata["compared"] == 2


def test_shallow_anchor_compared_with_deep_snapshot_passes(store: ObjectStore) -> None:
    """The deep snapshot holds levels below the anchor's band that no event touched: unknown to the replay."""
    ex = SyntheticExchange(seed=22)
    ex.run(300)
    anchor = truncated_snapshot(ex, ex.ids[0], SHALLOW)
    deep = truncated_snapshot(ex, ex.ids[150], None)
    anchor_floor = float(cast(list[list[str]], anchor["bids"])[-1][0])
    assert float(cast(list[list[str]], deep["bids"])[-1][0]) < anchor_floor  # the case this test is about
    outcome = merge_with(store, ex, anchor, deep)
    assert outcome.passed, outcome.description
    assert outcome.metadata["compared"] == 2


def test_mismatch_inside_the_band_fails_naming_id_and_stream(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=23)
    ex.run(300)
    at = ex.ids[150]
    later = truncated_snapshot(ex, at, None)
    bids = cast(list[list[str]], later["bids"])
    k = untouched_bid_inside(ex, later, ex.ids[148:152])  # events of 4 ids: ids[148..151] straddle ids[150]
    price = float(bids[k][0])
    true_qty = float(bids[k][1])
    bids[k] = [bids[k][0], "777.000"]
    outcome = merge_with(store, ex, truncated_snapshot(ex, ex.ids[0], SHALLOW), later)
    assert not outcome.passed and outcome.blocking
    assert f"id {at} (ap-1)" in outcome.description
    detail = outcome.metadata["details"][0]
    assert detail["stream"] == "ap-1" and detail["last_update_id"] == at
    assert detail["differences"] == 1
    assert detail["examples"][0] == {"side": "bid", "price": price, "snapshot": 777.0, "replay": true_qty}


def test_carried_day_compares_only_the_previous_anchor_band(store: ObjectStore) -> None:
    """Day 2 opens from day 1's carried book, which also holds levels events set beyond day 1's shallow
    anchor.

    Levels beyond that anchor that no event set are unknown to the replay, so a deep snapshot on day 2 must be
    compared only inside the band carried in the state (``anchor_band``), not down to the carried book's
    deepest level.
    """
    start = DAY0_MS + 86_400_000 - 3_000  # 3 s before midnight of day 2
    ex = SyntheticExchange(seed=24, start_ms=start)
    ex.run(60, ms_per_id=100)  # crosses midnight; few enough updates to leave deep original levels untouched
    day1, day2 = DATE, "2025-11-26" if DATE == "2025-11-25" else "2025-11-25"
    anchor = truncated_snapshot(ex, ex.ids[0], SHALLOW)
    midnight = DAY0_MS + 86_400_000
    late = next(i for i in ex.ids if ex.times[i] > midnight + 1_500)
    deep = truncated_snapshot(ex, late, None)
    write_stream(store, "spot", "eu-1", SYM, [*stream_lines(ex, ex.events(4), 20), snapshot_line(ex, anchor)])
    write_stream(store, "spot", "ap-1", SYM, [snapshot_line(ex, deep)])
    reports: list[MergeReport] = []
    for date in (day1, day2):
        for s in ("eu-1", "ap-1"):
            validate_symbol_day(store, "spot", s, SYM, date)
        reports.append(merge_symbol_day(store, "spot", SYM, date, ["eu-1", "ap-1"]))
    assert reports[1].opening["source"] == f"carry:{day1}"
    outcome = next(c for c in reports[1].checks if c.name == "agrees_with_rest_snapshots")
    assert outcome.metadata["compared"] == 1
    assert outcome.passed, outcome.description
