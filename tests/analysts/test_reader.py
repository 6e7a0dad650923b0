"""Reading API against the ground truth of a generated two-day dataset (local store and moto S3)."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import polars as pl
import pytest

from depth_core import reader
from depth_core.names import Market
from depth_store import ObjectStore, open_store
from tests.analysts import synth

DAYS = ("2026-11-23", "2026-11-24")


def _day_ns(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def _queries(seed: int) -> list[int]:
    rng = random.Random(seed)
    start = _day_ns(DAYS[0]) + 2_000 * 1_000_000  # after the first image
    end = _day_ns(DAYS[1]) + 86_400 * 1_000_000_000
    picks = [rng.randrange(start, end) for _ in range(25)]
    # right at a day boundary and in the first seconds of the second day (before any event)
    return sorted({*picks, _day_ns(DAYS[1]), _day_ns(DAYS[1]) + 1_000_000_000})


@pytest.fixture(scope="module", params=["spot", "usdm"])
def dataset(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ObjectStore, synth.SynthData]:
    market: Market = request.param
    queries = _queries(11)
    data = synth.generate(market=market, days=DAYS, events_per_day=1200, seed=3, query_times_ns=queries)
    store = open_store(str(tmp_path_factory.mktemp(f"store-{market}")))
    synth.write(store, data)
    return store, data


def _as_dict(frame: pl.DataFrame) -> dict[float, float]:
    return dict(zip(frame["price"].to_list(), frame["qty"].to_list(), strict=True))


def test_book_at_equals_ground_truth_at_random_instants(dataset: tuple[ObjectStore, synth.SynthData]) -> None:
    store, data = dataset
    assert len(data.truth.at_time) >= 20
    for t_ns, (true_bids, true_asks) in data.truth.at_time.items():
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=t_ns // 1000)
        bids, asks = reader.book_at(data.symbol, when, store=store, market=data.market)
        assert _as_dict(bids) == true_bids, when
        assert _as_dict(asks) == true_asks, when
        assert bids["price"].to_list() == sorted(true_bids, reverse=True)
        assert asks["price"].to_list() == sorted(true_asks)


def test_book_at_update_id_and_depth(tmp_path: object) -> None:
    data = synth.generate(days=DAYS[:1], events_per_day=300, seed=8, query_ids=[])
    frame = data.frames[DAYS[0]]
    event_ids = frame.filter(~pl.col("is_snapshot"))["last_update_id"].unique().sort().to_list()
    wanted = [event_ids[5], event_ids[100], event_ids[-1]]
    data = synth.generate(days=DAYS[:1], events_per_day=300, seed=8, query_ids=wanted)
    store = open_store(str(tmp_path))
    synth.write(store, data)
    for u in wanted:
        bids, asks = reader.book_at(data.symbol, u, store=store)
        assert _as_dict(bids) == data.truth.at_id[u][0]
        assert _as_dict(asks) == data.truth.at_id[u][1]
    bids, asks = reader.book_at(data.symbol, wanted[1], store=store, depth=3)
    assert bids.height == 3 and asks.height == 3
    assert bids["price"].to_list() == sorted(data.truth.at_id[wanted[1]][0], reverse=True)[:3]
    with pytest.raises(reader.NoDataError):
        reader.book_at(data.symbol, 5, store=store)
    with pytest.raises(reader.NoDataError):
        reader.book_at(data.symbol, "2020-01-01T00:00:00", store=store)
    with pytest.raises(reader.NoDataError):  # the next day is not merged: no stale answer from this one
        reader.book_at(data.symbol, "2026-11-24T12:00:00", store=store)


def test_iter_books_on_a_grid_across_midnight(dataset: tuple[ObjectStore, synth.SynthData]) -> None:
    store, data = dataset
    start = dt.datetime(2026, 11, 23, 22, 0, tzinfo=dt.UTC)
    samples = list(
        reader.iter_books(
            data.symbol, start, "2026-11-24T02:00:00", every="10m", depth=5, store=store, market=data.market
        )
    )
    assert len(samples) == 24
    assert samples[0].time == start and samples[-1].time == dt.datetime(2026, 11, 24, 1, 50, tzinfo=dt.UTC)
    for sample in samples[::5]:
        bids, asks = reader.book_at(data.symbol, sample.time, store=store, market=data.market, depth=5)
        assert sample.bids.tolist() == bids.to_numpy().tolist(), sample.time
        assert sample.asks.tolist() == asks.to_numpy().tolist(), sample.time
        assert sample.bids.shape == (5, 2) and sample.bids[0, 0] < sample.asks[0, 0]
    after = list(
        reader.iter_books(
            data.symbol,
            "2026-11-24T23:59:00",
            "2026-11-25T00:02:00",
            every="1m",
            depth=2,
            store=store,
            market=data.market,
        )
    )
    assert [len(s.bids) for s in after] == [2, 0, 0]  # 2026-11-25 is not merged: empty, not stale


def test_load_deltas_bounds_and_pushdown(dataset: tuple[ObjectStore, synth.SynthData]) -> None:
    store, data = dataset
    everything = pl.concat(list(data.frames.values()))
    lf = reader.load_deltas(
        data.symbol, "2026-11-23T06:00:00", "2026-11-24T03:00:00", store=store, market=data.market
    )
    plan = lf.explain()
    assert "exchange_time" in plan and "SELECTION" in plan.upper()  # the filter is inside the scan
    got = lf.collect()
    t0 = dt.datetime(2026, 11, 23, 6, tzinfo=dt.UTC)
    t1 = dt.datetime(2026, 11, 24, 3, tzinfo=dt.UTC)
    want = everything.filter((pl.col("exchange_time") >= t0) & (pl.col("exchange_time") < t1))
    assert got.equals(want)
    assert got["last_update_id"].is_sorted()
    ids = everything["last_update_id"]
    lo, hi = int(ids[300]), int(ids[2000])
    by_id = reader.load_deltas(
        data.symbol, store=store, market=data.market, min_update_id=lo, max_update_id=hi
    ).collect()
    assert by_id.equals(everything.filter(pl.col("last_update_id").is_between(lo, hi)))
    one_day = reader.load_deltas(
        data.symbol, "2026-11-24", "2026-11-25", store=store, market=data.market
    ).collect()
    assert one_day.equals(data.frames["2026-11-24"])
    assert reader.list_days(data.symbol, store=store, market=data.market) == list(DAYS)


def test_reader_over_s3(s3_env: str) -> None:
    data = synth.generate(
        days=DAYS[:1], events_per_day=200, seed=4, query_times_ns=[_day_ns(DAYS[0]) + 43_200 * 1_000_000_000]
    )
    synth.write(open_store(s3_env), data)
    frame = reader.load_deltas(data.symbol, DAYS[0], "2026-11-24", store=s3_env).collect()
    assert frame.equals(data.frames[DAYS[0]])
    ((_, (true_bids, _)),) = data.truth.at_time.items()
    bids, _ = reader.book_at(data.symbol, dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC), store=s3_env)
    assert _as_dict(bids) == true_bids


def test_default_store_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv(reader.STORE_ENV, raising=False)
    with pytest.raises(ValueError, match="DEPTH_STORE_URL"):
        reader.load_deltas("BTCUSDT", "2026-11-23", "2026-11-24")
    monkeypatch.setenv(reader.STORE_ENV, str(tmp_path))
    assert reader.load_deltas("BTCUSDT", "2026-11-23", "2026-11-24").collect().height == 0
    assert reader.parse_every("100ms") == 100_000_000
    assert reader.parse_every(dt.timedelta(seconds=2)) == 2_000_000_000
    with pytest.raises(ValueError):
        reader.parse_every("soon")
    assert np.array_equal(reader.grid_sample_rows(np.array([5, 3, 9]), np.array([2, 5, 8, 9])), [0, 2, 2, 3])


def test_iter_frames_yields_whole_days_file_by_file(dataset: tuple[ObjectStore, synth.SynthData]) -> None:
    store, data = dataset
    frames = list(reader.iter_frames(data.symbol, DAYS[0], DAYS[1], store=store, market=data.market))
    assert len(frames) == 4  # two files a day
    assert pl.concat(frames).equals(pl.concat([data.frames[d] for d in DAYS]))
    only = list(reader.iter_frames(data.symbol, DAYS[1], store=store, market=data.market, columns=["price"]))
    assert pl.concat(only).columns == ["price"] and pl.concat(only).height == data.frames[DAYS[1]].height
