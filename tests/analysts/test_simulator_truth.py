"""book_at against the exchange simulator's own book (exchange_sim.generator) at random instants.

The dataset is built here the way the merge writes it: an opening image (the generator's book), then one
row per level changed by each canonical event (its final quantity), ids and times from the generator.
"""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from depth_core import reader
from depth_core.names import Market
from depth_core.schema import MERGED_SCHEMA
from depth_store import open_store
from exchange_sim.generator import BID, BookGenerator, Formatter, partial_of, spec_for
from tests.analysts import synth

DAY = "2026-11-24"
DAY_MS = int(dt.datetime(2026, 11, 24, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_book_at_equals_simulator_book(market: Market, tmp_path: object) -> None:
    rng = random.Random(market)
    spec = spec_for("BTCUSDT", market)
    gen = BookGenerator(spec, market, seed=9)
    fmt = Formatter(spec)
    price = {}

    def px(ticks: int) -> float:
        if ticks not in price:
            price[ticks] = float(fmt.price(ticks))
        return price[ticks]

    def book_now() -> tuple[dict[float, float], dict[float, float]]:
        bids, asks = gen.snapshot_levels()
        return (
            {px(p): float(fmt.qty(q)) for p, q in bids.items()},
            {px(p): float(fmt.qty(q)) for p, q in asks.items()},
        )

    rows: list[tuple] = []
    open_ms = DAY_MS + 700
    image_id = gen.last_update_id
    bids, asks = gen.snapshot_levels()
    for side, levels in (("bid", bids), ("ask", asks)):
        for p, q in levels.items():
            rows.append(
                (
                    open_ms,
                    None,
                    image_id,
                    image_id,
                    None,
                    True,
                    side,
                    px(p),
                    float(fmt.qty(q)),
                    "snapshot:sim",
                )
            )
    times = sorted(rng.sample(range(open_ms + 1, DAY_MS + 86_400_000), 1500))
    queries = sorted(rng.sample(range(open_ms, DAY_MS + 86_400_000), 20))
    truth: dict[int, tuple[dict[float, float], dict[float, float]]] = {}
    qi = 0
    prev_u = image_id
    for t in times:
        while qi < len(queries) and queries[qi] < t:
            truth[queries[qi]] = book_now()
            qi += 1
        ev = gen.next_event(t)
        part = partial_of([ev])
        for side, levels in (("bid", part.bids), ("ask", part.asks)):
            for p, q in levels.items():
                rows.append(
                    (
                        t,
                        ev.transaction_time_ms if market == "usdm" else None,
                        ev.first_id,
                        ev.last_id,
                        prev_u if market == "usdm" else None,
                        False,
                        side,
                        px(p),
                        float(fmt.qty(q)),
                        "sim",
                    )
                )
        prev_u = ev.last_id
    for q_ms in queries[qi:]:
        truth[q_ms] = book_now()
    assert BID == 0 and len(truth) == 20
    frame = (
        pl.DataFrame(
            rows,
            orient="row",
            infer_schema_length=None,
            schema=[
                "exchange_time",
                "transaction_time",
                "first_update_id",
                "last_update_id",
                "prev_update_id",
                "is_snapshot",
                "side",
                "price",
                "qty",
                "source",
            ],
        )
        .with_columns(
            pl.lit("BTCUSDT").alias("symbol"),
            pl.lit(True).alias("book_exact"),
            pl.col("exchange_time").cast(pl.Datetime("ms", "UTC")),
            pl.col("transaction_time").cast(pl.Datetime("ms", "UTC")),
            (pl.col("exchange_time").cast(pl.Int64) * 1_000_000 + 30_000_000)
            .cast(pl.Datetime("ns", "UTC"))
            .alias("receive_time"),
        )
        .select(list(MERGED_SCHEMA))
        .cast(MERGED_SCHEMA)
    )  # type: ignore[arg-type]
    store = open_store(str(tmp_path))
    data = synth.SynthData("BTCUSDT", market, [DAY], {DAY: frame}, synth.TruthBook(), len(times))
    synth.write(store, data, files_per_day=3)
    for q_ms, (true_bids, true_asks) in truth.items():
        when = dt.datetime.fromtimestamp(q_ms / 1000, dt.UTC)
        got_bids, got_asks = reader.book_at("BTCUSDT", when, store=store, market=market)
        assert dict(zip(got_bids["price"], got_bids["qty"], strict=True)) == true_bids, when
        assert dict(zip(got_asks["price"], got_asks["qty"], strict=True)) == true_asks, when
        assert got_bids["price"][0] < got_asks["price"][0]
