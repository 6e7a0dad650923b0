"""The batched day cleanup: one LIST per raw folder instead of a HEAD per object, DeleteObjects batches, and a
layout-2 object deleted only once every symbol-day it holds is verified and lists it.

The merge gate itself (run status, blocking checks, manifest etag) is tested through real runs in
test_merge_and_cleanup.py; here it is given, so the batching and holdings rules are exercised directly on
a real store (local folder and moto S3).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from depth_core.validated_layout import COMPACT_SYMBOL_DATES_VERSION, compact_symbol_event_dates
from depth_pipeline.cleanup import ManifestObject, MergeGate, cleanup_day, stream_day_report_key
from depth_store import ObjectInfo, ObjectStore
from depth_store.counting import CountingStore
from tests.pipeline.rawgen import write_object
from tests.pipeline.v2gen import write_v2

DATE = "2026-11-24"
NOON_NS = int(dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp()) * 10**9
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def _report(
    store: ObjectStore,
    stream: str,
    objects: list[ObjectInfo],
    holds: dict[str, list[str]] | None = None,
    *,
    compact: bool = False,
) -> None:
    """A stream-day report; ``compact``: the current form (symbols whose dates are the object's left out)."""
    held = holds or {s: [DATE] for s in SYMBOLS}
    entries = [
        {
            "key": o.key,
            "size": o.size,
            "etag": o.etag,
            "layout": 2,
            "symbols": sorted(held),
            "event_dates": [DATE],
            "symbol_event_dates": compact_symbol_event_dates(sorted(held), [DATE], held) if compact else held,
        }
        for o in objects
    ]
    report: dict[str, object] = {"objects": entries}
    if compact:
        report["version"] = COMPACT_SYMBOL_DATES_VERSION
    store.put_bytes(stream_day_report_key("spot", stream, DATE), json.dumps(report).encode())


def _gates(objects: list[ObjectInfo], ok: dict[str, bool], merged_at: dt.datetime | None = None):  # type: ignore[no-untyped-def]
    listed = [ManifestObject(o.key, o.size, o.etag, (DATE,)) for o in objects]

    def gate(symbol: str, date: str) -> MergeGate:
        if not ok.get(symbol) or date != DATE:
            return MergeGate(date, symbol, False, f"no verified merge of {symbol} {date} (test)")
        return MergeGate(date, symbol, True, "ok", "run", merged_at or dt.datetime.now(dt.UTC), listed)

    return gate


def _v2_day(store: ObjectStore, n: int = 3) -> list[ObjectInfo]:
    return [write_v2(store, "eu-1", NOON_NS + i * 10**10, SYMBOLS, seq=i) for i in range(n)]


@pytest.mark.parametrize("compact", [False, True], ids=["full-report", "compact-report"])
def test_v2_object_waits_for_every_symbol_day_it_holds(any_store: ObjectStore, compact: bool) -> None:
    objects = _v2_day(any_store)
    _report(any_store, "eu-1", objects, compact=compact)
    store = CountingStore(any_store)
    only_btc = cleanup_day(
        None,
        store,
        "spot",
        ["eu-1"],
        DATE,
        ["BTCUSDT"],
        gate_of=_gates(objects, {"BTCUSDT": True}),  # type: ignore[arg-type]
    )
    assert only_btc.deleted == [] and len(only_btc.kept_holdings_pending) == 3
    assert "ETHUSDT" in next(iter(only_btc.kept_holdings_pending.values()))
    assert {o.key for o in any_store.list("raw/")} == {o.key for o in objects}

    store.reset()
    # --symbols BTCUSDT narrows what is cleaned, not the condition: ETH verified too -> deleted
    both = cleanup_day(
        None,
        store,
        "spot",
        ["eu-1"],
        DATE,
        ["BTCUSDT"],
        gate_of=_gates(objects, {"BTCUSDT": True, "ETHUSDT": True}),  # type: ignore[arg-type]
    )
    assert sorted(both.deleted) == sorted(o.key for o in objects) and both.ok
    assert both.results["BTCUSDT"].deleted == sorted(o.key for o in objects)
    counts = store.snapshot()
    assert counts["HEAD"] == 0 and counts["LIST"] == 1 and counts["DELETE_BATCH"] == 1
    assert list(any_store.list("raw/")) == []

    again = cleanup_day(
        None,
        any_store,
        "spot",
        ["eu-1"],
        DATE,
        ["BTCUSDT"],
        gate_of=_gates(objects, {"BTCUSDT": True, "ETHUSDT": True}),  # type: ignore[arg-type]
    )
    assert again.deleted == [] and sorted(again.already_absent) == sorted(o.key for o in objects)


def test_compact_report_a_symbol_left_out_still_holds_the_objects_dates(any_store: ObjectStore) -> None:
    """Compact form: BTC (dates = the object's) is left out of symbol_event_dates, ETH (snapshot lines only)
    is listed with []; the object still waits for BTC's verified merge (reading the map alone would miss
    it)."""
    objects = _v2_day(any_store, n=2)
    _report(any_store, "eu-1", objects, {"BTCUSDT": [DATE], "ETHUSDT": []}, compact=True)
    eth_only = cleanup_day(
        None,
        any_store,
        "spot",
        ["eu-1"],
        DATE,
        ["ETHUSDT"],
        gate_of=_gates(objects, {"ETHUSDT": True}),  # type: ignore[arg-type]
    )
    assert eth_only.deleted == [] and len(eth_only.kept_holdings_pending) == 2
    assert "BTCUSDT" in next(iter(eth_only.kept_holdings_pending.values()))
    both = cleanup_day(
        None,
        any_store,
        "spot",
        ["eu-1"],
        DATE,
        ["ETHUSDT"],
        gate_of=_gates(objects, {"ETHUSDT": True, "BTCUSDT": True}),  # type: ignore[arg-type]
    )
    assert sorted(both.deleted) == sorted(o.key for o in objects)


def test_step_output_holds_each_key_once_and_decodes_to_every_symbols_lists() -> None:
    """The cleanup step's output (encode_results): keys once, each symbol's lists as index ranges."""
    from depth_pipeline.cleanup import CleanupResult, decode_results, encode_results

    keys = [f"raw/market=spot/stream=eu-1/date={DATE}/{i:019d}-s-{i:08d}.ndjson.gz" for i in range(5)]
    results = {
        "BTCUSDT": CleanupResult(
            DATE, "BTCUSDT", True, "ok", deleted=keys[:4], kept_later_arrivals=[keys[4]]
        ),
        "ETHUSDT": CleanupResult(DATE, "ETHUSDT", True, "ok", deleted=[keys[0], keys[2], keys[3]]),
        "XRPUSDT": CleanupResult(DATE, "XRPUSDT", False, "no merge"),
    }
    out = encode_results(results)
    assert out["keys"] == keys and out["results"]["BTCUSDT"]["deleted"] == [[0, 3]]
    assert out["results"]["ETHUSDT"]["deleted"] == [[0, 0], [2, 3]]
    assert decode_results(json.loads(json.dumps(out))) == {s: r.to_dict() for s, r in results.items()}
    plain = {s: r.to_dict() for s, r in results.items()}  # the form before: read as it is
    assert decode_results(plain) == plain


def test_v2_object_without_a_stream_day_report_or_changed_is_kept(any_store: ObjectStore) -> None:
    objects = _v2_day(any_store, 2)
    gate = _gates(objects, {"BTCUSDT": True, "ETHUSDT": True})
    no_report = cleanup_day(None, any_store, "spot", ["eu-1"], DATE, list(SYMBOLS), gate_of=gate)  # type: ignore[arg-type]
    assert no_report.deleted == [] and set(no_report.kept_holdings_pending.values()) == {
        "no stream-day report lists it"
    }

    _report(any_store, "eu-1", objects)
    # an object whose content changed since the merge (same key, other bytes) is never deleted
    any_store.put_bytes(objects[0].key, b"not what was merged")
    changed = cleanup_day(None, any_store, "spot", ["eu-1"], DATE, list(SYMBOLS), gate_of=gate)  # type: ignore[arg-type]
    assert changed.deleted == [objects[1].key]
    assert changed.results["BTCUSDT"].kept_changed == [objects[0].key] and not changed.ok


def test_refused_gate_and_retention_delete_nothing(any_store: ObjectStore) -> None:
    objects = _v2_day(any_store, 2)
    _report(any_store, "eu-1", objects)
    refused = cleanup_day(None, any_store, "spot", ["eu-1"], DATE, list(SYMBOLS), gate_of=_gates(objects, {}))  # type: ignore[arg-type]
    assert refused.deleted == [] and not refused.ok and not refused.results["BTCUSDT"].ok
    held = cleanup_day(
        None,
        any_store,
        "spot",
        ["eu-1"],
        DATE,
        list(SYMBOLS),  # type: ignore[arg-type]
        retention_days=1.0,
        gate_of=_gates(objects, {"BTCUSDT": True, "ETHUSDT": True}),
    )
    assert held.deleted == [] and held.results["ETHUSDT"].kept_retention == sorted(o.key for o in objects)
    assert len(list(any_store.list("raw/"))) == 2


def test_later_arrival_is_kept_and_reported(any_store: ObjectStore) -> None:
    objects = _v2_day(any_store, 2)
    _report(any_store, "eu-1", objects)
    late = write_v2(any_store, "eu-1", NOON_NS + 5 * 10**10, SYMBOLS, seq=9)
    out = cleanup_day(
        None,
        any_store,
        "spot",
        ["eu-1"],
        DATE,
        list(SYMBOLS),
        gate_of=_gates(objects, {"BTCUSDT": True, "ETHUSDT": True}),  # type: ignore[arg-type]
    )
    assert sorted(out.deleted) == sorted(o.key for o in objects)
    assert out.later_arrivals == [late.key]
    assert [o.key for o in any_store.list("raw/")] == [late.key]


@pytest.mark.parametrize("n", [2_345])
def test_many_v1_objects_are_deleted_in_batches_of_1000(any_store: ObjectStore, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from depth_core.raw_format import LineKind

    with ThreadPoolExecutor(8) as pool:
        objects = list(
            pool.map(
                lambda i: write_object(
                    any_store,
                    "eu-1",
                    "BTCUSDT",
                    [(NOON_NS + i * 10**6, LineKind.DEPTH, b"{}")],
                    session="s",
                    seq=i,
                ),
                range(n),
            )
        )
    store = CountingStore(any_store)
    out = cleanup_day(
        None, store, "spot", ["eu-1"], DATE, ["BTCUSDT"], gate_of=_gates(objects, {"BTCUSDT": True})
    )  # type: ignore[arg-type]
    assert len(out.deleted) == n and out.ok
    counts = store.snapshot()
    assert counts["HEAD"] == 0 and counts["DELETE_BATCH"] == 3 and counts["LIST"] == 3  # 2,345 keys: 3 pages
    assert list(any_store.list("raw/")) == []
