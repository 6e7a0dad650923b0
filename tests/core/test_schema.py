"""Merged files as written (depth_core/schema.py) read back in the merged schema."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from depth_core.merge import _NULL, _Rows
from depth_core.schema import (
    MERGED_COLUMNS,
    MERGED_SCHEMA,
    merged_frame,
    merged_parquet_bytes,
    schema_as_written,
    string_codes,
    string_column_is,
    table_schema_as_written,
)


def _rows() -> _Rows:
    """Five rows of two items: an image from a snapshot, then an event of another stream."""
    rows = _Rows(np.array([2, 3]))
    c = rows.cols
    c["exchange_ms"][:] = [1_700_000_000_000, _NULL, 1_700_000_000_100, 1_700_000_000_100, 1_700_000_000_100]
    c["transaction_ms"][:] = _NULL
    c["receive_ns"][:] = np.arange(5) + 1_700_000_000_000_000_000
    c["first_update_id"][:] = [10, 10, 11, 11, 11]
    c["last_update_id"][:] = [10, 10, 13, 13, 13]
    c["prev_update_id"][:] = [_NULL, _NULL, 10, 10, 10]
    c["is_snapshot"][:] = [True, True, False, False, False]
    c["is_bid"][:] = [True, False, True, True, False]
    c["price"][:] = [100.5, 100.6, 100.4, 100.3, 100.7]
    c["qty"][:] = [1.0, 2.0, 0.0, 0.5, 3.25]
    c["book_exact"][:] = True
    rows.cols["source"][:2] = rows.source_code("snapshot:eu-1")
    rows.cols["source"][2:] = rows.source_code("us-1")
    return rows


def _read_back(table: pa.Table) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(merged_parquet_bytes(table).to_pybytes()))


def test_merged_rows_read_back_as_the_merged_schema_with_plain_strings_and_nulls() -> None:
    table = _rows().table("BTCUSDT")
    back = _read_back(table)
    assert dict(back.schema) == MERGED_SCHEMA
    assert back["symbol"].to_list() == ["BTCUSDT"] * 5
    assert back["side"].to_list() == ["bid", "ask", "bid", "bid", "ask"]
    assert back["source"].to_list() == ["snapshot:eu-1"] * 2 + ["us-1"] * 3
    assert back["exchange_time"].null_count() == 1 and back["exchange_time"][1] is None
    assert back["transaction_time"].null_count() == 5
    assert back["prev_update_id"].to_list() == [None, None, 10, 10, 10]
    assert back["qty"].to_list() == [1.0, 2.0, 0.0, 0.5, 3.25]
    # what the checks saw is what readers get
    checked = merged_frame(table)
    assert schema_as_written(checked) == MERGED_SCHEMA
    assert checked.cast(MERGED_SCHEMA).equals(back)  # type: ignore[arg-type]


def test_the_checks_read_a_merged_table_as_its_file_reads_back() -> None:
    """The merge's checks read the table it writes, not a converted frame: its schema as written and, per
    row, which rows hold a string, through the dictionary's values, as the rows read back compare."""
    table = _rows().table("BTCUSDT")
    back = _read_back(table)
    assert table_schema_as_written(table) == dict(back.schema) == MERGED_SCHEMA
    for column, value in (("side", "bid"), ("side", "ask"), ("source", "us-1"), ("symbol", "ETHUSDT")):
        want = (back[column] == value).to_numpy()
        assert string_column_is(table[column], value).tolist() == want.tolist(), (column, value)
    # several chunks, a plain string chunk, nulls (never a match) and a dictionary whose values repeat
    repeated = pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 2], pa.int8()), pa.array(["b", "a", "b"]))
    mixed = pa.chunked_array(
        [repeated, pa.DictionaryArray.from_arrays(pa.array([], pa.int8()), pa.array([], pa.string()))]
    )
    assert string_column_is(mixed, "b").tolist() == [True, False, False, True]
    assert string_column_is(pa.chunked_array([["a", None], ["b"]]), "a").tolist() == [True, False, False]


def test_readers_get_strings_not_dictionaries_and_ids_are_not_dictionary_encoded() -> None:
    data = merged_parquet_bytes(_rows().table("ETHUSDT")).to_pybytes()
    arrow = pq.read_table(io.BytesIO(data))
    assert arrow.schema.field("side").type == pa.string()  # no stored Arrow schema brings dictionaries back
    meta = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in encodings["side"]
    for plain in ("first_update_id", "last_update_id", "receive_time", "exchange_time"):
        assert "RLE_DICTIONARY" not in encodings[plain], (plain, encodings[plain])


def test_a_table_with_other_columns_is_refused() -> None:
    table = _rows().table("BTCUSDT")
    with pytest.raises(ValueError, match="merged columns"):
        merged_parquet_bytes(table.select(list(reversed(MERGED_COLUMNS))))


def test_schema_as_written_names_categoricals_as_strings() -> None:
    frame = pl.DataFrame(
        {"side": ["bid"], "price": [1.0]}, schema={"side": pl.Categorical, "price": pl.Float64}
    )
    assert schema_as_written(frame) == {"side": pl.String(), "price": pl.Float64()}


def test_days_written_before_and_after_the_encoding_change_read_together(tmp_path: Path) -> None:
    """Older merged files carry an Arrow schema (``large_string`` columns); newer ones none: a folder of
    both reads as one table with polars, pyarrow datasets and DuckDB."""
    table = _rows().table("BTCUSDT")
    old = merged_frame(table).cast(MERGED_SCHEMA)  # type: ignore[arg-type]
    pq.write_table(old.to_arrow(), tmp_path / "a-old.parquet", compression="zstd")
    (tmp_path / "b-new.parquet").write_bytes(merged_parquet_bytes(table).to_pybytes())
    both = pl.read_parquet(tmp_path / "*.parquet")
    assert dict(both.schema) == MERGED_SCHEMA and both.equals(pl.concat([old, old]))
    arrow = ds.dataset(sorted(tmp_path.glob("*.parquet"))).to_table()
    assert arrow.num_rows == 10 and arrow.column("side").to_pylist() == old["side"].to_list() * 2
    duck = duckdb.sql(f"SELECT side, count(*) AS n FROM '{tmp_path}/*.parquet' GROUP BY side ORDER BY side")
    assert duck is not None and duck.fetchall() == [("ask", 4), ("bid", 6)]


def test_string_codes_refuse_a_code_without_a_name() -> None:
    assert string_codes(np.array([1, 0, 1], np.int8), ["ask", "bid"]).to_pylist() == ["bid", "ask", "bid"]
    with pytest.raises(pa.ArrowIndexError):
        string_codes(np.array([0, 2], np.int8), ["ask", "bid"])
