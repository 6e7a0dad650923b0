"""Exports round-trip: the Tardis CSV re-imported and the hftbacktest events replayed rebuild the same
books."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from depth_core import exports
from depth_core.book import OrderBook, replay_merged
from depth_store import ObjectStore, open_store
from tests.analysts import synth

DAY = "2026-11-23"


def books_by_time(frame: pl.DataFrame) -> dict[int, tuple[dict[float, float], dict[float, float]]]:
    """Exchange time (ms) -> the book after the last event with that time."""
    out: dict[int, tuple[dict[float, float], dict[float, float]]] = {}

    def on_event(book: OrderBook, rows: pl.DataFrame) -> None:
        out[int(rows["exchange_time"].dt.epoch("ms")[0])] = (book.levels("bid"), book.levels("ask"))

    replay_merged(frame, on_event)
    return out


@pytest.fixture(scope="module", params=["spot", "usdm"])
def day_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ObjectStore, synth.SynthData]:
    data = synth.generate(market=request.param, days=(DAY,), events_per_day=800, seed=13)
    store = open_store(str(tmp_path_factory.mktemp("exp")))
    frame = data.frames[DAY]
    mid_image = frame.with_row_index().filter(pl.col("is_snapshot") & (pl.col("index") > 10))["index"]
    # files cut inside both images: the exporters must not read a split image as two
    synth.write(store, data, cuts=[100, int(mid_image[len(mid_image) // 2]), frame.height - 5])
    return store, data


def test_tardis_round_trip_rebuilds_the_same_books(
    day_store: tuple[ObjectStore, synth.SynthData], tmp_path: Path
) -> None:
    store, data = day_store
    out = tmp_path / exports.tardis_file_name(data.market, data.symbol, DAY)
    n = exports.export_tardis_day(store, data.symbol, DAY, out, data.market)
    original = data.frames[DAY]
    assert n == original.height
    with gzip.open(out, "rt") as fh:
        header = fh.readline().strip()
        first = fh.readline().strip().split(",")
    assert header == ",".join(exports.TARDIS_COLUMNS)
    assert first[0] == exports.TARDIS_EXCHANGE[data.market] and first[1] == data.symbol and first[4] == "true"
    assert int(first[2]) == int(original["exchange_time"].dt.epoch("us")[0])
    imported = exports.read_tardis_csv(out)
    assert imported["price"].to_list() == original["price"].to_list()  # exact float round trip of the text
    assert imported["qty"].to_list() == original["qty"].to_list()
    assert books_by_time(imported) == books_by_time(original)
    plain = tmp_path / "plain.csv"
    exports.export_tardis_day(store, data.symbol, DAY, plain, data.market, compress=False)
    assert plain.read_text().startswith("exchange,symbol,timestamp")


def replay_hftbacktest(events: np.ndarray) -> dict[int, tuple[dict[float, float], dict[float, float]]]:
    """An independent reading of hftbacktest's semantics: clears remove the side from the best to ``px``."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    out: dict[int, tuple[dict[float, float], dict[float, float]]] = {}
    times = (events["exch_ts"] // 1_000_000).tolist()
    for i, row in enumerate(events):
        ev = int(row["ev"])
        kind = ev & 0xFF
        buy = bool(ev & exports.BUY_EVENT)
        side = bids if buy else asks
        px, qty = float(row["px"]), float(row["qty"])
        if kind == exports.DEPTH_CLEAR_EVENT:
            for p in [p for p in side if (p >= px if buy else p <= px)]:
                del side[p]
        elif kind in (exports.DEPTH_EVENT, exports.DEPTH_SNAPSHOT_EVENT):
            if qty > 0:
                side[px] = qty
            else:
                side.pop(px, None)
        if i + 1 == len(times) or times[i + 1] != times[i]:
            out[times[i]] = (dict(bids), dict(asks))
    return out


def test_hftbacktest_events_rebuild_the_same_books(
    day_store: tuple[ObjectStore, synth.SynthData], tmp_path: Path
) -> None:
    store, data = day_store
    out = tmp_path / exports.hftbacktest_file_name(data.market, data.symbol, DAY)
    n = exports.export_hftbacktest_day(store, data.symbol, DAY, out, data.market)
    events = np.load(out)["data"]
    assert events.dtype == exports.HFT_EVENT_DTYPE and events.dtype.itemsize == 64 and len(events) == n
    flags = events["ev"] & np.uint64(exports.EXCH_EVENT | exports.LOCAL_EVENT)
    assert (flags == exports.EXCH_EVENT | exports.LOCAL_EVENT).all()
    assert (np.diff(events["exch_ts"]) >= 0).all() and (np.diff(events["local_ts"]) >= 0).all()
    kinds = events["ev"] & np.uint64(0xFF)
    original = data.frames[DAY]
    n_images = original.filter(pl.col("is_snapshot"))["last_update_id"].n_unique()
    assert int((kinds == exports.DEPTH_CLEAR_EVENT).sum()) == 2 * n_images
    assert int((kinds == exports.DEPTH_SNAPSHOT_EVENT).sum()) == int(original["is_snapshot"].sum())
    assert replay_hftbacktest(events) == books_by_time(original)


def test_cli_writes_one_file_per_day_and_reports_missing_days(
    day_store: tuple[ObjectStore, synth.SynthData], tmp_path: Path
) -> None:
    store, data = day_store
    args = [
        "--symbol",
        data.symbol,
        "--date",
        DAY,
        "--market",
        data.market,
        "--store",
        store.url,
        "--out-dir",
        str(tmp_path),
    ]
    assert exports.main(["tardis", *args]) == 0
    assert exports.main(["hftbacktest", *args]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [
            exports.tardis_file_name(data.market, data.symbol, DAY),
            exports.hftbacktest_file_name(data.market, data.symbol, DAY),
        ]
    )
    assert exports.main(["tardis", *args[:3], DAY, "--to-date", "2026-11-24", *args[4:]]) == 1
    assert (
        exports.main(
            ["tardis", "--symbol", "bad/sym", "--date", DAY, "--store", store.url, "--out-dir", str(tmp_path)]
        )
        == 2
    )
