"""Validation per stream-day: one pass over the stream-day's objects splits every symbol into its validated
output (bounded memory, each object read once), a stream-day report for the cleanup, run-unique validated
files committed by their report, and missing state as an error (issue 14, scenario 2)."""

from __future__ import annotations

import dataclasses
import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pytest

from depth_core import validate as validate_module
from depth_core.idline import lo_expr
from depth_core.layout import merged_day_prefix, merged_manifest_key
from depth_core.level_parts import read_level_part
from depth_core.merge import merge_symbol_day
from depth_core.raw_format import LineKind, RawObjectKey
from depth_core.storeio import read_parquet
from depth_core.validate import (
    ConcurrentValidationError,
    MissingStateError,
    StreamDayValidation,
    SymbolDayReport,
    runs_within,
    stream_day_report_key,
    validate_stream_day,
    validate_symbol_day,
    validated_day_prefix,
)
from depth_core.validated_layout import COMPACT_SYMBOL_DATES_VERSION, object_symbol_dates
from depth_store import open_store
from depth_store.base import ObjectInfo, ObjectStore
from depth_store.counting import CountingStore
from depth_store.local import LocalStore
from exchange_sim.replay import load_recording
from tests.core.synth import SyntheticExchange, stream_lines, write_stream, write_stream_v2

DATE = "2025-11-24"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
DATA_FILES = (
    "events.parquet",
    "snapshots.parquet",
    "snapshot_levels.parquet",
    "book_tickers.parquet",
    "quarantine.parquet",
    "meta.parquet",
)


def _exchanges(n: int = 300) -> dict[str, SyntheticExchange]:
    out = {}
    for i, sym in enumerate(SYMBOLS):
        ex = SyntheticExchange(symbol=sym, seed=60 + i, first_id=10_000 * (i + 1))
        ex.run(n)
        out[sym] = ex
    return out


def _lines(exes: dict[str, SyntheticExchange]) -> dict[str, list[tuple[int, LineKind, str]]]:
    return {
        sym: stream_lines(ex, ex.events([2, 3, 5]), 20, snapshots=[ex.ids[0], ex.ids[len(ex.ids) // 2]])
        for sym, ex in exes.items()
    }


def _v2_lines(lines: dict[str, list[tuple[int, LineKind, str]]]) -> list[tuple[int, LineKind, str, str]]:
    out = [(ns, k, sym, t) for sym, ls in lines.items() for ns, k, t in ls]
    out.append((_note_ns(lines), LineKind.META, "-", '{"event":"connect"}'))  # a stream-wide note
    return out


def _note_ns(lines: dict[str, list[tuple[int, LineKind, str]]]) -> int:
    return min(ln[0] for ls in lines.values() for ln in ls) - 1


def _output(store: ObjectStore, rep: SymbolDayReport) -> dict[str, pl.DataFrame]:
    """A symbol-day's validated content, without the columns that number objects and parts."""
    out = {}
    for name in DATA_FILES:
        frame = read_parquet(store, rep.file_key(name))
        out[name] = frame.drop([c for c in ("obj", "line_no", "part", "object_key") if c in frame.columns])
    out["levels"] = pl.concat([read_level_part(store, k) for k in rep.level_parts])
    return out


def _assert_same(store_a: ObjectStore, a: SymbolDayReport, store_b: ObjectStore, b: SymbolDayReport) -> None:
    fa, fb = _output(store_a, a), _output(store_b, b)
    for name, frame in fa.items():
        assert fb[name].equals(frame), (a.symbol, name)
    for attr in (
        "events",
        "levels",
        "snapshots",
        "segments",
        "gaps",
        "quarantined",
        "duplicates",
        "meta_lines",
        "price_decimals",
        "qty_decimals",
        "first_update_id",
        "last_update_id",
        "latency_p50_ms",
    ):
        assert getattr(a, attr) == getattr(b, attr), (a.symbol, attr)


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


def test_one_pass_splits_a_multi_symbol_v2_day_and_reads_each_object_once(tmp_path: Path) -> None:
    lines = _lines(_exchanges())
    v1 = open_store(str(tmp_path / "v1"))
    for sym, ls in lines.items():
        write_stream(
            v1,
            "spot",
            "eu-1",
            sym,
            [*ls, (_note_ns(lines), LineKind.META, '{"event":"connect"}')],
            per_object=40,
        )
    v2 = CountingStore(open_store(str(tmp_path / "v2")))
    keys = write_stream_v2(v2, "spot", "eu-1", _v2_lines(lines), per_object=70)
    v2.snapshot_and_reset()

    result = validate_stream_day(v2, "spot", "eu-1", DATE)
    counts = v2.snapshot_and_reset()
    # every raw object once, plus the previous stream-day report and each symbol's merged manifest
    # (absent here)
    assert counts["GET"] == len(keys) + 1 + len(SYMBOLS)
    assert set(result.reports) == set(SYMBOLS)
    for sym in SYMBOLS:
        _assert_same(v1, validate_symbol_day(v1, "spot", "eu-1", sym, DATE), v2, result.reports[sym])
        assert (
            result.reports[sym].meta_lines == 1
        )  # the stream-wide connect note reached every symbol of its object

    # the stream-day report: every object with the symbols and event dates it holds
    report = json.loads(v2.get_bytes(stream_day_report_key("spot", "eu-1", DATE)))
    assert report == orjson.loads(orjson.dumps(result.to_dict()))
    assert [o["key"] for o in report["objects"]] == sorted(keys)
    # compact: a symbol whose event dates are the object's own is left out of symbol_event_dates
    assert report["version"] == COMPACT_SYMBOL_DATES_VERSION
    in_memory = {o.key: o for o in result.objects}
    for o in report["objects"]:
        assert o["layout"] == 2 and o["event_dates"] == [DATE] and not o["carried"]
        assert o["symbols"] and set(o["symbol_event_dates"]) <= set(o["symbols"])
        assert all(d != o["event_dates"] for d in o["symbol_event_dates"].values())
        mem = in_memory[o["key"]]
        assert object_symbol_dates(o, report["version"]) == {
            s: mem.symbol_event_dates.get(s, []) for s in mem.symbols
        }
    assert set(SYMBOLS) == {s for o in report["objects"] for s in o["symbols"]}
    assert {s: v["events"] for s, v in report["symbols"].items()} == {
        s: r.events for s, r in result.reports.items()
    }
    assert report["stats"]["objects_read"] == len(keys)


def test_symbols_only_filter(store: ObjectStore) -> None:
    lines = _lines(_exchanges(100))
    write_stream_v2(store, "spot", "eu-1", _v2_lines(lines), per_object=50)
    result = validate_stream_day(store, "spot", "eu-1", DATE, ["ETHUSDT", "DOGEUSDT"])
    assert set(result.reports) == {"ETHUSDT", "DOGEUSDT"}
    assert result.reports["DOGEUSDT"].events == 0  # named, no data: written and reported empty
    assert not store.exists(validated_day_prefix("spot", "eu-1", "BTCUSDT", DATE) + "report.json")
    # the stream-day report still lists every symbol each object holds (the cleanup needs all of them)
    assert {s for o in result.objects for s in o.symbols} == set(SYMBOLS)


def test_symbol_day_report_to_dict_is_asdict_with_lists_and_a_copy(store: ObjectStore) -> None:
    write_stream_v2(store, "spot", "eu-1", _v2_lines(_lines(_exchanges(50))), per_object=50)
    rep = validate_stream_day(store, "spot", "eu-1", DATE).reports["BTCUSDT"]
    rep.segments.append((1, 2))
    rep.objects[0].event_dates.append("2025-11-25")
    expected = dataclasses.asdict(rep)
    expected["segments"] = [list(s) for s in rep.segments]
    expected["gaps"] = [list(g) for g in rep.gaps]
    out = rep.to_dict()
    assert out == expected and out["objects"] and out["files"] and out["keys"] and out["level_parts"]
    assert rep.objects[0].to_dict() == dataclasses.asdict(rep.objects[0])
    for name in ("objects", "level_parts", "files", "keys", "quarantine_reasons", "segments"):
        if isinstance(out[name], dict):
            out[name]["x"] = "y"
        else:
            out[name].append("y")
    out["objects"][0]["event_dates"].append("y")
    assert rep.to_dict() == expected  # a copy: changing it leaves the report alone


def test_full_collections_are_deferred_during_a_pass_and_restored_after_it(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_stream_v2(store, "spot", "eu-1", _v2_lines(_lines(_exchanges(50))), per_object=50)
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []
    run = validate_module._StreamDayRun.run

    def spy(self: Any, *args: Any) -> StreamDayValidation:
        during.append(gc.get_threshold())
        if len(during) == 2:
            raise RuntimeError("a pass that fails")
        return run(self, *args)

    monkeypatch.setattr(validate_module._StreamDayRun, "run", spy)
    assert validate_stream_day(store, "spot", "eu-1", DATE).reports
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError, match="a pass that fails"):
        validate_stream_day(store, "spot", "eu-1", DATE)
    assert gc.get_threshold() == before  # restored on failure too
    # the young generations are collected as usual, the oldest not
    assert [t[:2] for t in during] == [before[:2]] * 2
    assert all(t[2] > 10**6 for t in during)


def test_a_pass_hands_its_freed_memory_back_when_it_ends(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory a pass freed is returned when it ends (failed too), so the next phase of the process (the
    other stream's pass, a merge) does not start on top of what this day's length made it hold; and once the
    raw objects are read, before the symbol-days' files are built on top of what the batches freed."""
    write_stream_v2(store, "spot", "eu-1", _v2_lines(_lines(_exchanges(50))), per_object=50)
    seen: list[str] = []
    monkeypatch.setattr(validate_module, "release_free_memory", lambda: seen.append("release"))
    finish = validate_module._SymbolDay.finish

    def spy_finish(self: Any, *args: Any) -> Any:
        seen.append("finish")
        return finish(self, *args)

    monkeypatch.setattr(validate_module._SymbolDay, "finish", spy_finish)
    assert validate_stream_day(store, "spot", "eu-1", DATE).reports
    symbols = len(seen) - 2
    assert symbols > 1 and seen == ["release"] + ["finish"] * symbols + ["release"]

    def failing(self: Any, *args: Any) -> StreamDayValidation:
        raise RuntimeError("a pass that fails")

    seen.clear()
    monkeypatch.setattr(validate_module._StreamDayRun, "run", failing)
    with pytest.raises(RuntimeError, match="a pass that fails"):
        validate_stream_day(store, "spot", "eu-1", DATE)
    assert seen == ["release"]


def test_bounded_memory_batches_parts_and_spills_give_the_same_output(tmp_path: Path) -> None:
    lines = _lines(_exchanges(600))
    plain = open_store(str(tmp_path / "plain"))
    small = open_store(str(tmp_path / "small"))
    for st in (plain, small):
        write_stream_v2(st, "spot", "eu-1", _v2_lines(lines), per_object=60)
    sizes = [i.size for i in small.list("raw/")]
    batch = 3 * max(sizes)
    full = validate_stream_day(plain, "spot", "eu-1", DATE)
    bounded = validate_stream_day(
        small, "spot", "eu-1", DATE, batch_bytes=batch, buffer_bytes=64 << 10, part_rows=300
    )
    s = bounded.stats
    assert full.stats["batches"] == 1 and s["batches"] >= sum(sizes) // batch
    assert s["max_batch_bytes"] <= batch  # never more than a batch of raw input in memory
    # buffered rows were flushed as soon as all symbols together passed the budget (one batch's rows at
    # most on top)
    assert s["spills"] > 0 and s["part_flushes"] > 0
    assert s["peak_buffered_bytes"] <= (64 << 10) + 4 * s["max_batch_text_bytes"]
    for sym in SYMBOLS:
        assert len(bounded.reports[sym].level_parts) > 1
        _assert_same(plain, full.reports[sym], small, bounded.reports[sym])
    # spill files are gone once the reports are committed: only what the reports name is left
    for sym, rep in bounded.reports.items():
        left = {i.key for i in small.list(rep.prefix)}
        assert left == {*rep.keys.values(), *rep.level_parts, rep.prefix + "report.json"}, sym


def test_a_batch_parsed_in_pieces_of_text_gives_the_same_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a batch whose text passes TEXT_BYTES (objects that compress well) is parsed a few objects at a time
    lines = _lines(_exchanges(300))
    whole = open_store(str(tmp_path / "whole"))
    pieces = open_store(str(tmp_path / "pieces"))
    for st in (whole, pieces):
        write_stream_v2(st, "spot", "eu-1", _v2_lines(lines), per_object=40)
    full = validate_stream_day(whole, "spot", "eu-1", DATE)
    monkeypatch.setattr("depth_core.validate.TEXT_BYTES", 20_000)
    split = validate_stream_day(pieces, "spot", "eu-1", DATE)
    assert full.stats["batches"] == split.stats["batches"] == 1
    assert full.stats["max_batch_text_bytes"] > 60_000 >= split.stats["max_batch_text_bytes"]
    for sym in SYMBOLS:
        _assert_same(whole, full.reports[sym], pieces, split.reports[sym])


def test_runs_hold_whole_objects_up_to_the_limit() -> None:
    assert runs_within([5, 5, 5, 20, 1, 1], 10) == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert runs_within([], 10) == [] and runs_within([30], 10) == [(0, 1)]


def test_real_multi_symbol_recording_as_v2_validates_like_v1(real_data: Path, tmp_path: Path) -> None:
    """cryptofeed's spot recording: four symbols at 100 ms on one connection, with their REST snapshots."""
    messages, snaps = load_recording(real_data / "cryptofeed_BINANCE.ws.1.0")
    kinds = {"depth": LineKind.DEPTH, "bookTicker": LineKind.BOOK_TICKER}
    rows = [
        (m.recv_ns, kinds[m.kind], m.symbol, orjson.dumps({"stream": m.stream, "data": m.data}).decode())
        for m in messages
        if m.kind in kinds
    ]
    rows += [(s.recv_ns, LineKind.SNAPSHOT, s.symbol, orjson.dumps(s.body).decode()) for s in snaps]
    symbols = sorted({r[2] for r in rows})
    assert len(symbols) == 4
    date = RawObjectKey.for_stream_segment("spot", "eu-1", rows[0][0], "x", 0).date
    v1 = open_store(str(tmp_path / "v1"))
    v2 = open_store(str(tmp_path / "v2"))
    for sym in symbols:
        write_stream(v1, "spot", "eu-1", sym, [(ns, k, t) for ns, k, s, t in rows if s == sym], per_object=25)
    write_stream_v2(v2, "spot", "eu-1", rows, per_object=40)
    result = validate_stream_day(v2, "spot", "eu-1", date)
    assert set(result.reports) == set(symbols)
    for sym in symbols:
        rep = result.reports[sym]
        assert rep.events > 0 and rep.snapshots >= 1 and rep.quarantined == 0
        _assert_same(v1, validate_symbol_day(v1, "spot", "eu-1", sym, date), v2, rep)


# ------------------------------------------------------------------------------------------------ state


def _merge_and_clean(store: ObjectStore, symbol: str) -> list[str]:
    report = merge_symbol_day(store, "spot", symbol, DATE, ["eu-1"])
    assert report.blocking_passed, report.markdown()
    manifest = json.loads(store.get_bytes(merged_manifest_key("spot", symbol, DATE)))
    keys = [o["key"] for o in manifest["raw_objects"]]
    for key in keys:
        store.delete(key)
    return keys


def _files(store: ObjectStore, prefix: str) -> dict[str, str | None]:
    return {i.key: i.etag for i in store.list(prefix)}


def _scenario_2(store: ObjectStore) -> tuple[SyntheticExchange, list[tuple[int, LineKind, str]], list[str]]:
    """Validated, merged, cleaned up; then validated/.../report.json is lost (a lifecycle rule, an
    operator)."""
    ex = SyntheticExchange(seed=31)
    ex.run(320)
    evs = ex.events(4)
    lines = stream_lines(ex, evs, 20, snapshots=[ex.ids[0]])
    late = [
        ln for ln in lines if ln[1] == LineKind.DEPTH and int(orjson.loads(ln[2])["data"]["u"]) > ex.ids[239]
    ]
    on_time = [ln for ln in lines if ln not in late]
    write_stream(store, "spot", "eu-1", "BTCUSDT", on_time, per_object=20)
    validate_symbol_day(store, "spot", "eu-1", "BTCUSDT", DATE)
    deleted = _merge_and_clean(store, "BTCUSDT")
    store.delete(validated_day_prefix("spot", "eu-1", "BTCUSDT", DATE) + "report.json")
    # a late object: the events after id 240 with a snapshot, so a rebuilt day would pass its blocking checks
    write_stream(
        store,
        "spot",
        "eu-1",
        "BTCUSDT",
        [*late, *stream_lines(ex, [], 20, snapshots=[ex.ids[239]])],
        session="late",
    )
    return ex, lines, deleted


def test_missing_report_after_cleanup_stops_validation_naming_the_deleted_objects(store: ObjectStore) -> None:
    """Issue 14 scenario 2: the day is never rebuilt from the late object alone (80 events -> 20 before)."""
    _ex, _lines, deleted = _scenario_2(store)
    vprefix = validated_day_prefix("spot", "eu-1", "BTCUSDT", DATE)
    validated_before = _files(store, vprefix)
    merged_before = _files(store, merged_day_prefix("spot", "BTCUSDT", DATE))
    with pytest.raises(MissingStateError) as err:
        validate_symbol_day(store, "spot", "eu-1", "BTCUSDT", DATE)
    msg = str(err.value)
    assert f"{len(deleted)} raw object(s)" in msg and "report.json is missing" in msg
    assert all(k in msg for k in deleted[:20])
    assert _files(store, vprefix) == validated_before  # the old validated files are all still there
    assert _files(store, merged_day_prefix("spot", "BTCUSDT", DATE)) == merged_before
    # the stream-day pass stops the same way
    with pytest.raises(MissingStateError):
        validate_stream_day(store, "spot", "eu-1", DATE)
    assert _files(store, vprefix) == validated_before


def test_missing_validated_file_after_cleanup_is_an_error_for_validation_and_merge(
    store: ObjectStore,
) -> None:
    ex = SyntheticExchange(seed=32)
    ex.run(200)
    write_stream(
        store,
        "spot",
        "eu-1",
        "BTCUSDT",
        stream_lines(ex, ex.events(4), 20, snapshots=[ex.ids[0]]),
        per_object=20,
    )
    rep = validate_symbol_day(store, "spot", "eu-1", "BTCUSDT", DATE)
    _merge_and_clean(store, "BTCUSDT")
    store.delete(rep.level_parts[0])
    with pytest.raises(MissingStateError, match="missing"):
        merge_symbol_day(store, "spot", "BTCUSDT", DATE, ["eu-1"])
    write_stream(
        store, "spot", "eu-1", "BTCUSDT", stream_lines(ex, [], 20, snapshots=[ex.ids[100]]), session="late"
    )
    before = _files(store, rep.prefix)
    with pytest.raises(MissingStateError, match=r"cannot be trusted .*levels-00000.parquet is missing"):
        validate_symbol_day(store, "spot", "eu-1", "BTCUSDT", DATE)
    assert _files(store, rep.prefix) == before


def test_stream_day_report_keeps_deleted_objects_and_late_data_is_carried(store: ObjectStore) -> None:
    lines = _lines(_exchanges(200))
    write_stream_v2(store, "spot", "eu-1", _v2_lines(lines), per_object=60)
    first = validate_stream_day(store, "spot", "eu-1", DATE)
    for sym in SYMBOLS:
        _merge_and_clean(store, sym)
    assert not list(store.list("raw/"))
    # a late v2 object holding one symbol: that symbol is re-validated with every row carried over
    ex = SyntheticExchange(symbol="ETHUSDT", seed=61, first_id=20_000)
    ex.run(200)
    write_stream_v2(
        store,
        "spot",
        "eu-1",
        [
            (ns + 1, LineKind.SNAPSHOT, "ETHUSDT", t)
            for ns, _k, t in stream_lines(ex, [], 20, snapshots=[ex.ids[150]])
        ],
        session="late",
    )
    second = validate_stream_day(store, "spot", "eu-1", DATE)
    assert set(second.reports) == {"ETHUSDT"}  # the others had nothing new: left as they were
    eth = second.reports["ETHUSDT"]
    assert (
        eth.events == first.reports["ETHUSDT"].events
        and eth.snapshots == first.reports["ETHUSDT"].snapshots + 1
    )
    assert {o.key for o in eth.objects if o.carried} == {o.key for o in first.reports["ETHUSDT"].objects}
    report = json.loads(store.get_bytes(stream_day_report_key("spot", "eu-1", DATE)))
    carried = {o["key"] for o in report["objects"] if o["carried"]}
    assert carried == {o.key for o in first.objects}
    assert set(report["symbols"]) == set(SYMBOLS)
    for sym in SYMBOLS:  # the symbols without new data kept their report and files
        if sym != "ETHUSDT":
            assert report["symbols"][sym]["run_id"] == first.run_id
            assert (
                read_parquet(store, first.reports[sym].file_key("events.parquet")).height
                == first.reports[sym].events
            )
    # losing a symbol's report now is an error even though the stream-day's raw objects are all gone
    store.delete(validated_day_prefix("spot", "eu-1", "SOLUSDT", DATE) + "report.json")
    with pytest.raises(MissingStateError, match="SOLUSDT"):
        validate_stream_day(store, "spot", "eu-1", DATE)


class _Interleaving(LocalStore):
    """A real local store that runs a second validation just before the first commits its report."""

    def __init__(self, root: Path, suffix: str = "/report.json") -> None:
        super().__init__(root)
        self.hook: Any = None
        self.suffix = suffix

    def _maybe(self, key: str) -> None:
        if self.hook is not None and key.endswith(self.suffix):
            hook, self.hook = self.hook, None
            hook()

    def put_bytes_if_match(self, key: str, data: bytes, etag: str) -> ObjectInfo | None:
        self._maybe(key)
        return super().put_bytes_if_match(key, data, etag)

    def put_bytes_if_absent(self, key: str, data: bytes) -> ObjectInfo | None:
        self._maybe(key)
        return super().put_bytes_if_absent(key, data)


def test_two_validations_of_one_day_never_delete_each_others_files(tmp_path: Path) -> None:
    store = _Interleaving(tmp_path / "store")
    ex = SyntheticExchange(seed=33)
    ex.run(200)
    write_stream(
        store,
        "spot",
        "eu-1",
        "BTCUSDT",
        stream_lines(ex, ex.events(3), 20, snapshots=[ex.ids[0]]),
        per_object=20,
    )
    validate_symbol_day(store, "spot", "eu-1", "BTCUSDT", DATE)
    inner: list[StreamDayValidation] = []
    store.hook = lambda: inner.append(validate_stream_day(store, "spot", "eu-1", DATE))
    with pytest.raises(ConcurrentValidationError):
        validate_symbol_day(store, "spot", "eu-1", "BTCUSDT", DATE)
    winner = inner[0].reports["BTCUSDT"]
    prefix = validated_day_prefix("spot", "eu-1", "BTCUSDT", DATE)
    committed = json.loads(store.get_bytes(prefix + "report.json"))
    assert committed["run_id"] == winner.run_id
    # exactly the winner's files are there: the loser removed its own and nothing of the winner's
    assert {i.key for i in store.list(prefix)} == {
        *winner.keys.values(),
        *winner.level_parts,
        prefix + "report.json",
    }
    report = merge_symbol_day(store, "spot", "BTCUSDT", DATE, ["eu-1"])
    assert report.blocking_passed


def test_concurrent_stream_day_reports_keep_both_runs_entries(tmp_path: Path) -> None:
    """Two filtered runs of one stream-day write _stream_day.json at once: the later one rebuilds on the
    earlier one's report (compare-and-swap), so neither's symbols are lost."""
    store = _Interleaving(tmp_path / "store", suffix="/_stream_day.json")
    write_stream_v2(store, "spot", "eu-1", _v2_lines(_lines(_exchanges(100))), per_object=50)
    inner: list[StreamDayValidation] = []
    store.hook = lambda: inner.append(validate_stream_day(store, "spot", "eu-1", DATE, ["ETHUSDT"]))
    outer = validate_stream_day(store, "spot", "eu-1", DATE, ["BTCUSDT"])
    report = json.loads(store.get_bytes(stream_day_report_key("spot", "eu-1", DATE)))
    assert report["run_id"] == outer.run_id
    assert report["symbols"]["BTCUSDT"]["run_id"] == outer.run_id
    assert report["symbols"]["ETHUSDT"]["run_id"] == inner[0].run_id
    assert {o["key"] for o in report["objects"]} == {i.key for i in store.list("raw/")}


def test_carried_rows_of_many_symbols_stay_within_the_buffer_budget(store: ObjectStore) -> None:
    """After a cleanup, a late v2 object holding every symbol carries every symbol's day over: the carried
    rows are spilled as they come in, not all held at once."""
    exes = _exchanges(200)
    lines = _lines(exes)
    write_stream_v2(store, "spot", "eu-1", _v2_lines(lines), per_object=60)
    first = validate_stream_day(store, "spot", "eu-1", DATE)
    for sym in SYMBOLS:
        _merge_and_clean(store, sym)
    late = [
        (ns + 1, LineKind.SNAPSHOT, sym, t)
        for sym, ex in exes.items()
        for ns, _k, t in stream_lines(ex, [], 20, snapshots=[ex.ids[150]])
    ]
    write_stream_v2(store, "spot", "eu-1", late, session="late")
    second = validate_stream_day(store, "spot", "eu-1", DATE, buffer_bytes=1 << 10)
    assert second.stats["spills"] >= len(SYMBOLS) - 1
    for sym in SYMBOLS:
        rep = second.reports[sym]
        assert rep.events == first.reports[sym].events and rep.snapshots == first.reports[sym].snapshots + 1
        assert all(o.carried for o in rep.objects[:-1]) and not rep.objects[-1].carried
        report = merge_symbol_day(store, "spot", sym, DATE, ["eu-1"])
        assert report.blocking_passed, report.markdown()


def test_unique_counts_is_numpy_unique_with_counts() -> None:
    rng = np.random.default_rng(7)
    cases = [np.zeros(0, np.int64), np.array([5]), np.array([3, 3]), np.array([4, 1, 4, 4, 1, 9])]
    for n in (10, 1000):
        cases += [
            np.sort(rng.integers(0, 50, n)),  # in runs and in order (the usual batch)
            rng.integers(0, 50, n),
            np.repeat(rng.integers(0, 20, n // 10), 10),  # in runs, out of order
        ]
    for values in cases:
        uniq, counts = validate_module._unique_counts(values.astype(np.int64))
        want_uniq, want_counts = np.unique(values.astype(np.int64), return_counts=True)
        assert uniq.tolist() == want_uniq.tolist() and counts.tolist() == want_counts.tolist()
        assert counts.dtype == np.int64


def _gathered_events(market: str) -> pl.DataFrame:
    """Events as a day gathers them: several buffered frames, ``T``/``pu`` null throughout for spot (polars
    joins such chunks into one, so the columns end up chunked differently)."""
    frames = []
    for part in range(3):
        n = 4 + part
        ev = np.arange(10 * part, 10 * part + n)
        cols: dict[str, Any] = {name: np.arange(n) + 100 * part for name in validate_module._EVENT_COLUMNS}
        cols.update(U=1000 + 10 * ev, u=1005 + 10 * ev, E=ev * 100, receive_ns=ev * 100 * 10**6 + 3, ev=ev)
        frame = pl.DataFrame(cols).cast(validate_module._EVENT_COLUMNS)  # type: ignore[arg-type]
        if market == "spot":
            frame = frame.with_columns(pl.lit(None, pl.Int64).alias("T"), pl.lit(None, pl.Int64).alias("pu"))
        else:  # usdm: the first event of a stream has no previous id
            frame = frame.with_columns(
                pl.when(pl.col("ev") == 0).then(None).otherwise(pl.col("U") - 3).alias("pu")
            )
        frames.append(frame.with_columns(pl.lit(part, pl.Int32).alias("part")))
    return pl.concat(frames)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_the_events_file_table_and_lo_are_built_column_by_column_with_the_frame_rules(market: str) -> None:
    events = _gathered_events(market)
    dup = np.zeros(events.height, np.bool_)
    dup[[2, 7]] = True
    table = validate_module._events_table(events, dup)
    want = events.select(validate_module._empty_events().columns).with_columns(pl.Series("dup", dup))
    assert table.column_names == want.columns
    assert pl.from_arrow(table).equals(want)  # type: ignore[union-attr]
    assert table.column("U").num_chunks == 3  # the buffered chunks as they are: no copy into one
    want_lo = events.select(lo_expr(market))["lo"].to_numpy()  # type: ignore[arg-type]
    assert validate_module._lo_column(events, market).tolist() == want_lo.tolist()  # type: ignore[arg-type]


def test_the_events_file_table_lets_the_parsers_arrays_go_once_written_on_another_thread() -> None:
    """A symbol-day's events file is built over the parser's numpy arrays (no copy) and written by a commit
    thread. Exported through polars' Arrow export, the arrays outlived the write: polars drops its reference
    to them without the GIL there, and that drop waits until polars next runs on a thread that holds it (a
    bench day's events, 53 MiB, stayed under the next pass and the merge). Exported as numpy arrays, pyarrow
    holds them itself, and they go with the table."""
    import concurrent.futures as cf
    import weakref

    import pyarrow.parquet as pq

    arrays: list[weakref.ref[np.ndarray]] = []

    def tracked(values: np.ndarray) -> np.ndarray:
        arrays.append(weakref.ref(values))
        return values

    big = np.iinfo(np.int64).min
    parts = []
    for part in range(3):
        batches = []
        for batch in range(2):
            n = 1000
            base = (part * 2 + batch) * n
            head = pl.DataFrame(
                {
                    name: tracked(np.arange(n, dtype=np.int64) + base)
                    for name in ("line_no", "receive_ns", "E", "U", "u", "levels_hash")
                }
                | {
                    "T": tracked(np.full(n, big)),
                    "pu": tracked(np.full(n, big)),
                    "n_levels": tracked(np.ones(n, np.int32)),
                }
            ).with_columns(
                pl.when(pl.col(c) == big).then(None).otherwise(pl.col(c)).alias(c) for c in ("T", "pu")
            )
            batches.append(
                head.with_columns(
                    pl.Series("ev", tracked(np.arange(n, dtype=np.int64) + base), pl.Int64),
                    pl.Series("obj", tracked(np.zeros(n, np.int32)), pl.Int32),
                )
            )
        parts.append(pl.concat(batches).with_columns(pl.lit(part, pl.Int32).alias("part")))
    events = pl.concat(parts, how="diagonal_relaxed")
    del parts, batches, head
    table = validate_module._events_table(events, np.zeros(events.height, np.bool_))
    assert table.num_rows == 6000 and table["T"].null_count == 6000 and table["ev"].to_pylist()[-1] == 5999
    del events

    def write(files: list[pa.Table]) -> None:
        pq.write_table(files.pop(), pa.BufferOutputStream())

    with cf.ThreadPoolExecutor(1) as pool:
        files = [table]
        del table
        pool.submit(write, files).result()
    gc.collect()
    assert [r for r in arrays if r() is not None] == []


def test_an_events_column_with_some_nulls_is_exported_as_it_is() -> None:
    some = pl.concat(
        [pl.Series("pu", [1, None, 3], pl.Int64), pl.Series("pu", [None, None], pl.Int64)], rechunk=False
    )
    column = validate_module._arrow_column(some)
    assert column.to_pylist() == [1, None, 3, None, None] and column.type == pa.int64()
    assert validate_module._arrow_column(pl.Series("obj", [], pl.Int32)).type == pa.int32()
