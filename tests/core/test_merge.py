"""Merge of synthetic streams against a ground-truth exchange: partials, outages, gaps, conflicts, days."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, cast

import orjson
import polars as pl
import pytest

import depth_core.merge as merge_module
from depth_core.book import OrderBook, replay_merged
from depth_core.layout import merged_day_prefix, merged_manifest_key
from depth_core.merge import MergeReport, merge_symbol_day
from depth_core.raw_format import LineKind
from depth_core.schema import MERGED_SCHEMA
from depth_core.storeio import read_parquet
from depth_core.validate import read_symbol_day_report, validate_symbol_day
from depth_core.validated_layout import EVENTS_FILE, MissingStateError, level_part_keys, validated_file_key
from depth_store import open_store
from depth_store.base import ObjectStore
from tests.core.synth import DAY0_MS, SyntheticExchange, depth_frame, stream_lines, write_stream

DATE = "2025-11-24"
SYM = "BTCUSDT"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def run(store: ObjectStore, streams: list[str], market: str = "spot", date: str = DATE) -> MergeReport:
    for s in streams:
        validate_symbol_day(store, market, s, SYM, date)  # type: ignore[arg-type]
    return merge_symbol_day(store, market, SYM, date, streams)  # type: ignore[arg-type]


def merged(store: ObjectStore, market: str = "spot", date: str = DATE) -> pl.DataFrame:
    prefix = merged_day_prefix(market, SYM, date)  # type: ignore[arg-type]
    keys = sorted(i.key for i in store.list(prefix) if i.key.endswith(".parquet"))
    frames = [read_parquet(store, k) for k in keys]
    return pl.concat(frames) if frames else pl.DataFrame(schema=MERGED_SCHEMA)


def check(report: MergeReport, name: str) -> bool:
    return next(c for c in report.checks if c.name == name).passed


def assert_exact(frame: pl.DataFrame, ex: SyntheticExchange) -> int:
    """After every event of the merged rows, the book equals the exchange's book at its u."""
    seen = 0

    def on_event(book: OrderBook, rows: pl.DataFrame) -> None:
        nonlocal seen
        if not rows["book_exact"][0]:
            return  # after a gap, before its image: the book is not the exchange's (and says so)
        u = int(rows["last_update_id"][0])
        bids, asks = ex.books[u]
        assert book.levels("bid") == bids, f"bids differ after {u}"
        assert book.levels("ask") == asks, f"asks differ after {u}"
        seen += 1

    replay_merged(frame, on_event)
    return seen


def test_identical_partials_both_streams(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=2)
    ex.run(400)
    evs = ex.events(5)
    snaps = [ex.ids[3]]
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=snaps))
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, evs, 25, snapshots=snaps))
    report = run(store, ["eu-1", "ap-1"])
    assert report.blocking_passed, report.markdown()
    assert report.gap_count == 0
    assert report.per_stream["eu-1"].share == 1.0  # earlier receive wins every time
    frame = merged(store)
    assert frame.schema == pl.Schema(MERGED_SCHEMA)
    assert frame["is_snapshot"][0]
    assert assert_exact(frame, ex) > 70
    manifest = orjson.loads(store.get_bytes(merged_manifest_key("spot", SYM, DATE)))
    assert manifest["gaps"] == []
    assert {o["stream"] for o in manifest["raw_objects"]} == {"eu-1", "ap-1"}
    assert manifest["covered"][0]["stream"] == "eu-1"
    summary = json.loads(json.dumps(report.to_dict()))  # JSON-able (stdlib) for the Dagster metadata
    assert summary["per_stream"]["ap-1"]["share"] == 0.0 and "| eu-1 |" in summary["markdown"]
    assert len(summary["preview"]) == 10


def test_different_partials_and_disjoint_outages(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=3)
    ex.run(600)
    a = ex.events([3, 7, 2])
    b = ex.events([5, 4])
    ids = ex.ids
    write_stream(
        store, "spot", "eu-1", SYM, stream_lines(ex, a, 20, drop=[(ids[100], ids[180])], snapshots=[ids[10]])
    )
    write_stream(
        store, "spot", "ap-1", SYM, stream_lines(ex, b, 30, drop=[(ids[300], ids[420])], snapshots=[ids[500]])
    )
    report = run(store, ["eu-1", "ap-1"])
    assert report.blocking_passed, report.markdown()
    assert report.gap_count == 0
    assert 0 < report.per_stream["ap-1"].share < 1
    assert report.coverage == 1.0
    frame = merged(store)
    assert int(frame["is_snapshot"].sum()) == frame.filter(pl.col("is_snapshot"))["price"].len()
    assert frame.filter(pl.col("is_snapshot"))["last_update_id"].unique().to_list() == [ids[10]]
    assert assert_exact(frame, ex) > 100
    snap_check = next(c for c in report.checks if c.name == "agrees_with_rest_snapshots")
    assert snap_check.metadata["compared"] >= 1


def test_common_outage_is_one_gap_reanchored(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=4)
    ex.run(500)
    ids = ex.ids
    a = ex.events(4)
    b = ex.events(6)
    hole = (ids[200], ids[260])
    write_stream(
        store, "spot", "eu-1", SYM, stream_lines(ex, a, 20, drop=[hole], snapshots=[ids[5], ids[300]])
    )
    write_stream(
        store, "spot", "ap-1", SYM, stream_lines(ex, b, 30, drop=[hole], snapshots=[ids[7], ids[280]])
    )
    report = run(store, ["eu-1", "ap-1"])
    assert report.gap_count == 1, report.markdown()
    gap = report.gaps[0]
    assert gap.reanchored_at == ids[280]  # the earliest snapshot after the hole
    assert gap.snapshot_source == "snapshot:ap-1"
    assert ids[190] <= gap.first_id <= gap.last_id <= ids[260]  # events straddle the edges of the hole
    assert report.blocking_passed, report.markdown()
    frame = merged(store)
    images = frame.filter(pl.col("is_snapshot"))
    assert images["source"].unique(maintain_order=True).to_list() == ["snapshot:eu-1", "snapshot:ap-1"]
    assert assert_exact(frame, ex) > 50


def test_conflicting_events_fail_streams_agree(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=5)
    ex.run(200)
    evs = ex.events(5)
    bad = [dict(e) for e in evs]
    victim = bad[20]
    victim["b"] = [["99.50", "7.777"]]
    victim["a"] = []
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[2]]))
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, bad, 30, snapshots=[ex.ids[2]]))
    report = run(store, ["eu-1", "ap-1"])
    outcome = next(c for c in report.checks if c.name == "streams_agree")
    assert not outcome.passed
    assert outcome.blocking
    ex0 = outcome.metadata["examples"][0]
    assert ex0["first_id"] == victim["U"] and ex0["last_id"] == victim["u"]
    assert ex0["streams"] == ["ap-1", "eu-1"]
    assert str(victim["U"]) in outcome.description and "ap-1" in outcome.description


def test_malformed_lines_quarantined_day_still_merges(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=6)
    ex.run(200)
    evs = ex.events(4)
    lines = stream_lines(ex, evs, 20, snapshots=[ex.ids[1]])
    t = lines[10][0]
    lines += [
        (t + 1, LineKind.DEPTH, '{"stream":"x","data":{"e":"depthUpdate","U":1'),  # cut JSON
        (t + 2, LineKind.DEPTH, depth_frame("ETHUSDT", {**evs[3], "s": "ETHUSDT"})),  # wrong symbol
        (t + 3, LineKind.DEPTH, '{"stream":"x","data":{"e":"depthUpdate","E":1,"U":9,"u":8,"b":[],"a":[]}}'),
        (t + 4, LineKind.SNAPSHOT, '{"code":-1003,"msg":"Too many requests"}'),
        (
            t + 5,
            LineKind.DEPTH,
            '{"stream":"x","data":{"e":"depthUpdate","E":1,"U":1,"u":2,"b":[["1e3","1"]],"a":[]}}',
        ),
    ]
    write_stream(store, "spot", "eu-1", SYM, lines)
    # a raw line with a broken header, written around the encoder
    from depth_core.raw_format import RawObjectKey

    key = RawObjectKey.for_segment("spot", "eu-1", SYM, t + 6, "zz", 0)
    import gzip

    store.put_bytes(key.key, gzip.compress(b"not-a-number D {}\n"))
    rep = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    assert rep.quarantined == 6, rep.quarantine_reasons
    assert rep.events == len(evs)
    report = merge_symbol_day(store, "spot", SYM, DATE, ["eu-1"])
    assert report.blocking_passed, report.markdown()
    q = pl.read_parquet(store.scan_location(rep.file_key("quarantine.parquet"))[0])
    reasons = " | ".join(q["reason"].to_list())
    assert "invalid JSON" in reasons and "ETHUSDT" in reasons and "U 9 > u 8" in reasons
    assert "code -1003" in reasons and "receive time" in reasons
    assert assert_exact(merged(store), ex) == len(evs) + 1  # every event plus the opening image


def test_day_boundary_split_by_E_and_carry(store: ObjectStore) -> None:
    start = DAY0_MS + 86_400_000 - 3_000  # 3 s before midnight of day 2
    ex = SyntheticExchange(seed=7, start_ms=start)
    ex.run(900, ms_per_id=7)  # ~6.3 s, crossing midnight
    evs = ex.events(3)
    day1 = "2025-11-24"
    day2 = "2025-11-25"
    # receive clock 1.5 s behind: events of day 2 land in objects filed under day 1
    write_stream(
        store, "spot", "eu-1", SYM, stream_lines(ex, evs, -1500, snapshots=[ex.ids[0]]), per_object=40
    )
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, evs, 900, snapshots=[ex.ids[2]]), per_object=33)
    r1 = run(store, ["eu-1", "ap-1"], date=day1)
    r2 = run(store, ["eu-1", "ap-1"], date=day2)
    assert r1.blocking_passed and r2.blocking_passed, r1.markdown() + r2.markdown()
    assert r2.opening["kind"] == "carry" and r2.opening["source"] == f"carry:{day1}"
    f1, f2 = merged(store, date=day1), merged(store, date=day2)
    e1 = f1.filter(~pl.col("is_snapshot"))
    e2 = f2.filter(~pl.col("is_snapshot"))
    midnight = DAY0_MS + 86_400_000
    assert (e1["exchange_time"].dt.epoch("ms") < midnight).all()
    assert (e2["exchange_time"].dt.epoch("ms") >= midnight).all()
    # every event exactly once across the two days
    n_events = e1.select("last_update_id").n_unique() + e2.select("last_update_id").n_unique()
    assert n_events == len(evs)  # the first event straddles the opening snapshot: kept
    assert set(e1["last_update_id"].to_list()).isdisjoint(e2["last_update_id"].to_list())
    assert f2["source"][0] == f"carry:{day1}"
    assert assert_exact(f1, ex) > 0 and assert_exact(f2, ex) > 0


def test_usdm_pu_chain(store: ObjectStore) -> None:
    ex = SyntheticExchange(market="usdm", seed=8)
    ex.run(500)
    ids = ex.ids
    a = ex.events(4)
    b = ex.events([3, 6])
    write_stream(
        store, "usdm", "eu-1", SYM, stream_lines(ex, a, 20, drop=[(ids[100], ids[150])], snapshots=[ids[4]])
    )
    write_stream(
        store, "usdm", "ap-1", SYM, stream_lines(ex, b, 30, drop=[(ids[300], ids[350])], snapshots=[ids[9]])
    )
    report = run(store, ["eu-1", "ap-1"], market="usdm")
    assert report.blocking_passed, report.markdown()
    assert report.gap_count == 0
    frame = merged(store, market="usdm")
    ev_rows = frame.filter(~pl.col("is_snapshot"))
    assert ev_rows["prev_update_id"].null_count() == 0
    assert ev_rows["transaction_time"].null_count() == 0
    assert assert_exact(frame, ex) > 100


def test_rerun_replaces_files_consistently(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=9)
    ex.run(100)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, ex.events(4), 20, snapshots=[ex.ids[0]]))
    r1 = run(store, ["eu-1"])
    r2 = run(store, ["eu-1"])
    assert r1.published and r2.published and r2.previous_version == r1.version
    assert pl.concat([read_parquet(store, k) for k in r2.files]).equals(merged(store))
    keys = {i.key for i in store.list(merged_day_prefix("spot", SYM, DATE))}
    assert keys == {*r2.files, r2.manifest_key}  # the previous version's files are gone
    assert list(store.list("staging/")) == []  # nothing staged is left behind
    assert [i.key for i in store.list("state/")] == [
        f"state/market=spot/symbol={SYM}/date={DATE}/{r2.version}/end_book.parquet"
    ]


def test_no_raw_data_reports_zero_events(store: ObjectStore) -> None:
    rep = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    assert rep.events == 0 and rep.objects == []
    report = merge_symbol_day(store, "spot", SYM, DATE, ["eu-1"])
    assert report.events == 0 and report.rows == 0


def test_snapshot_that_disagrees_with_the_replay_fails(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=10)
    ex.run(300)
    evs = ex.events(4)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[0]]))
    bad = ex.snapshot(ex.ids[150])
    # an extra bid inside the band both know (above the anchor's deepest bid), where the book has none and
    # which the straddling event (ids[148..151]) did not touch
    floor = min(ex.books[ex.ids[0]][0])
    bids_now = ex.books[ex.ids[150]][0]
    touched = {ex.changes[i][1] for i in ex.ids[148:152]}
    extra = next(
        p
        for p in (round(max(bids_now) - k * 0.01, 2) for k in range(1, 200))
        if p > floor and p not in bids_now and p not in touched
    )
    bad["bids"] = sorted(
        [*cast(list[list[str]], bad["bids"]), [f"{extra:.2f}", "1.000"]], key=lambda lv: -float(lv[0])
    )
    ns = (ex.times[ex.ids[150]] + 50) * 1_000_000
    write_stream(store, "spot", "ap-1", SYM, [(ns, LineKind.SNAPSHOT, orjson.dumps(bad).decode())])
    report = run(store, ["eu-1", "ap-1"])
    outcome = next(c for c in report.checks if c.name == "agrees_with_rest_snapshots")
    assert not outcome.passed and outcome.blocking
    detail = outcome.metadata["details"][0]
    assert detail["stream"] == "ap-1" and detail["last_update_id"] == ex.ids[150]
    assert detail["examples"][0]["price"] == extra and detail["examples"][0]["replay"] == 0.0
    assert outcome.metadata["compared"] == 2  # the opening snapshot and the bad one


def test_crossed_book_fails(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=11)
    ex.run(100)
    evs = ex.events(4)
    evs[10] = {**evs[10], "b": [*cast(list[list[str]], evs[10]["b"]), ["150.00", "1.000"]]}
    for s in ("eu-1", "ap-1"):
        write_stream(store, "spot", s, SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[0]]))
    report = run(store, ["eu-1", "ap-1"])
    outcome = next(c for c in report.checks if c.name == "book_never_crossed")
    assert not outcome.passed and outcome.blocking
    assert outcome.metadata["crossed_ids"][0] == evs[10]["u"]
    assert check(report, "streams_agree")


def test_without_any_snapshot_the_day_is_published_unanchored(store: ObjectStore) -> None:
    """A symbol-day with events but no usable snapshot keeps every event, book_exact false, and says so
    (it used to write nothing and fail as if it had no data)."""
    ex = SyntheticExchange(seed=12)
    ex.run(50)
    evs = ex.events(4)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20))
    report = run(store, ["eu-1"])
    assert report.opening["kind"] == "none"
    assert not check(report, "day_anchored")  # informational, not blocking
    assert report.blocking_passed and report.published, report.markdown()
    assert report.events == len(evs) and report.unanchored_events == len(evs)
    assert f"{len(evs)} events, not anchored" in " ".join(report.problems)
    frame = merged(store)
    assert (
        frame.height == report.rows > 0 and not frame["book_exact"].any() and not frame["is_snapshot"].any()
    )
    assert sorted(frame["last_update_id"].unique().to_list()) == [int(e["u"]) for e in evs]  # type: ignore[call-overload]
    manifest = orjson.loads(store.get_bytes(merged_manifest_key("spot", SYM, DATE)))
    assert manifest["end_state"]["book_exact"] is False  # never carried into the next day


def test_conflict_between_different_batchings_is_named(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=13)
    ex.run(300)
    a = ex.events(2)
    b = ex.events(4)  # every other end of a is an end of b
    victim = dict(b[20])
    victim["a"] = [[p, "9.999"] for p, _q in cast(list[list[str]], victim["a"])] or [["100.00", "9.999"]]
    victim["b"] = cast(list[list[str]], victim["b"])
    b[20] = victim
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, a, 20, snapshots=[ex.ids[0]]))
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, b, 30, snapshots=[ex.ids[0]]))
    report = run(store, ["eu-1", "ap-1"])
    outcome = next(c for c in report.checks if c.name == "streams_agree")
    assert not outcome.passed
    example = outcome.metadata["examples"][0]
    assert (example["first_id"], example["last_id"]) == (victim["U"], victim["u"])
    assert example["streams"] == ["ap-1", "eu-1"] and example["kind"] == "different batching"
    assert report.per_stream["eu-1"].share == 1.0  # the merge itself took eu-1's events


def test_reuploaded_segment_is_a_duplicate_and_objects_list_their_event_dates(store: ObjectStore) -> None:
    start = DAY0_MS + 86_400_000 - 1_000  # 1 s before midnight of day 2
    ex = SyntheticExchange(seed=14, start_ms=start)
    ex.run(400, ms_per_id=7)
    evs = ex.events(4)
    lines = stream_lines(ex, evs, -1500, snapshots=[ex.ids[0]])  # receive clock 1.5 s behind
    write_stream(store, "spot", "eu-1", SYM, lines, per_object=30)
    write_stream(store, "spot", "eu-1", SYM, lines[:30], per_object=30, session="again")  # re-uploaded
    rep1 = validate_symbol_day(store, "spot", "eu-1", SYM, "2025-11-24")
    rep2 = validate_symbol_day(store, "spot", "eu-1", SYM, "2025-11-25")
    assert rep1.duplicates == 30 and rep2.duplicates == 0  # the first 30 lines (events) came twice
    assert rep1.events + rep2.events == len(evs)
    assert rep1.other_day_events > 0  # day-2 events read from day-1 objects, kept for day 2 only
    dates = {tuple(o.event_dates) for o in rep1.objects}
    assert ("2025-11-24", "2025-11-25") in dates  # an object filed under day 1 holding events of both days
    day2_keys = {o.key for o in rep2.objects}
    assert any("date=2025-11-24" in k for k in day2_keys)  # day 2 read day 1's last hour


def test_two_days_on_s3_with_outages_and_a_gap(s3_env: str) -> None:
    """The same code over S3 (moto): raw objects, validated parts read with storage options, carry state."""
    store = open_store(s3_env)
    start = DAY0_MS + 86_400_000 - 1_500
    ex = SyntheticExchange(seed=15, start_ms=start)
    ex.run(400, ms_per_id=7)
    ids = ex.ids
    hole = (ids[250], ids[270])
    write_stream(
        store,
        "spot",
        "eu-1",
        SYM,
        stream_lines(ex, ex.events(3), 20, drop=[hole, (ids[40], ids[60])], snapshots=[ids[0], ids[300]]),
        per_object=40,
    )
    write_stream(
        store,
        "spot",
        "ap-1",
        SYM,
        stream_lines(ex, ex.events(5), 25, drop=[hole, (ids[100], ids[120])], snapshots=[ids[2]]),
        per_object=40,
    )
    r1 = run(store, ["eu-1", "ap-1"], date="2025-11-24")
    r2 = run(store, ["eu-1", "ap-1"], date="2025-11-25")
    assert r1.blocking_passed and r2.blocking_passed, r1.markdown() + r2.markdown()
    assert r2.opening["kind"] == "carry"
    assert r1.gap_count + r2.gap_count == 1
    gap = (r1.gaps + r2.gaps)[0]
    assert gap.reanchored_at == ids[300] and gap.snapshot_source == "snapshot:eu-1"
    frames = [merged(store, date=d) for d in ("2025-11-24", "2025-11-25")]
    assert sum(assert_exact(f, ex) for f in frames) > 60


def test_missing_validated_file_is_an_error_not_an_empty_stream(store: ObjectStore) -> None:
    """A validated file its report names that is gone (events or a level part) stops the merge with
    MissingStateError; nothing is published (validated data may be the only copy after a cleanup)."""
    ex = SyntheticExchange(seed=5)
    ex.run(300)
    evs = ex.events(5)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[3]]))
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, evs, 25, snapshots=[ex.ids[3]]))
    for s in ("eu-1", "ap-1"):
        validate_symbol_day(store, "spot", s, SYM, DATE)
    committed = read_symbol_day_report(store, "spot", "eu-1", SYM, DATE)
    assert committed is not None
    report = committed[0]
    part = next(iter(level_part_keys(report).values()))
    body = store.get_bytes(part)
    store.delete(part)
    with pytest.raises(MissingStateError, match="level part"):
        merge_symbol_day(store, "spot", SYM, DATE, ["eu-1", "ap-1"])
    store.put_bytes(part, body)
    store.delete(validated_file_key(report, EVENTS_FILE))
    with pytest.raises(MissingStateError, match="is missing"):
        merge_symbol_day(store, "spot", SYM, DATE, ["eu-1", "ap-1"])
    assert not store.exists(merged_manifest_key("spot", SYM, DATE))


def test_full_collections_are_deferred_during_a_merge_and_restored_after_it(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = SyntheticExchange(seed=2)
    ex.run(200)
    evs = ex.events(5)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[3]]))
    validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []
    plan = merge_module.plan_merge

    def spy(*args: Any, **kwargs: Any) -> Any:
        during.append(gc.get_threshold())
        if len(during) == 2:
            raise RuntimeError("a merge that fails")
        return plan(*args, **kwargs)

    monkeypatch.setattr(merge_module, "plan_merge", spy)
    assert merge_symbol_day(store, "spot", SYM, DATE, ["eu-1"]).blocking_passed
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError, match="a merge that fails"):
        merge_symbol_day(store, "spot", SYM, DATE, ["eu-1"])
    assert gc.get_threshold() == before  # restored on failure too
    assert [t[:2] for t in during] == [before[:2]] * 2  # young generations collected as usual
    assert all(t[2] > 10**6 for t in during)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_held_events_follow_the_frame_rules_for_lo_and_duplicates(market: str) -> None:
    """The merge's per-event table, read into Arrow memory: ``lo`` by ``lo_expr`` (usdm: ``pu``, else
    ``U - 1``) and exact duplicates dropped, as the polars expressions do."""
    import pyarrow as pa

    from depth_core.idline import lo_expr

    frame = pl.DataFrame(
        {
            "ev": [0, 1, 2, 3],
            "U": [100, 106, 106, 111],
            "u": [105, 110, 110, 120],
            "pu": [None, 105, 105, 110],
            "dup": [False, False, True, False],
        },
        schema_overrides={"pu": pl.Int64},
    )
    want = frame.filter(~pl.col("dup")).drop("dup").with_columns(lo_expr(market))  # type: ignore[arg-type]
    got = merge_module._held_events(market, pa.Table.from_batches(frame.to_arrow().to_batches(2)))  # type: ignore[arg-type]
    assert got.equals(want)
    no_dups = frame.with_columns(pl.lit(False).alias("dup"))
    assert merge_module._held_events(market, no_dups.to_arrow()).height == 4  # type: ignore[arg-type]


def _plan_input(stream: str, ev: list[int], receive_ns: list[int], snapshot_ids: list[int]) -> Any:
    from depth_core.merge_types import StreamInput

    events = pl.DataFrame(
        {"ev": ev, "lo": [99, 105], "u": [105, 110], "receive_ns": receive_ns},
        schema_overrides={"ev": pl.Int64},
    )
    snapshots = pl.DataFrame(
        {
            "snap": list(range(len(snapshot_ids))),
            "last_update_id": snapshot_ids,
            "receive_ns": [1] * len(snapshot_ids),
        },
        schema={"snap": pl.Int64, "last_update_id": pl.Int64, "receive_ns": pl.Int64},
    )
    return StreamInput(stream, {}, events, snapshots, pl.DataFrame(), pl.DataFrame())


def test_the_plan_takes_ties_from_the_first_stream_and_names_each_events_stream_and_ev() -> None:
    """Events with the same ids received at the same time: the first stream's is taken, even where its ev
    numbers are the larger (ev numbers have holes where duplicates were dropped); received earlier by the
    second: the second's, each with its own ev."""
    from depth_core.merge import KIND_EVENT, KIND_SNAPSHOT

    a = _plan_input("a", [7, 8], [10, 20], [100])
    b = _plan_input("b", [0, 3], [10, 20], [])
    plan = merge_module.plan_merge("spot", [a, b], None)
    assert plan.kind.tolist() == [KIND_SNAPSHOT, KIND_EVENT, KIND_EVENT]
    assert plan.stream.tolist() == [0, 0, 0] and plan.ref.tolist() == [0, 7, 8]
    assert plan.update_id.tolist() == [100, 105, 110] and plan.lo.tolist() == [100, 99, 105]
    assert plan.exact.tolist() == [True, True, True]

    b_first = _plan_input("b", [0, 3], [9, 19], [])
    plan = merge_module.plan_merge("spot", [a, b_first], None)
    assert plan.stream.tolist() == [0, 1, 1] and plan.ref.tolist() == [0, 0, 3]
    assert plan.update_id.tolist() == [100, 105, 110]


def test_a_merge_hands_back_what_reading_its_inputs_freed_before_planning(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the validated inputs frees decoded pages; the planning over every event comes next, and would
    come on top of them."""
    ex = SyntheticExchange(seed=2)
    ex.run(200)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, ex.events(5), 20, snapshots=[ex.ids[3]]))
    validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    seen: list[str] = []
    plan = merge_module.plan_merge

    def spy_plan(*args: Any, **kwargs: Any) -> Any:
        seen.append("plan")
        return plan(*args, **kwargs)

    monkeypatch.setattr(merge_module, "release_free_memory", lambda: seen.append("release"))
    monkeypatch.setattr(merge_module, "plan_merge", spy_plan)
    assert merge_symbol_day(store, "spot", SYM, DATE, ["eu-1"]).published
    assert seen[:3] == ["release", "plan", "release"]  # inputs read; planned; the planning's temporaries
