"""Parquet settings of the validated level parts: CPU to write and read them, and their bytes.

Child: ``python -m benchmarks.bench_level_parts STORE`` on a store the ``ours`` step has validated
(``bench_merge ours``): takes ~5 M level rows of ``bench-a``'s parts and writes them (best of 5, CPU
seconds, into memory) with each candidate setting, then reads them back. ``depth_core.storeio.put_parquet``
(``fast=True``) uses the one named ``none`` (dictionary pages, uncompressed).
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit

SETTINGS: dict[str, dict[str, Any]] = {
    "lz4": {"compression": "lz4"},
    "none": {"compression": "none"},
    "zstd-1": {"compression": "zstd", "compression_level": 1},
}


def measure(store: str, rows: int = 5_000_000, repeat: int = 5) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(Path(store).glob("validated/market=spot/stream=bench-a/symbol=*/date=*/*levels-*.parquet"))
    if not parts:
        raise SystemExit(f"no validated level parts under {store}: run `bench_merge ours` on it first")
    tables = []
    n = 0
    for p in parts[1:] or parts:  # the first part of a day is short
        tables.append(pq.read_table(p))
        n += tables[-1].num_rows
        if n >= rows:
            break
    table = pa.concat_tables(tables)
    out: dict[str, Any] = {"rows": table.num_rows, "settings": []}
    for name, kw in SETTINGS.items():
        best_w = best_r = float("inf")
        size = 0
        for _ in range(repeat):
            buf = io.BytesIO()
            t = time.process_time()
            pq.write_table(table, buf, row_group_size=131_072, write_statistics=True, **kw)
            best_w = min(best_w, time.process_time() - t)
            data = buf.getvalue()
            size = len(data)
            t = time.process_time()
            pq.read_table(io.BytesIO(data))
            best_r = min(best_r, time.process_time() - t)
        per = 1e6 / table.num_rows
        out["settings"].append(
            {
                "setting": name,
                "write_s_per_m_rows": best_w * per,
                "read_s_per_m_rows": best_r * per,
                "bytes_per_row": size / table.num_rows,
            }
        )
    return out


def main() -> None:
    emit(measure(sys.argv[1]))


if __name__ == "__main__":
    main()
