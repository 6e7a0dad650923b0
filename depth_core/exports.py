"""Exports of the merged dataset to the formats of two ecosystems, so their users take our data unchanged.

* **Tardis.dev** ``incremental_book_L2`` CSV: ``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,
  price,amount`` with microsecond timestamps (``timestamp`` = exchange time ``E``, ``local_timestamp`` =
  receive time). A run of ``is_snapshot=true`` rows is a full image that replaces the book (Tardis's rule),
  exactly our image semantics. :func:`read_tardis_csv` imports such a file back (the round-trip test).
* **hftbacktest** event arrays (``np.savez_compressed(path, data=...)``) of its 64-byte ``event_dtype``
  ``(ev u8, exch_ts i8, local_ts i8, px f8, qty f8, order_id u8, ival i8, fval f8)``, nanosecond timestamps.
  Updates are ``DEPTH_EVENT``; an image becomes, per side, a ``DEPTH_CLEAR_EVENT`` whose price covers every
  level held, then ``DEPTH_SNAPSHOT_EVENT`` rows. ``exch_ts`` and ``local_ts`` are made non-decreasing in
  update-id order (running maximum), so both the exchange and the local view replay rows in id order and
  every row carries ``EXCH_EVENT | LOCAL_EVENT``. (Raw receive clocks may be skewed; hftbacktest's
  ``correct_local_timestamp`` can shift them.)

Both exports write one file per symbol-day, reading the day file by file (bounded memory for CSV).
Console script ``depth-export``: ``depth-export tardis|hftbacktest --symbol BTCUSDT --date 2026-11-24
[--to-date D] [--market spot|usdm] [--store URL] --out-dir DIR [--no-gzip]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import itertools
import shutil
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, cast

import numpy as np
import polars as pl

from depth_core.book import OrderBook, image_bounds, replay_arrays
from depth_core.names import InvalidNameError, Market, validate_date, validate_market, validate_symbol
from depth_core.reader import day_files, resolve_store, scan_keys
from depth_core.schema import MERGED_SCHEMA, SIDE_ASK, SIDE_BID
from depth_store.base import ObjectStore, StoreError

TARDIS_COLUMNS = [
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "is_snapshot",
    "side",
    "price",
    "amount",
]
TARDIS_EXCHANGE = {"spot": "binance", "usdm": "binance-futures"}

# hftbacktest's event layout and flags (from its documentation: hftbacktest.types)
HFT_EVENT_DTYPE = np.dtype(
    [
        ("ev", "u8"),
        ("exch_ts", "i8"),
        ("local_ts", "i8"),
        ("px", "f8"),
        ("qty", "f8"),
        ("order_id", "u8"),
        ("ival", "i8"),
        ("fval", "f8"),
    ],
    align=True,
)
DEPTH_EVENT = 1
DEPTH_CLEAR_EVENT = 3
DEPTH_SNAPSHOT_EVENT = 4
EXCH_EVENT = 1 << 31
LOCAL_EVENT = 1 << 30
BUY_EVENT = 1 << 29
SELL_EVENT = 1 << 28

_ROWS = ["exchange_time", "receive_time", "is_snapshot", "last_update_id", "side", "price", "qty"]


def _day_frames(store: ObjectStore, symbol: str, date: str, market: Market) -> Iterator[pl.DataFrame]:
    """The day's rows, one Parquet file at a time, in row order; an image is never split between frames.

    Rows with ``book_exact`` false are left out: neither format can mark a book as unknown, and applying
    them would present a wrong book as real until the next image (which resets it anyway).
    """
    carry: pl.DataFrame | None = None  # an image at the end of a file may continue in the next one
    for key in day_files(store, symbol, date, market):
        frame = scan_keys(store, [key]).filter(pl.col("book_exact")).select(_ROWS).collect()
        if carry is not None:
            frame = pl.concat([carry, frame])
            carry = None
        tail = _trailing_image_start(frame)
        if tail < frame.height:
            carry, frame = frame.slice(tail), frame.slice(0, tail)
        if frame.height:
            yield frame
    if carry is not None:
        yield carry


def _drop_superseded_images(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop an image immediately followed by another image: Tardis would read the two as one snapshot."""
    bounds = image_bounds(frame["is_snapshot"].to_numpy(), frame["last_update_id"].to_numpy())
    drop = np.zeros(frame.height, dtype=np.bool_)
    for (a, b), (c, _) in itertools.pairwise(bounds):
        if b == c:
            drop[a:b] = True
    return frame.filter(~pl.Series(drop)) if drop.any() else frame


def tardis_frame(rows: pl.DataFrame, symbol: str, market: Market) -> pl.DataFrame:
    """Merged rows -> Tardis ``incremental_book_L2`` rows (same order)."""
    rows = _drop_superseded_images(rows)
    return rows.select(
        pl.lit(TARDIS_EXCHANGE[market]).alias("exchange"),
        pl.lit(symbol).alias("symbol"),
        pl.col("exchange_time").dt.epoch("us").alias("timestamp"),
        pl.col("receive_time").dt.epoch("us").alias("local_timestamp"),
        pl.col("is_snapshot"),
        pl.col("side"),
        pl.col("price"),
        pl.col("qty").alias("amount"),
    )


def _write_csv(frame: pl.DataFrame, out: IO[bytes], header: bool) -> None:
    buf = io.BytesIO()
    frame.write_csv(buf, include_header=header)
    out.write(buf.getvalue())


def export_tardis_day(
    store: ObjectStore, symbol: str, date: str, out_path: Path, market: Market = "spot", compress: bool = True
) -> int:
    """Write one symbol-day as Tardis CSV (gzip when ``compress``); returns the number of rows."""
    symbol, date, market = validate_symbol(symbol), validate_date(date), validate_market(market)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    written = 0
    with open(tmp, "wb") as raw:
        out = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)) if compress else raw
        try:
            for frame in _day_frames(store, symbol, date, market):
                rows = tardis_frame(frame, symbol, market)
                _write_csv(rows, out, header=written == 0)
                written += rows.height
            if written == 0:
                _write_csv(pl.DataFrame(schema=dict.fromkeys(TARDIS_COLUMNS, pl.String)), out, header=True)
        finally:
            if out is not raw:
                out.close()
    tmp.replace(out_path)
    return written


def _trailing_image_start(frame: pl.DataFrame) -> int:
    """Index where a trailing run of image rows starts (frame.height if the frame ends with an event)."""
    snap = frame["is_snapshot"].to_numpy()
    if frame.height == 0 or not snap[-1]:
        return frame.height
    not_snap = np.flatnonzero(~snap)
    return int(not_snap[-1]) + 1 if len(not_snap) else 0


def read_tardis_csv(path: Path | str, symbol: str | None = None) -> pl.DataFrame:
    """Import a Tardis ``incremental_book_L2`` CSV (plain or .gz) as merged-schema rows, replayable as ours.

    Tardis has no update ids: each run of snapshot rows becomes one image and each run of rows with one
    (timestamp, local_timestamp) one event, numbered in file order. ``source`` is ``tardis``.
    """
    frame = pl.read_csv(
        path,
        schema={
            "exchange": pl.String,
            "symbol": pl.String,
            "timestamp": pl.Int64,
            "local_timestamp": pl.Int64,
            "is_snapshot": pl.Boolean,
            "side": pl.String,
            "price": pl.Float64,
            "amount": pl.Float64,
        },
    )
    if symbol is not None:
        frame = frame.filter(pl.col("symbol") == symbol)
    snap = frame["is_snapshot"].to_numpy() if frame.height else np.zeros(0, dtype=np.bool_)
    ts = frame["timestamp"].to_numpy()
    lts = frame["local_timestamp"].to_numpy()
    change = np.ones(frame.height, dtype=np.bool_)
    if frame.height > 1:
        same_image = snap[1:] & snap[:-1]
        same_event = ~snap[1:] & ~snap[:-1] & (ts[1:] == ts[:-1]) & (lts[1:] == lts[:-1])
        change[1:] = ~(same_image | same_event)
    ids = np.cumsum(change).astype(np.int64)
    return frame.select(
        pl.col("symbol"),
        pl.from_epoch("timestamp", "us")
        .dt.cast_time_unit("ms")
        .dt.replace_time_zone("UTC")
        .alias("exchange_time"),
        pl.lit(None).alias("transaction_time"),
        pl.from_epoch("local_timestamp", "us")
        .dt.cast_time_unit("ns")
        .dt.replace_time_zone("UTC")
        .alias("receive_time"),
        pl.Series("first_update_id", ids),
        pl.Series("last_update_id", ids),
        pl.lit(None).alias("prev_update_id"),
        pl.col("is_snapshot"),
        pl.col("side"),
        pl.col("price"),
        pl.col("amount").alias("qty"),
        pl.lit("tardis").alias("source"),
        pl.lit(True).alias("book_exact"),  # the export holds only exact rows
    ).cast(MERGED_SCHEMA)  # type: ignore[arg-type]


def hftbacktest_events(rows: pl.DataFrame, book: OrderBook | None = None) -> tuple[np.ndarray, OrderBook]:
    """Merged rows (in order) -> hftbacktest events; ``book`` is the state before the rows (None: unknown).

    Returns the events and the book after the rows (pass it to the next call to continue a day).
    """
    n = rows.height
    snap = rows["is_snapshot"].to_numpy() if n else np.zeros(0, dtype=np.bool_)
    ids = rows["last_update_id"].to_numpy()
    is_bid = (rows["side"] == SIDE_BID).to_numpy()
    price = rows["price"].to_numpy().astype(np.float64)
    qty = rows["qty"].to_numpy().astype(np.float64)
    exch = (
        np.maximum.accumulate(rows["exchange_time"].dt.epoch("ns").to_numpy()) if n else np.zeros(0, np.int64)
    )
    local = (
        np.maximum.accumulate(rows["receive_time"].dt.epoch("ns").to_numpy()) if n else np.zeros(0, np.int64)
    )
    images = image_bounds(snap, ids)
    side_flag = np.where(is_bid, BUY_EVENT, SELL_EVENT).astype(np.uint64)
    kind = np.where(snap, DEPTH_SNAPSHOT_EVENT, DEPTH_EVENT).astype(np.uint64)
    ev = kind | side_flag | np.uint64(EXCH_EVENT | LOCAL_EVENT)
    # image rows ordered bids then asks so each side's clear precedes its rows
    order = np.arange(n)
    clears: list[tuple[int, int, float]] = []  # (insert before row index, side flag, px)
    state = book
    pos = 0
    for a, b in images:
        state = (
            replay_arrays(is_bid[pos:a], price[pos:a], qty[pos:a], book=state) if state is not None else None
        )
        sub = order[a:b]
        order[a:b] = np.concatenate([sub[is_bid[a:b]], sub[~is_bid[a:b]]])
        img_bids, img_asks = price[a:b][is_bid[a:b]], price[a:b][~is_bid[a:b]]
        held_bids = np.array(list(state.levels(SIDE_BID))) if state is not None else None
        held_asks = np.array(list(state.levels(SIDE_ASK))) if state is not None else None
        # clear everything the side may hold: down to its lowest bid / up to its highest ask
        low = 0.0 if held_bids is None else float(np.concatenate([held_bids, img_bids, [np.inf]]).min())
        high = (
            2.0 * float(np.concatenate([img_asks, [0.0]]).max())
            if held_asks is None
            else float(np.concatenate([held_asks, img_asks, [-np.inf]]).max())
        )
        n_img_bids = len(img_bids)
        if np.isfinite(low):
            clears.append((a, BUY_EVENT, low))
        if np.isfinite(high) and high > 0:
            clears.append((a + n_img_bids, SELL_EVENT, high))
        state = OrderBook()
        state.load_snapshot(
            np.column_stack([img_bids, qty[a:b][is_bid[a:b]]]),
            np.column_stack([img_asks, qty[a:b][~is_bid[a:b]]]),
        )
        pos = b
    if state is not None:
        replay_arrays(is_bid[pos:], price[pos:], qty[pos:], book=state)
    else:
        state = OrderBook()
    out = np.zeros(n + len(clears), dtype=HFT_EVENT_DTYPE)
    insert_at = np.array([c[0] for c in clears], dtype=np.int64)
    row_slots = np.arange(n) + np.searchsorted(insert_at, np.arange(n), side="right")
    out["ev"][row_slots] = ev[order]
    out["exch_ts"][row_slots] = exch[order]
    out["local_ts"][row_slots] = local[order]
    out["px"][row_slots] = price[order]
    out["qty"][row_slots] = qty[order]
    for k, (at, flag, px) in enumerate(clears):
        slot = at + k
        src = order[min(at, n - 1)]
        out[slot] = (
            DEPTH_CLEAR_EVENT | flag | EXCH_EVENT | LOCAL_EVENT,
            exch[src],
            local[src],
            px,
            0.0,
            0,
            0,
            0.0,
        )
    return out, state


def export_hftbacktest_day(
    store: ObjectStore, symbol: str, date: str, out_path: Path, market: Market = "spot"
) -> int:
    """Write one symbol-day as hftbacktest ``.npz`` (key ``data``); returns the number of events.

    Memory stays at one Parquet file of rows: events go to a temporary file first, then are streamed into
    the zip member ``data.npy`` (deflate, as ``np.savez_compressed``), which ``np.load`` reads as usual.
    """
    symbol, date, market = validate_symbol(symbol), validate_date(date), validate_market(market)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_events = out_path.with_name(out_path.name + ".events.tmp")
    tmp_zip = out_path.with_name(out_path.name + ".part")
    count = 0
    book: OrderBook | None = None  # unknown before the day's first image: its clears cover everything
    try:
        with open(tmp_events, "wb") as fh:
            for frame in _day_frames(store, symbol, date, market):
                events, book = hftbacktest_events(frame, book)
                fh.write(events.tobytes())
                count += len(events)
        with (
            zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf,
            zf.open("data.npy", "w", force_zip64=True) as member,
            open(tmp_events, "rb") as src,
        ):
            np.lib.format.write_array_header_1_0(
                member,
                {
                    "descr": np.lib.format.dtype_to_descr(HFT_EVENT_DTYPE),
                    "fortran_order": False,
                    "shape": (count,),
                },
            )
            shutil.copyfileobj(src, member, 16 << 20)
        tmp_zip.replace(out_path)
    finally:
        tmp_events.unlink(missing_ok=True)
        tmp_zip.unlink(missing_ok=True)
    return count


def tardis_file_name(market: Market, symbol: str, date: str, compress: bool = True) -> str:
    """Tardis's own naming: ``binance_incremental_book_L2_2026-11-24_BTCUSDT.csv.gz``."""
    return f"{TARDIS_EXCHANGE[market]}_incremental_book_L2_{date}_{symbol}.csv" + (".gz" if compress else "")


def hftbacktest_file_name(market: Market, symbol: str, date: str) -> str:
    return f"{market}_{symbol.lower()}_{date.replace('-', '')}.npz"


def _dates(first: str, last: str | None) -> list[str]:
    d0 = dt.date.fromisoformat(validate_date(first))
    d1 = dt.date.fromisoformat(validate_date(last)) if last else d0
    if d1 < d0:
        raise InvalidNameError(f"--to-date {last} is before --date {first}")
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def main(argv: Sequence[str] | None = None) -> int:
    """``depth-export tardis|hftbacktest``: one output file per symbol-day; exit 1 if a day has no data."""
    parser = argparse.ArgumentParser(
        prog="depth-export", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("format", choices=["tardis", "hftbacktest"])
    parser.add_argument("--symbol", required=True, action="append", help="symbol (repeatable, or A,B)")
    parser.add_argument("--date", required=True, help="UTC date YYYY-MM-DD (first day)")
    parser.add_argument("--to-date", default=None, help="last UTC date, inclusive (default: --date)")
    parser.add_argument("--market", default="spot", choices=["spot", "usdm"])
    parser.add_argument("--store", default=None, help="store URL (default: $DEPTH_STORE_URL)")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--no-gzip", action="store_true", help="Tardis CSV uncompressed")
    args = parser.parse_args(argv)
    try:
        symbols = [validate_symbol(s) for arg in args.symbol for s in arg.split(",") if s.strip()]
        dates = _dates(args.date, args.to_date)
        market = validate_market(args.market)
        store = resolve_store(args.store)
    except (InvalidNameError, ValueError, StoreError) as exc:
        print(f"depth-export: {exc}", file=sys.stderr)
        return 2
    missing = 0
    for symbol in symbols:
        for date in dates:
            if not day_files(store, symbol, date, market):
                print(f"{symbol} {date}: no merged data", file=sys.stderr)
                missing += 1
                continue
            if args.format == "tardis":
                path = args.out_dir / tardis_file_name(market, symbol, date, not args.no_gzip)
                n = export_tardis_day(store, symbol, date, path, market, compress=not args.no_gzip)
            else:
                path = args.out_dir / hftbacktest_file_name(market, symbol, date)
                n = export_hftbacktest_day(store, symbol, date, path, market)
            print(f"{symbol} {date}: {n} rows -> {path}")
    return 1 if missing else 0


__all__ = [
    "HFT_EVENT_DTYPE",
    "TARDIS_COLUMNS",
    "export_hftbacktest_day",
    "export_tardis_day",
    "hftbacktest_events",
    "main",
    "read_tardis_csv",
    "tardis_frame",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
