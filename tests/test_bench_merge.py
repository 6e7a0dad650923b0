"""The merge benchmark's floor (benchmarks/bench_merge.py) writes what the merge writes: the merged schema,
encoded the same way, one row per level row of the first stream; on a small generated day."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from benchmarks import dayset
from benchmarks.bench_merge import run_floor, run_ours
from depth_core.schema import MERGED_SCHEMA


def test_the_floor_writes_the_merged_schema_as_the_merge_does(tmp_path: Path) -> None:
    ds = dayset.build(dayset.DayParams(fraction=0.001), cache_dir=tmp_path / "cache", log=lambda *_: None)
    floor = run_floor(ds.store_url, ds.date, str(tmp_path / "floor"))
    ours = run_ours(ds.store_url, ds.date)
    floor_file = tmp_path / "floor" / "part-0.parquet"
    written = pl.read_parquet(floor_file)
    assert dict(written.schema) == MERGED_SCHEMA
    assert floor["rows_written"] == written.height > 0
    assert written["source"].unique().to_list() == ["bench-a"]
    assert set(written["side"].unique().to_list()) == {"bid", "ask"}
    assert written["first_update_id"].null_count() == 0 and written["exchange_time"].null_count() == 0
    # the same encodings as the merged files: the same columns dictionary-encoded, the others not
    merged = sorted(Path(ds.store_url).glob("merged/market=spot/symbol=BTCUSDT/date=*/*.parquet"))
    assert merged and ours["merged_rows"] > 0

    def dictionary_columns(path: Path) -> set[str]:
        group = pq.ParquetFile(path).metadata.row_group(0)
        return {
            group.column(i).path_in_schema
            for i in range(group.num_columns)
            if "RLE_DICTIONARY" in group.column(i).encodings
        }

    assert dictionary_columns(floor_file) == dictionary_columns(merged[0])
    assert "side" in dictionary_columns(floor_file) and "last_update_id" not in dictionary_columns(floor_file)
