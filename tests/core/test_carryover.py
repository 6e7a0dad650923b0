"""Incremental validation across the gated cleanup: late raw objects are merged, nothing validated is lost."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import polars as pl
import pytest

from depth_core.carryover import CarryOverError
from depth_core.layout import merged_manifest_key
from depth_core.merge import merge_symbol_day
from depth_core.raw_format import LineKind
from depth_core.storeio import put_parquet, read_parquet
from depth_core.validate import validate_symbol_day, validated_day_prefix
from depth_store import open_store
from depth_store.base import ObjectInfo, ObjectStore
from depth_store.local import LocalStore
from tests.core.synth import SyntheticExchange, stream_lines, write_stream
from tests.core.test_merge import assert_exact, merged

DATE = "2025-11-24"
SYM = "BTCUSDT"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def _cleanup(store: ObjectStore) -> list[str]:
    """What the gated cleanup does after a verified merge: delete exactly the manifest's raw objects."""
    manifest = json.loads(store.get_bytes(merged_manifest_key("spot", SYM, DATE)))
    keys = [o["key"] for o in manifest["raw_objects"]]
    for key in keys:
        store.delete(key)
    return keys


def _raw_keys(store: ObjectStore) -> set[str]:
    return {i.key for i in store.list("raw/")}


def _merge(store: ObjectStore) -> None:
    report = merge_symbol_day(store, "spot", SYM, DATE, ["eu-1"])
    assert report.blocking_passed, report.markdown()


def _extras(ex: SyntheticExchange, t: int) -> list[tuple[int, LineKind, str]]:
    """A malformed line, a bookTicker and a collector note: rows that must survive the cleanup too."""
    ticker = orjson.dumps(
        {
            "stream": "btcusdt@bookTicker",
            "data": {"u": ex.ids[5], "s": SYM, "b": "99.99", "B": "1", "a": "100.00", "A": "2"},
        }
    ).decode()
    return [
        (t + 1, LineKind.DEPTH, '{"stream":"x","data":{"e":"depthUpdate","U":1'),
        (t + 2, LineKind.BOOK_TICKER, ticker),
        (t + 3, LineKind.META, '{"event":"connect"}'),
    ]


def test_late_objects_after_cleanup_are_merged_with_everything_validated_before(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=21)
    ex.run(400)
    evs = ex.events(4)
    lines = stream_lines(ex, evs, 20, snapshots=[ex.ids[0]])
    cut_lo, cut_hi = int(evs[60]["U"]), int(evs[79]["u"])  # type: ignore[call-overload]
    late_hi = int(evs[99]["u"])  # type: ignore[call-overload]
    on_time = [ln for ln in lines if not (ln[1] == LineKind.DEPTH and cut_lo <= _u(ln) <= late_hi)]
    on_time += _extras(ex, on_time[5][0])
    write_stream(store, "spot", "eu-1", SYM, on_time, per_object=40)
    first = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    assert first.events == len(evs) - 40 and first.quarantined == 1 and first.book_tickers == 1
    _merge(store)
    deleted = _cleanup(store)
    assert deleted and _raw_keys(store) == set()

    # the cut-off collector uploads its spool: events 60..79, a day after the cleanup
    spool = [ln for ln in lines if ln[1] == LineKind.DEPTH and cut_lo <= _u(ln) <= cut_hi]
    write_stream(store, "spot", "eu-1", SYM, spool, session="late1")
    second = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    assert second.events == len(evs) - 20
    assert sum(o.carried for o in second.objects) == len(deleted)
    assert {o.key for o in second.objects if o.carried} == set(deleted)
    assert (
        second.quarantined == 1
        and second.book_tickers == 1
        and second.snapshots == 1
        and second.meta_lines == 1
    )
    assert second.levels == first.levels + sum(len(e["b"]) + len(e["a"]) for e in evs[60:80])  # type: ignore[arg-type, misc]
    _merge(store)

    # again: the merge consumed carried and late objects; a second late upload (with a re-sent duplicate)
    _cleanup(store)
    spool2 = [ln for ln in lines if ln[1] == LineKind.DEPTH and cut_hi - 8 <= _u(ln) <= late_hi]
    write_stream(store, "spot", "eu-1", SYM, spool2, session="late2")
    third = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    assert third.events == len(evs) and third.duplicates >= 2 and third.gaps == []
    assert third.quarantined == 1 and third.book_tickers == 1 and third.meta_lines == 1
    _merge(store)
    assert assert_exact(merged(store), ex) == len(evs) + 1  # every event plus the opening image
    # the old level parts were replaced, not left behind
    listed = {i.key for i in store.list(third.prefix) if "levels-" in i.key}
    assert listed == set(third.level_parts)


def test_revalidation_with_nothing_deleted_rebuilds_from_raw(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=22)
    ex.run(120)
    evs = ex.events(3)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[0]]))
    a = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    b = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    assert not any(o.carried for o in b.objects)
    assert (a.events, a.levels, a.segments) == (b.events, b.levels, b.segments)
    ev_b = read_parquet(store, b.file_key("events.parquet"))
    assert ev_b.height == b.events
    # run-unique names: b wrote its own files and removed a's once its report was committed
    assert a.run_id != b.run_id and not store.exists(a.file_key("events.parquet"))
    assert {i.key for i in store.list(b.prefix)} == {
        *b.keys.values(),
        *b.level_parts,
        b.prefix + "report.json",
    }


def test_untrusted_previous_output_is_refused_and_left_untouched(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=23)
    ex.run(120)
    evs = ex.events(3)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs, 20, snapshots=[ex.ids[0]]))
    rep = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    _merge(store)
    _cleanup(store)
    # a half-written re-validation: events.parquet is not the one report.json describes
    events = read_parquet(store, rep.file_key("events.parquet"))
    put_parquet(store, rep.file_key("events.parquet"), events.head(5))
    before = {i.key: i.etag for i in store.list(rep.prefix)}
    # (and no copy was saved: the previous run carried nothing over)
    with pytest.raises(CarryOverError, match="cannot be trusted"):
        validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    assert {i.key: i.etag for i in store.list(rep.prefix)} == before


def _u(line: tuple[int, LineKind, str]) -> int:
    return int(orjson.loads(line[2])["data"]["u"])


def test_carried_rows_keep_their_object_provenance(store: ObjectStore) -> None:
    ex = SyntheticExchange(seed=24)
    ex.run(200)
    evs = ex.events(2)
    write_stream(
        store, "spot", "eu-1", SYM, stream_lines(ex, evs[:50], 20, snapshots=[ex.ids[0]]), per_object=10
    )
    validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    _merge(store)
    _cleanup(store)
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs[50:], 20), per_object=10, session="late")
    rep = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    events = read_parquet(store, rep.file_key("events.parquet"))
    per_obj = events.group_by("obj").agg(pl.len().alias("n"), pl.col("u").min().alias("u0")).sort("obj")
    # every event points at the object it came from: carried objects first, then the late ones
    for obj, n, u0 in per_obj.iter_rows():
        o = rep.objects[obj]
        assert n == o.events
        assert o.carried == (u0 <= int(evs[49]["u"]))  # type: ignore[call-overload]


class _CrashBeforeReport(LocalStore):
    """A real local store whose next commit of a validated ``report.json`` fails (a crash mid-validation)."""

    armed = False

    def _crash(self, key: str) -> None:
        if self.armed and key.startswith("validated/") and key.endswith("/report.json"):
            self.armed = False
            raise OSError("crash before the report was written")

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        self._crash(key)
        return super().put_bytes(key, data)

    def put_bytes_if_match(self, key: str, data: bytes, etag: str) -> ObjectInfo | None:
        self._crash(key)
        return super().put_bytes_if_match(key, data, etag)

    def put_bytes_if_absent(self, key: str, data: bytes) -> ObjectInfo | None:
        self._crash(key)
        return super().put_bytes_if_absent(key, data)


def test_revalidation_crashed_before_its_report_leaves_the_previous_output_intact(tmp_path: Path) -> None:
    store = _CrashBeforeReport(tmp_path / "store")
    ex = SyntheticExchange(seed=25)
    ex.run(200)
    evs = ex.events(2)
    write_stream(
        store, "spot", "eu-1", SYM, stream_lines(ex, evs[:60], 20, snapshots=[ex.ids[0]]), per_object=15
    )
    validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    _merge(store)
    _cleanup(store)
    prefix = validated_day_prefix("spot", "eu-1", SYM, DATE)
    before = {i.key: i.etag for i in store.list(prefix)}
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs[60:80], 20), per_object=15, session="late")
    store.armed = True
    with pytest.raises(OSError, match="crash before the report"):
        validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    # the committed report and every file it names are as they were; the crashed run left nothing behind
    assert {i.key: i.etag for i in store.list(prefix)} == before
    write_stream(store, "spot", "eu-1", SYM, stream_lines(ex, evs[80:], 20), per_object=15, session="late2")
    rep = validate_symbol_day(store, "spot", "eu-1", SYM, DATE)
    assert rep.events == len(evs) and rep.gaps == []
    _merge(store)
    assert assert_exact(merged(store), ex) == len(evs) + 1
