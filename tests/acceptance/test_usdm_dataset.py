"""The merged dataset (docs/analysts.md, "Columns") on usdm: ``T`` and ``pu`` columns, image times, and the
re-anchoring image after a gap no stream covered.

The merge core is driven directly (validate + merge of one symbol-day over a local store) on a synthetic
usdm exchange whose book after every update id is known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from depth_core.merge import merge_symbol_day
from depth_core.validate import validate_symbol_day
from depth_store import open_store
from tests.core.synth import SyntheticExchange, stream_lines, write_stream

DATE = "2025-11-24"


def test_usdm_columns_images_and_reanchoring(tmp_path: Path) -> None:
    ex = SyntheticExchange(market="usdm", seed=7)
    ex.run(400)
    events = ex.events([1, 3, 2])
    gap = (int(events[40]["U"]), int(events[50]["u"]))  # type: ignore[call-overload]
    early, late = int(events[55]["u"]), int(events[65]["u"])  # type: ignore[call-overload]
    eu_drop = (int(events[10]["U"]), int(events[14]["u"]))  # type: ignore[call-overload]
    ap_drop = (int(events[80]["U"]), int(events[82]["u"]))  # type: ignore[call-overload]
    eu = stream_lines(ex, events, drop=[gap, eu_drop], snapshots=[ex.first_id, late])
    ap = stream_lines(ex, events, latency_ms=25, drop=[gap, ap_drop], snapshots=[ex.first_id, early])
    store = open_store(str(tmp_path / "store"))
    write_stream(store, "usdm", "eu-1", ex.symbol, eu, session="eu")
    write_stream(store, "usdm", "ap-1", ex.symbol, ap, session="ap")
    for stream in ("eu-1", "ap-1"):
        validate_symbol_day(store, "usdm", stream, ex.symbol, DATE)
    merge_symbol_day(store, "usdm", ex.symbol, DATE, ["eu-1", "ap-1"])

    folder = tmp_path / "store" / f"merged/market=usdm/symbol={ex.symbol}/date={DATE}"
    table = pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])
    rows: list[dict[str, Any]] = table.to_pylist()
    receive_ns = table.column("receive_time").cast(pa.int64()).to_pylist()
    by_u = {int(e["u"]): e for e in events}  # type: ignore[call-overload]

    images = [(i, r) for i, r in enumerate(rows) if r["is_snapshot"]]
    image_ids = sorted({r["last_update_id"] for _, r in images})
    assert image_ids == [ex.first_id, early], "opening snapshot, then the earliest snapshot after the gap"
    reanchor = [r for _, r in images if r["last_update_id"] == early]
    assert {r["source"] for r in reanchor} == {"snapshot:ap-1"}
    for i, r in images:
        assert int(r["exchange_time"].timestamp() * 1000) == ex.times[r["last_update_id"]], "image E"
        assert receive_ns[i] == int(
            (ex.times[r["last_update_id"]] + 50.0) * 1_000_000
        )  # as stream_lines wrote it
    for i, r in enumerate(rows):
        if r["is_snapshot"]:
            continue
        ev = by_u[r["last_update_id"]]
        # the earliest receive wins: eu-1 (20 ms) unless eu-1 missed it, then ap-1 (25 ms)
        expected = "ap-1" if eu_drop[0] <= r["last_update_id"] <= eu_drop[1] else "eu-1"
        assert r["source"] == expected
        e_ms = int(str(ev["E"]))
        assert receive_ns[i] == (
            int((e_ms + 25) * 1_000_000) if expected == "ap-1" else int((e_ms + 20.0) * 1_000_000)
        )
        assert r["first_update_id"] == ev["U"] and r["prev_update_id"] == ev["pu"]
        assert r["transaction_time"] is not None and int(r["transaction_time"].timestamp() * 1000) == ev["T"]
        # events between the gap and the re-anchoring image are kept, flagged: their book is unknown
        assert r["book_exact"] == (not (gap[0] <= r["last_update_id"] <= early)), r["last_update_id"]

    # replay: the exchange's book after every event
    book: dict[tuple[str, float], float] = {}
    image_id: int | None = None
    for i, r in enumerate(rows):
        if r["is_snapshot"] and image_id != r["last_update_id"]:
            book, image_id = {}, r["last_update_id"]
        elif not r["is_snapshot"]:
            image_id = None
        if r["qty"] == 0:
            book.pop((r["side"], r["price"]), None)
        else:
            book[(r["side"], r["price"])] = r["qty"]
        end_of_group = i + 1 == len(rows) or rows[i + 1]["last_update_id"] != r["last_update_id"]
        if end_of_group and r["book_exact"]:
            bids, asks = ex.books[r["last_update_id"]]
            assert book == {("bid", p): q for p, q in bids.items()} | {
                ("ask", p): q for p, q in asks.items()
            }, f"book after u={r['last_update_id']}"

    manifest = json.loads((folder / "_coverage_manifest.json").read_text())
    assert len(manifest["gaps"]) == 1
    g = manifest["gaps"][0]
    assert g["reanchored_at"] == early and "ap-1" in str(g["snapshot_source"])
    assert g["skipped_ids"] == 0, "received ids between the gap and the re-anchoring image are kept as rows"
    kept = {r["last_update_id"] for r in rows if not r["book_exact"]}
    assert kept == {int(e["u"]) for e in events if g["last_id"] < int(e["u"]) <= early}  # type: ignore[call-overload]
