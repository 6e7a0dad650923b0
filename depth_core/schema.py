"""The one definition of the merged dataset's schema (interfaces §3): writer, checks and reader import it."""

from __future__ import annotations

import polars as pl

from depth_core.names import Market, validate_date, validate_market, validate_symbol

MERGED_ROOT = "merged"
QUALITY_ROOT = "quality"
MANIFEST_NAME = "_coverage_manifest.json"

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


def merged_day_prefix(market: Market, symbol: str, date: str) -> str:
    """Hive folder of one symbol-day (relative to the store prefix), ending in '/'."""
    return (
        f"{MERGED_ROOT}/market={validate_market(market)}/symbol={validate_symbol(symbol)}/"
        f"date={validate_date(date)}/"
    )


def merged_manifest_key(market: Market, symbol: str, date: str) -> str:
    return merged_day_prefix(market, symbol, date) + MANIFEST_NAME


def quality_day_prefix(market: Market, symbol: str, date: str) -> str:
    return (
        f"{QUALITY_ROOT}/market={validate_market(market)}/symbol={validate_symbol(symbol)}/"
        f"date={validate_date(date)}/"
    )


def empty_merged_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=MERGED_SCHEMA)
