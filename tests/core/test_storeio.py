"""``depth_core.storeio``: per-event files are read into Arrow memory with one chunk per column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from depth_core.storeio import put_parquet, read_arrow
from depth_core.validate import ONE_ROW_GROUP_ROWS
from depth_store import open_store


def test_a_file_of_one_row_group_reads_as_one_chunk_per_column(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    n = 300_000  # more than a reader's default batch (131,072 rows)
    table = pa.table({"ev": np.arange(n), "U": np.arange(n) * 3})
    put_parquet(store, "validated/x/events.parquet", table, ONE_ROW_GROUP_ROWS, delta_ints=True)
    assert pq.read_metadata(tmp_path / "store/validated/x/events.parquet").num_row_groups == 1
    back = read_arrow(store, "validated/x/events.parquet", ["U"])
    assert back.column_names == ["U"] and back["U"].num_chunks == 1
    assert back["U"].chunk(0).equals(table["U"].chunk(0))
    put_parquet(store, "validated/x/events.parquet", table, 100_000, delta_ints=True)  # several row groups
    assert read_arrow(store, "validated/x/events.parquet")["ev"].num_chunks == 1  # joined
