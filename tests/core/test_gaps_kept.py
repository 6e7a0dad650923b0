"""Nothing dropped at a gap (issue 14, scenario 5): events after ids no stream received stay as rows.

The old merge skipped the events between a gap and the re-anchoring snapshot (``skipped_ids``) and ended the
day at a gap with no snapshot after it, while its coverage check still passed (40 of 98 received events
merged, blocking checks passed, raw then deleted). Here every received event is in the output: rows after
the gap carry ``book_exact`` false until an image re-anchors the book.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest

from depth_core.book import OrderBook, replay_merged
from depth_core.checks import MergeChecker
from depth_core.layout import merged_day_prefix, merged_manifest_key
from depth_core.merge import KIND_EVENT, KIND_SNAPSHOT, MergeReport, Plan, merge_symbol_day
from depth_core.storeio import read_parquet
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from depth_store.base import ObjectStore
from tests.core.synth import SyntheticExchange, stream_lines, write_stream

DATE = "2025-11-24"
SYM = "BTCUSDT"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def merge(store: ObjectStore, streams: list[str]) -> MergeReport:
    for s in streams:
        validate_symbol_day(store, "spot", s, SYM, DATE)
    return merge_symbol_day(store, "spot", SYM, DATE, streams)


def rows(store: ObjectStore) -> pl.DataFrame:
    manifest = orjson.loads(store.get_bytes(merged_manifest_key("spot", SYM, DATE)))
    return pl.concat([read_parquet(store, k) for k in manifest["files"]])


def received_ids(ex: SyntheticExchange, evs: list[dict[str, Any]], drops: list[tuple[int, int]]) -> set[int]:
    return {int(e["u"]) for e in evs if not any(a <= int(e["u"]) <= b for a, b in drops)}


def exact_replay_matches(frame: pl.DataFrame, ex: SyntheticExchange) -> int:
    """Rows with book_exact true replay to the exchange's book; returns how many events were compared."""
    seen = 0

    def on_event(book: OrderBook, ev_rows: pl.DataFrame) -> None:
        nonlocal seen
        if not ev_rows["book_exact"][0]:
            return
        bids, asks = ex.books[int(ev_rows["last_update_id"][0])]
        assert book.levels("bid") == bids and book.levels("ask") == asks
        seen += 1

    replay_merged(frame, on_event)
    return seen


def test_gap_with_no_snapshot_after_keeps_the_rest_of_the_day(store: ObjectStore) -> None:
    """Each stream has its own outage, both miss one range, and no snapshot follows: all kept, inexact."""
    ex = SyntheticExchange(seed=41)
    ex.run(400)
    ids = ex.ids
    a, b = ex.events(4), ex.events(3)
    drop_a = [(ids[150], ids[170]), (ids[250], ids[300])]
    drop_b = [(ids[160], ids[175]), (ids[320], ids[360])]
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, a, 20, drop=drop_a, snapshots=[ids[3]]))
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, b, 30, drop=drop_b))
    report = merge(store, ["eu-1", "ap-1"])
    assert report.gap_count == 1, report.markdown()
    gap = report.gaps[0]
    assert gap.reanchored_at is None and gap.skipped_ids == 0
    assert ids[150] <= gap.first_id <= gap.last_id <= ids[176]  # events straddle the edges of the drops
    assert report.blocking_passed and report.published, report.markdown()

    frame = rows(store)
    got = set(frame.filter(~pl.col("is_snapshot"))["last_update_id"].to_list())
    # every id a stream received is covered by an output event (the output's events tile the received ids)
    out_events = frame.filter(~pl.col("is_snapshot")).unique(["first_update_id", "last_update_id"])
    covered = {
        i
        for lo, hi in out_events.select("first_update_id", "last_update_id").iter_rows()
        for i in range(lo, hi + 1)
    }
    assert received_ids(ex, a, drop_a) | received_ids(ex, b, drop_b) <= covered
    assert max(got) == ids[-1]  # the day runs to its last event
    after = frame.filter(pl.col("last_update_id") > gap.last_id)
    assert after.height and not after["book_exact"].any()  # after the gap the book is unknown, and says so
    first_image = int(frame.with_row_index("r").filter(pl.col("is_snapshot"))["r"][0])
    before = frame.slice(first_image).filter(pl.col("last_update_id") < gap.first_id)  # opening image .. gap
    assert before.height and before["book_exact"].all()
    assert not frame.head(first_image)[
        "book_exact"
    ].any()  # the event ending at the snapshot's id precedes it
    assert exact_replay_matches(frame, ex) > 30
    manifest = orjson.loads(store.get_bytes(merged_manifest_key("spot", SYM, DATE)))
    assert manifest["gaps"][0]["skipped_ids"] == 0 and manifest["inexact_events"] > 0
    assert manifest["end_state"]["book_exact"] is False


def test_events_between_a_gap_and_its_snapshot_are_kept_inexact(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=42)
    ex.run(400)
    ids = ex.ids
    hole = (ids[200], ids[230])
    evs = ex.events(4)
    write_stream(
        store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, drop=[hole], snapshots=[ids[2], ids[300]])
    )
    report = merge(store, ["eu-1"])
    assert report.gap_count == 1 and report.gaps[0].reanchored_at == ids[300]
    assert report.gaps[0].skipped_ids == 0
    assert report.blocking_passed and report.published, report.markdown()
    frame = rows(store)
    stretch = frame.filter(
        (pl.col("last_update_id") > report.gaps[0].last_id)
        & (pl.col("last_update_id") <= ids[300])
        & ~pl.col("is_snapshot")
    )
    assert stretch.height and not stretch["book_exact"].any()
    expected = {int(e["u"]) for e in evs if ids[230] < int(e["u"]) <= ids[300]}
    assert set(stretch["last_update_id"].to_list()) == expected  # every received event of the stretch
    later = frame.filter(pl.col("last_update_id") > ids[300])
    assert later["book_exact"].all()
    image = frame.filter(pl.col("is_snapshot") & (pl.col("last_update_id") == ids[300]))
    assert image.height and image["book_exact"].all()
    assert exact_replay_matches(frame, ex) > 60


def test_coverage_check_fails_when_received_ids_are_missing() -> None:
    """The check compares every stream's received ids with the output's events (not spans)."""
    checker = MergeChecker("spot", ["eu-1"], 2, 3)
    checker.inputs = [SimpleNamespace(stream="eu-1", report={"segments": [[0, 100]]})]  # type: ignore[list-item]
    kind = np.array([KIND_SNAPSHOT, KIND_EVENT, KIND_EVENT], np.int8)
    checker.plan = Plan(
        kind,
        np.zeros(3, np.int32),
        np.zeros(3, np.int64),
        np.array([0, 20, 40]),
        np.array([0, 0, 20]),
        [],
        {},
        0,
        np.ones(3, bool),
    )
    report = MergeReport("spot", SYM, DATE, ["eu-1"], first_update_id=0, last_update_id=40)
    outcome = checker._coverage_check(report)
    assert not outcome.passed and outcome.blocking
    assert outcome.metadata["missing_ids"] == 60
    assert outcome.metadata["missing"][0] == {"stream": "eu-1", "first_id": 41, "last_id": 100}


def test_unanchored_start_then_snapshot(store: ObjectStore) -> None:
    """No carried book: the events before the first snapshot are rows too (book_exact false), then its
    image."""
    ex = SyntheticExchange(seed=43)
    ex.run(200)
    ids = ex.ids
    evs = ex.events(4)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ids[80]]))
    report = merge(store, ["eu-1"])
    assert report.blocking_passed and report.published, report.markdown()
    frame = rows(store)
    assert not frame["book_exact"][0] and not frame["is_snapshot"][0]
    first_image = frame.with_row_index("r").filter(pl.col("is_snapshot"))["r"][0]
    assert not frame.head(first_image)["book_exact"].any() and frame.slice(first_image)["book_exact"].all()
    assert report.unanchored_events == len({int(e["u"]) for e in evs if int(e["u"]) <= ids[80]})
    assert set(frame["last_update_id"].to_list()) >= {int(e["u"]) for e in evs}
    assert exact_replay_matches(frame, ex) > 20
    assert merged_day_prefix("spot", SYM, DATE) in report.files[0]


def test_inexact_stretch_in_the_reader_and_old_files(store: ObjectStore) -> None:
    """book_at refuses an id inside an inexact stretch and answers after the image; a day merged before the
    column existed (no book_exact in its files) reads as exact."""
    from depth_core.reader import InexactBookError, book_at, load_deltas

    ex = SyntheticExchange(seed=44)
    ex.run(300)
    ids = ex.ids
    write_stream(
        store,
        "spot",
        "eu-1",
        SYM,
        stream_lines(ex, ex.events(4), 20, drop=[(ids[100], ids[130])], snapshots=[ids[2], ids[200]]),
    )
    report = merge(store, ["eu-1"])
    inside = int(
        rows(store).filter(~pl.col("book_exact") & (pl.col("last_update_id") > ids[131]))["last_update_id"][0]
    )
    with pytest.raises(InexactBookError):
        book_at(SYM, inside, store=store)
    after = ids[-1]
    bids, _asks = book_at(SYM, after, store=store)
    assert dict(zip(bids["price"], bids["qty"], strict=True)) == ex.books[after][0]
    # rewrite the day's files without the column, as the merge before it wrote them
    for key in report.files:
        old = read_parquet(store, key).filter(pl.col("book_exact")).drop("book_exact")
        path = store.scan_location(key)[0]
        old.write_parquet(path)
    frame = load_deltas(SYM, store=store).collect()
    assert frame["book_exact"].all() and frame.height > 0
