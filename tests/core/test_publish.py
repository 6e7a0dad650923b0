"""A verified day never shrinks (issue 14, scenarios 1 and 4): publish, don't overwrite; never smaller.

Each test failed on the merge that wrote its files, state and manifest in place before any check ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from depth_core.layout import merged_day_prefix, merged_manifest_key
from depth_core.merge import MergeReport, merge_symbol_day
from depth_core.publish import manifest_id_ranges, shrink_against
from depth_core.storeio import read_parquet
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from depth_store.base import ObjectStore
from tests.core.synth import DAY0_MS, SyntheticExchange, stream_lines, write_stream

DAY1 = "2025-11-24"
DAY2 = "2025-11-25"
SYM = "BTCUSDT"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def merge(store: ObjectStore, streams: list[str], date: str = DAY1, **kw: Any) -> MergeReport:
    for s in streams:
        validate_symbol_day(store, "spot", s, SYM, date)
    return merge_symbol_day(store, "spot", SYM, date, streams, **kw)


def published_bytes(store: ObjectStore) -> dict[str, bytes]:
    """Every object a reader or the next day can see: merged/ and state/."""
    return {i.key: store.get_bytes(i.key) for root in ("merged/", "state/") for i in store.list(root)}


def day_rows(store: ObjectStore, date: str = DAY1) -> pl.DataFrame:
    keys = sorted(
        i.key for i in store.list(merged_day_prefix("spot", SYM, date)) if i.key.endswith(".parquet")
    )
    return pl.concat([read_parquet(store, k) for k in keys])


def manifest(store: ObjectStore, date: str = DAY1) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(store.get_bytes(merged_manifest_key("spot", SYM, date)))
    return data


def disagreeing(evs: list[dict[str, object]], at: int) -> list[dict[str, object]]:
    """The same events with one level of event ``at`` changed (same id range, other levels)."""
    out = [dict(e) for e in evs]
    bids = [list(lv) for lv in out[at]["b"]] or [["99.50", "1.000"]]  # type: ignore[attr-defined]
    bids[0] = [bids[0][0], "123.456"]
    out[at]["b"] = bids
    return out


def test_failing_remerge_leaves_the_published_day_byte_identical(store: ObjectStore) -> None:
    """Scenario 1: a re-merge whose blocking checks fail publishes nothing; the next day carries the
    published end state."""
    ex = SyntheticExchange(seed=31, start_ms=DAY0_MS + 86_400_000 - 4_000)
    ex.run(80, ms_per_id=100)  # 8 s across midnight: both days have events
    evs = ex.events(4)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[0]]))
    first = merge(store, ["eu-1"])
    assert first.published and first.blocking_passed, first.markdown()
    before = published_bytes(store)
    etag = store.head(merged_manifest_key("spot", SYM, DAY1))
    assert etag is not None and first.manifest_etag == etag.etag  # the etag comes from the write

    # a second stream whose copy of one event disagrees: the re-merge's streams_agree check fails
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, disagreeing(evs, 3), 30))
    second = merge(store, ["eu-1", "ap-1"])
    assert not second.blocking_passed
    assert not second.published and second.refused_reason is not None
    assert "streams_agree" in second.refused_reason
    assert second.manifest_etag is None and second.files == []
    assert published_bytes(store) == before  # byte-identical: files, manifest, end state
    assert list(store.list("staging/")) == []  # the refused version left nothing behind

    # the next day opens from the published (verified) end state, not from the refused run's
    nxt = merge(store, ["eu-1"], date=DAY2)
    assert nxt.opening["source"] == f"carry:{DAY1}" and nxt.published, nxt.markdown()
    carried = day_rows(store, DAY2).filter(pl.col("source") == f"carry:{DAY1}")
    bids, asks = ex.books[int(first.last_update_id or 0)]
    assert (
        dict(
            zip(
                carried.filter(pl.col("side") == "bid")["price"],
                carried.filter(pl.col("side") == "bid")["qty"],
                strict=True,
            )
        )
        == bids
    )
    assert len(carried.filter(pl.col("side") == "ask")) == len(asks)


def test_unpublished_day_is_never_carried(store: ObjectStore) -> None:
    """The previous day's end state comes only from a published version."""
    ex = SyntheticExchange(seed=32, start_ms=DAY0_MS + 86_400_000 - 4_000)
    ex.run(80, ms_per_id=100)
    evs = ex.events(4)
    day2_first = next(i for i in ex.ids if ex.times[i] >= DAY0_MS + 86_400_000)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[0], day2_first + 8]))
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, disagreeing(evs, 2), 30))
    refused = merge(store, ["eu-1", "ap-1"])
    assert not refused.published
    assert store.head(merged_manifest_key("spot", SYM, DAY1)) is None  # nothing of day 1 is visible
    assert list(store.list("state/")) == []
    nxt = merge(store, ["eu-1"], date=DAY2)
    assert nxt.opening["kind"] == "snapshot", nxt.opening
    assert nxt.carry_note is not None and "no published merge" in nxt.carry_note


def test_remerge_with_one_stream_fewer_publishes_nothing_smaller(store: ObjectStore) -> None:
    """Scenario 4: dropping a stream that covered ids the other lacks is refused, naming the loss."""
    ex = SyntheticExchange(seed=33)
    ex.run(300)
    ids = ex.ids
    write_stream(
        store,
        "spot",
        "eu-1",
        SYM,
        stream_lines(ex, ex.events(3), 20, drop=[(ids[100], ids[140])], snapshots=[ids[5], ids[200]]),
    )
    write_stream(store, "spot", "ap-1", SYM, stream_lines(ex, ex.events(5), 30, snapshots=[ids[7]]))
    full = merge(store, ["eu-1", "ap-1"])
    assert full.published and full.gap_count == 0
    before = published_bytes(store)

    fewer = merge(store, ["eu-1"])
    assert fewer.blocking_passed, fewer.markdown()  # on its own the smaller version looks fine
    assert not fewer.published
    reason = fewer.refused_reason or ""
    assert "smaller than the published version" in reason and "ap-1" in reason and "--allow-shrink" in reason
    assert fewer.shrink is not None and fewer.shrink["lost_ids"] > 0
    assert fewer.shrink["lost_streams"] == ["ap-1"]
    assert published_bytes(store) == before

    # an operator may force it; the manifest records why and what was lost
    forced = merge(store, ["eu-1"], allow_shrink="ap-1 decommissioned, data re-checked by ops")
    assert forced.published, forced.refused_reason
    m = manifest(store)
    assert m["allow_shrink"]["reason"] == "ap-1 decommissioned, data re-checked by ops"
    assert m["allow_shrink"]["lost_streams"] == ["ap-1"] and m["allow_shrink"]["lost_ids"] > 0
    assert m["version_id"] == forced.version


def test_same_streams_remerge_is_not_a_shrink(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=34)
    ex.run(120)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, ex.events(4), 20, snapshots=[ex.ids[0]]))
    a = merge(store, ["eu-1"])
    b = merge(store, ["eu-1"])
    assert a.published and b.published and b.shrink is None
    assert manifest(store)["version_id"] == b.version


def test_shrink_comparison_of_manifests() -> None:
    old = {
        "covered": [
            {"first_id": 1, "last_id": 10, "stream": "a"},
            {"first_id": 11, "last_id": 20, "stream": "b"},
        ],
        "images": [{"update_id": 0}],
        "per_stream": {"a": {"events": 3}, "b": {"events": 2}},
    }
    new = {
        "covered": [
            {"first_id": 1, "last_id": 14, "stream": "a"},
            {"first_id": 18, "last_id": 20, "stream": "a"},
        ],
        "images": [{"update_id": 0}],
        "per_stream": {"a": {"events": 3}, "b": {"events": 0}},
    }
    assert manifest_id_ranges(old) == [(-1, 20)]
    finding = shrink_against(old, new)
    assert finding.lost_ranges == [(14, 17)] and finding.lost_ids == 3 and finding.lost_streams == ["b"]
    assert "15..17" in finding.describe()
    assert not shrink_against(new, old).lost_ranges


def test_racing_publishes_of_one_day_have_one_winner(store: ObjectStore) -> None:
    """Two merges that read the same published manifest: the second compare-and-swap is refused and
    withdraws its copies, so the day folder holds exactly the winner's files."""
    import datetime as dt

    from depth_core.layout import published_file_key
    from depth_core.publish import publish_version, read_published

    ex = SyntheticExchange(seed=35)
    ex.run(100)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, ex.events(4), 20, snapshots=[ex.ids[0]]))
    first = merge(store, ["eu-1"])
    seen_by_both = read_published(store, "spot", SYM, DAY1)
    outcomes = []
    for version in ("20991231T000000Z-0000000a", "20991231T000000Z-0000000b"):
        src = f"staging/test/{version}.parquet"
        store.put_bytes(src, version.encode())
        dst = published_file_key("spot", SYM, DAY1, version, 0)
        body = {**(seen_by_both.manifest or {}), "files": [dst], "version_id": version}
        outcomes.append(
            publish_version(
                store,
                "spot",
                SYM,
                DAY1,
                staged=[(src, dst)],
                manifest=body,
                previous=seen_by_both,
                version_state_keys=[],
                started_at=dt.datetime.now(dt.UTC),
            )
        )
    assert outcomes[0].published and not outcomes[1].published
    assert "another merge of this symbol-day published" in (outcomes[1].refused_reason or "")
    day = sorted(i.key for i in store.list(merged_day_prefix("spot", SYM, DAY1)))
    assert day == sorted(
        [
            published_file_key("spot", SYM, DAY1, "20991231T000000Z-0000000a", 0),
            merged_manifest_key("spot", SYM, DAY1),
        ]
    )
    assert manifest(store)["version_id"] == "20991231T000000Z-0000000a" != first.version
    info = store.head(merged_manifest_key("spot", SYM, DAY1))
    assert info is not None and outcomes[0].manifest_etag == info.etag


def test_store_failure_while_publishing_leaves_the_published_day(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that fails half-way withdraws the copies made; the published version stays as it was."""
    from depth_store.base import StoreUnavailableError

    ex = SyntheticExchange(seed=36)
    ex.run(100)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, ex.events(4), 20, snapshots=[ex.ids[0]]))
    assert merge(store, ["eu-1"]).published
    before = published_bytes(store)
    monkeypatch.setattr("depth_core.merge.ROWS_PER_FILE", 20)  # several files, so the copy fails half-way
    real_copy = store.copy
    calls = 0

    def flaky_copy(src: str, dst: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreUnavailableError("store link cut")
        return real_copy(src, dst)

    monkeypatch.setattr(store, "copy", flaky_copy)
    with pytest.raises(StoreUnavailableError):
        merge(store, ["eu-1"])
    assert calls == 3
    assert published_bytes(store) == before
    assert list(store.list("staging/")) == []


def test_publish_cycle_on_both_backends(any_store: ObjectStore) -> None:
    """Publish, re-publish (old version retired, nothing staged left), refuse a smaller one: local and S3
    (server-side copy, conditional manifest writes on moto)."""
    ex = SyntheticExchange(seed=37)
    ex.run(150)
    ids = ex.ids
    write_stream(
        any_store,
        "spot",
        "eu-1",
        SYM,
        stream_lines(ex, ex.events(3), 20, drop=[(ids[60], ids[80])], snapshots=[ids[2], ids[100]]),
    )
    write_stream(any_store, "spot", "ap-1", SYM, stream_lines(ex, ex.events(5), 30, snapshots=[ids[4]]))
    first = merge(any_store, ["eu-1", "ap-1"])
    second = merge(any_store, ["eu-1", "ap-1"])
    assert first.published and second.published and second.previous_version == first.version
    day = {i.key for i in any_store.list(merged_day_prefix("spot", SYM, DAY1))}
    assert day == {*second.files, merged_manifest_key("spot", SYM, DAY1)}
    assert list(any_store.list("staging/")) == []
    info = any_store.head(merged_manifest_key("spot", SYM, DAY1))
    assert info is not None and info.etag == second.manifest_etag
    before = published_bytes(any_store)
    smaller = merge(any_store, ["eu-1"])
    assert not smaller.published and "ap-1" in (smaller.refused_reason or "")
    assert published_bytes(any_store) == before
