"""Where everything lives in the depth store: every root and every key or prefix built from it.

One home for the object-key layout (docs/object-store.md), so a folder is named once. Two parts have a
module of their own because more than names lives there: the raw keys, which the collectors write and the
pipeline parses (``raw_format.RawObjectKey``, ``stream_prefix``, ``stream_date_prefix``; the shared layout
contract, docs/raw-format.md), and the validated layout with its file names (``validated_layout``).

    raw/market=/stream=/date=/...                       collectors (raw_format)
    validated/market=/stream=/[symbol=/]date=/...        validation (validated_layout)
    staging/merged/market=/symbol=/date=/<version>/      a merged version before its checks pass
    merged/market=/symbol=/date=/                        the published day + _coverage_manifest.json
    state/market=/symbol=/date=/<version>/end_book.parquet   each version's end-of-day book (the carry)
    state/market=/_first_date, state/market=/_leases/date=D.json, state/dagster-steps/run=/...
                                                         the pipeline's
    derived/<table>/market=/symbol=/date=/part-00000.parquet   derived tables (book_top25_1s)
    quality/market=/symbol=/date=/, quality/market=/date=/overview.png   quality reports
"""

from __future__ import annotations

from depth_core.names import Market, validate_date, validate_market, validate_symbol

MERGED_ROOT = "merged"
STAGING_ROOT = "staging"
STATE_ROOT = "state"
DERIVED_ROOT = "derived"
QUALITY_ROOT = "quality"

MANIFEST_NAME = "_coverage_manifest.json"
STATE_BOOK = "end_book.parquet"
STATE_JSON = "end_state.json"  # the layout before versions were published (read for carry only)
#: Step results of Dagster runs (``depth_pipeline.resources.StepIOManager``), dropped when a day is recorded.
STEP_IO_ROOT = f"{STATE_ROOT}/dagster-steps"


def _symbol_day(root: str, market: Market, symbol: str, date: str) -> str:
    return (
        f"{root}/market={validate_market(market)}/symbol={validate_symbol(symbol)}/"
        f"date={validate_date(date)}/"
    )


# ------------------------------------------------------------------------------------------------ merged


def merged_symbol_prefix(market: Market, symbol: str) -> str:
    """Every merged day of a symbol."""
    return f"{MERGED_ROOT}/market={validate_market(market)}/symbol={validate_symbol(symbol)}/"


def merged_day_prefix(market: Market, symbol: str, date: str) -> str:
    """Hive folder of one symbol-day (relative to the store prefix), ending in '/'."""
    return _symbol_day(MERGED_ROOT, market, symbol, date)


def merged_manifest_key(market: Market, symbol: str, date: str) -> str:
    return merged_day_prefix(market, symbol, date) + MANIFEST_NAME


def published_file_key(market: Market, symbol: str, date: str, version: str, index: int) -> str:
    """A published file: ``part-<version>-NNNNN.parquet`` (one version's names sort in row order)."""
    return merged_day_prefix(market, symbol, date) + f"part-{version}-{index:05d}.parquet"


def staging_prefix(market: Market, symbol: str, date: str, version: str) -> str:
    """Where a version's Parquet is written before its checks pass (never under ``merged/``)."""
    return _symbol_day(f"{STAGING_ROOT}/{MERGED_ROOT}", market, symbol, date) + f"{version}/"


# ------------------------------------------------------------------------------------------------ state


def state_day_prefix(market: Market, symbol: str, date: str) -> str:
    return _symbol_day(STATE_ROOT, market, symbol, date)


def state_book_key(market: Market, symbol: str, date: str, version: str) -> str:
    """A version's end-of-day book; the day's manifest names the published one (``end_state``)."""
    return f"{state_day_prefix(market, symbol, date)}{version}/{STATE_BOOK}"


def first_date_key(market: Market) -> str:
    """The marker of the market's first data date (the first partition)."""
    return f"{STATE_ROOT}/market={validate_market(market)}/_first_date"


def day_lease_key(market: Market, date: str) -> str:
    """The lease of the one run writing a day (``depth_pipeline.lease``)."""
    return f"{STATE_ROOT}/market={validate_market(market)}/_leases/date={validate_date(date)}.json"


# ------------------------------------------------------------------------------------------------ derived


def derived_day_key(table: str, market: Market, symbol: str, date: str) -> str:
    """A symbol-day of a derived table: ``derived/<table>/market=/symbol=/date=/part-00000.parquet``.

    Hive layout like ``merged/``, so DuckDB and polars read every day with one glob.
    """
    return _symbol_day(f"{DERIVED_ROOT}/{table}", market, symbol, date) + "part-00000.parquet"


def quality_day_prefix(market: Market, symbol: str, date: str) -> str:
    return _symbol_day(QUALITY_ROOT, market, symbol, date)


def quality_overview_key(market: Market, date: str) -> str:
    """The day's overview picture (every symbol on one time axis)."""
    return f"{QUALITY_ROOT}/market={validate_market(market)}/date={validate_date(date)}/overview.png"
