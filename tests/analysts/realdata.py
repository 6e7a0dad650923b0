"""Turn the shared hftbacktest recordings into merged-schema rows plus their @bookTicker oracle.

An independent, test-only parser (standard library + polars): the snapshot, then the depth events kept by
Binance's sync rule (spot: drop ``u <= lastUpdateId``; usdm: drop ``u < lastUpdateId``).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl

from depth_core.schema import MERGED_SCHEMA


@dataclass(frozen=True)
class Recording:
    merged: pl.DataFrame
    tickers: dict[int, tuple[float, float, float, float]]  # u -> bid, bid qty, ask, ask qty
    n_events: int


def load_recording(path: Path, market: str) -> Recording:
    snapshot: dict | None = None
    snapshot_ns = 0
    depth: list[tuple[int, dict]] = []
    tickers: dict[int, tuple[float, float, float, float]] = {}
    with gzip.open(path, "rt") as fh:
        for line in fh:
            ns_text, body = line.split(" ", 1)
            msg = orjson.loads(body)
            if "lastUpdateId" in msg:
                if snapshot is None:
                    snapshot, snapshot_ns = msg, int(ns_text)
                continue
            stream, data = msg["stream"], msg["data"]
            if "@depth" in stream:
                depth.append((int(ns_text), data))
            elif stream.endswith("@bookTicker"):
                tickers[int(data["u"])] = (
                    float(data["b"]),
                    float(data["B"]),
                    float(data["a"]),
                    float(data["A"]),
                )
    assert snapshot is not None
    last_id = int(snapshot["lastUpdateId"])
    rows: dict[str, list] = {name: [] for name in MERGED_SCHEMA}

    def add(
        ns: int,
        e_ms: int,
        t_ms: int | None,
        first: int,
        last: int,
        prev: int | None,
        snap: bool,
        side: str,
        price: str,
        qty: str,
        source: str,
    ) -> None:
        rows["symbol"].append("BTCUSDT")
        rows["exchange_time"].append(e_ms)
        rows["transaction_time"].append(t_ms)
        rows["receive_time"].append(ns)
        rows["first_update_id"].append(first)
        rows["last_update_id"].append(last)
        rows["prev_update_id"].append(prev)
        rows["is_snapshot"].append(snap)
        rows["side"].append(side)
        rows["price"].append(float(price))
        rows["qty"].append(float(qty))
        rows["source"].append(source)
        rows["book_exact"].append(True)

    snap_e = int(snapshot.get("E", snapshot_ns // 1_000_000))
    for side, key in (("bid", "bids"), ("ask", "asks")):
        for price, qty in snapshot[key]:
            add(
                snapshot_ns,
                snap_e,
                snapshot.get("T"),
                last_id,
                last_id,
                None,
                True,
                side,
                price,
                qty,
                "snapshot:real",
            )
    n_events = 0
    for ns, ev in depth:
        u = int(ev["u"])
        if (market == "spot" and u <= last_id) or (market == "usdm" and u < last_id):
            continue
        n_events += 1
        for side, key in (("bid", "b"), ("ask", "a")):
            for price, qty in ev[key]:
                add(
                    ns,
                    int(ev["E"]),
                    ev.get("T"),
                    int(ev["U"]),
                    u,
                    ev.get("pu"),
                    False,
                    side,
                    price,
                    qty,
                    "real",
                )
    frame = (
        pl.DataFrame(rows)
        .with_columns(
            pl.col("exchange_time").cast(pl.Datetime("ms", "UTC")),
            pl.col("transaction_time").cast(pl.Datetime("ms", "UTC")),
            pl.col("receive_time").cast(pl.Datetime("ns", "UTC")),
        )
        .cast(MERGED_SCHEMA)
    )  # type: ignore[arg-type]
    return Recording(merged=frame, tickers=tickers, n_events=n_events)
