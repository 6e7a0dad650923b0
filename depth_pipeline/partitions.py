"""The one partitioning of every pipeline asset: UTC ``date`` x ``symbol`` (interfaces §2).

A partition key reads ``2026-11-24|BTCUSDT``. The ``date`` dimension runs from ``DEPTH_START_DATE`` to
today (``end_offset=1``) so the raw-arrival sensor can record what the collectors deliver for the day in
progress; the schedule and the CLI only ever merge completed days.
"""

from __future__ import annotations

import datetime as dt
import warnings

import dagster as dg

from depth_core.names import validate_date, validate_symbol
from depth_pipeline.config import PipelineConfig

DATE_DIM = "date"
SYMBOL_DIM = "symbol"


def build_partitions(config: PipelineConfig) -> dg.MultiPartitionsDefinition:
    """Daily (UTC) dates from the configured start, crossed with the configured symbols."""
    return dg.MultiPartitionsDefinition(
        {
            DATE_DIM: dg.DailyPartitionsDefinition(
                start_date=config.start_date, timezone="UTC", end_offset=1
            ),
            SYMBOL_DIM: dg.StaticPartitionsDefinition(list(config.symbols)),
        }
    )


def partition_key(date: str | dt.date, symbol: str) -> dg.MultiPartitionKey:
    """The key of one symbol-day, e.g. ``2026-11-24|BTCUSDT``."""
    return dg.MultiPartitionKey({DATE_DIM: validate_date(date), SYMBOL_DIM: validate_symbol(symbol)})


def split_partition_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(date, symbol) of a ``date|symbol`` key; validates both parts."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return validate_date(dims[DATE_DIM]), validate_symbol(dims[SYMBOL_DIM])
    date_text, sep, symbol_text = key.partition("|")
    if not sep:
        raise ValueError(f"partition key {key!r} is not 'date|symbol'")
    return validate_date(date_text), validate_symbol(symbol_text)


def previous_day_mapping() -> dg.MultiPartitionMapping:
    """Same symbol, previous date: how ``merged_depth`` depends on its own previous day."""
    with warnings.catch_warnings():  # both are marked beta in Dagster 1.13; verified to work here
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _previous_day_mapping()


def _previous_day_mapping() -> dg.MultiPartitionMapping:
    return dg.MultiPartitionMapping(
        {
            DATE_DIM: dg.DimensionPartitionMapping(
                DATE_DIM,
                dg.TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
                ),
            ),
            SYMBOL_DIM: dg.DimensionPartitionMapping(SYMBOL_DIM, dg.IdentityPartitionMapping()),
        }
    )
