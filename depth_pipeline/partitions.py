"""The one partitioning of every pipeline asset: the UTC ``date`` (docs/pipeline.md), keys ``YYYY-MM-DD``.

The symbols of a day live inside its run (the day's raw data names them), not in the partition key: 600
symbols over three years are 1,096 partitions per asset instead of 657,600 (Dagster recommends at most
100,000), and a new symbol needs no code-location reload. See docs/orchestration.md for the run model.

The dates run from ``DEPTH_START_DATE`` or, when it is unset, from the first date the store holds data for
(``depth_pipeline.daydata.first_date``; today on an empty store), to today (``end_offset=1``, so the
raw-arrival sensor can record what the collectors deliver for the day in progress).
"""

from __future__ import annotations

import datetime as dt
import warnings

import dagster as dg

from depth_core.names import validate_date

DATE_DIM = "date"


def build_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """Daily (UTC) dates from ``start_date`` to today."""
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC", end_offset=1)


def partition_key(date: str | dt.date) -> str:
    """The key of one day, e.g. ``2026-11-24`` (validated)."""
    return validate_date(date.isoformat() if isinstance(date, dt.date) else date)


def date_of(key: str | dg.MultiPartitionKey) -> str:
    """The date of a partition key (``2026-11-24``)."""
    text = str(key)
    if "|" in text:  # a date|symbol key recorded before the date-only partitions
        text = text.split("|", 1)[0]
    return validate_date(text)


def previous_day_mapping() -> dg.TimeWindowPartitionMapping:
    """Previous date: how ``merged_depth`` depends on its own previous day (the carried book)."""
    with warnings.catch_warnings():  # allow_nonexistent_upstream_partitions is beta in 1.13; verified here
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.TimeWindowPartitionMapping(
            start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
        )
