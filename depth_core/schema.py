"""The one definition of the merged dataset's schema (docs/analysts.md): writer, checks and reader import it.

Where the merged days live: ``depth_core/layout.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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

MERGED_ROW_GROUP = 262_144
_PLAIN_COLUMNS = frozenset(
    (
        "exchange_time",
        "transaction_time",
        "receive_time",
        "first_update_id",
        "last_update_id",
        "prev_update_id",
    )
)
"""Times and ids: a new value every event, so dictionary pages only cost hashing; plain pages under zstd take
two thirds of the CPU to write and are half the size."""


def empty_merged_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=MERGED_SCHEMA)


def string_codes(codes: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    """A string column of a merged table as the merge builds it: ``names[codes[i]]`` for every row, as an
    Arrow dictionary (no string made per row; an out-of-range code is refused)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, pa.string()))


def merged_frame(table: pa.Table) -> pl.DataFrame:
    """The rows of a merged table (:func:`merged_parquet_bytes`' input) as a frame, for previews and tests
    (the merge's checks read the table itself: :func:`string_column_is`), no copy: its dictionary columns
    become polars categoricals, which compare with strings and hold the same values
    (building a string per row would cost ~40 ms a million rows). :func:`schema_as_written` is its schema as
    readers get it back; ``.cast(MERGED_SCHEMA)`` gives their plain strings."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)  # a table always converts to a frame
    return frame


def table_schema_as_written(table: pa.Table) -> dict[str, pl.DataType]:
    """The schema a Parquet file of a merged table (:func:`merged_parquet_bytes`' input) is read back with
    (its dictionary columns as strings), without converting its rows."""
    empty = pl.from_arrow(table.slice(0, 0))
    assert isinstance(empty, pl.DataFrame)  # a table always converts to a frame
    return schema_as_written(empty)


def string_column_is(column: pa.ChunkedArray, value: str) -> np.ndarray:
    """Per row of a string column of a merged table, whether it holds ``value`` (numpy bools; null: no).

    A dictionary column (the merge's ``side``, ``source``, ``symbol``) is compared through its few values
    and gathered by code, as the rows read back would compare, with no string made per row: polars'
    conversion of a million-row dictionary column to a categorical costs ≈ 2 ms, and the merge checks 3 of
    them per file."""
    out = np.zeros(len(column), np.bool_)
    at = 0
    for chunk in column.chunks:
        if isinstance(chunk, pa.DictionaryArray):
            matches = np.asarray(chunk.dictionary.to_pylist(), dtype=object) == value
            codes = pc.fill_null(chunk.indices, 0).to_numpy(zero_copy_only=False)
            hit = matches[codes] if len(matches) else np.zeros(len(chunk), np.bool_)
            if chunk.null_count:
                hit &= chunk.is_valid().to_numpy(zero_copy_only=False)
        else:
            hit = pc.fill_null(pc.equal(chunk, value), False).to_numpy(zero_copy_only=False)
        out[at : at + len(chunk)] = hit
        at += len(chunk)
    return out


def schema_as_written(frame: pl.DataFrame) -> dict[str, pl.DataType]:
    """A frame's schema with its categorical columns as the strings a Parquet file of it holds."""
    return {name: pl.String() if dtype == pl.Categorical else dtype for name, dtype in frame.schema.items()}


MERGED_PARQUET_OPTIONS: dict[str, Any] = {
    "row_group_size": MERGED_ROW_GROUP,
    "write_statistics": True,
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": [c for c in MERGED_COLUMNS if c not in _PLAIN_COLUMNS],
    "store_schema": False,
}
"""How a merged file is written (:func:`merged_parquet_bytes`; the benchmark's floor writes so too)."""


def merged_parquet_bytes(table: pa.Table) -> pa.Buffer:
    """A merged file (zstd Parquet, statistics on every column), in memory.

    ``table`` holds the merged columns in order; its string columns may be Arrow dictionaries (the merge
    builds ``symbol``, ``side`` and ``source`` from codes): the writer then takes their indices as they are
    instead of hashing every string, and no Arrow schema is stored, so every reader (polars, pandas, DuckDB)
    still reads plain strings. Readers see the same rows either way (tests/core/test_schema.py)."""
    if table.column_names != MERGED_COLUMNS:
        raise ValueError(f"merged columns {table.column_names} != {MERGED_COLUMNS}")
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, **MERGED_PARQUET_OPTIONS)
    return buf.getvalue()
