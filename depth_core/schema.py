"""The one definition of the merged dataset's schema (docs/analysts.md): writer, checks and reader import it.

Where the merged days live: ``depth_core/layout.py``."""

from __future__ import annotations

import polars as pl

MERGED_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "exchange_time": pl.Datetime("ms", "UTC"),
    "transaction_time": pl.Datetime("ms", "UTC"),
    "receive_time": pl.Datetime("ns", "UTC"),
    "first_update_id": pl.Int64(),
    "last_update_id": pl.Int64(),
    "prev_update_id": pl.Int64(),
    "is_snapshot": pl.Boolean(),
    "side": pl.String(),
    "price": pl.Float64(),
    "qty": pl.Float64(),
    "source": pl.String(),
    # false on event rows whose book is unknown: after ids no stream received, until the image that re-anchors
    # the book (or the day's end), and before the first image of a day without a carried book
    "book_exact": pl.Boolean(),
}
MERGED_COLUMNS: list[str] = list(MERGED_SCHEMA)
SIDE_BID = "bid"
SIDE_ASK = "ask"


def empty_merged_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=MERGED_SCHEMA)
