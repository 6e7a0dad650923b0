"""Bytes per level row: our merged Parquet vs the Tardis CSV.gz and hftbacktest exports of the same day.

Child: ``python -m benchmarks.bench_storage STORE DATE OUT_DIR`` (the store must hold a merged day).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit

SYMBOL = "BTCUSDT"


def measure(store_url: str, date: str, out: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from depth_store import open_store

    root = Path(store_url)
    folder = root / "merged" / "market=spot" / f"symbol={SYMBOL}" / f"date={date}"
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return {"not_available": f"no merged Parquet under {folder}"}
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    col_bytes: dict[str, int] = {}
    row_groups = 0
    stats_ok = True
    for f in files:
        md = pq.ParquetFile(f).metadata
        row_groups += md.num_row_groups
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                col_bytes[col.path_in_schema] = (
                    col_bytes.get(col.path_in_schema, 0) + col.total_compressed_size
                )
                if col.path_in_schema in ("exchange_time", "last_update_id") and not (
                    col.statistics is not None and col.statistics.has_min_max
                ):
                    stats_ok = False
    res: dict[str, Any] = {
        "merged_rows": rows,
        "merged_bytes": sum(f.stat().st_size for f in files),
        "row_groups": row_groups,
        "time_and_id_statistics": stats_ok,
        "column_bytes": ", ".join(
            f"{k} {v / rows:.2f} B/row" for k, v in sorted(col_bytes.items(), key=lambda kv: -kv[1])
        ),
        "raw_gzip_bytes": sum(p.stat().st_size for p in (root / "raw").glob("**/*.ndjson.gz")),
    }
    store = open_store(store_url)
    try:
        from depth_core import exports
    except ImportError as exc:
        res["tardis_bytes_error"] = res["hft_bytes_error"] = f"depth_core.exports not importable: {exc}"
        return res
    t0 = time.perf_counter()
    try:
        path = out / exports.tardis_file_name("spot", SYMBOL, date)
        exports.export_tardis_day(store, SYMBOL, date, path, "spot")
        res["tardis_bytes"] = path.stat().st_size
        res["tardis_s"] = time.perf_counter() - t0
    except Exception as exc:
        res["tardis_bytes_error"] = f"{type(exc).__name__}: {exc}"
    t0 = time.perf_counter()
    try:
        path = out / exports.hftbacktest_file_name("spot", SYMBOL, date)
        exports.export_hftbacktest_day(store, SYMBOL, date, path, "spot")
        res["hft_bytes"] = path.stat().st_size
        res["hft_s"] = time.perf_counter() - t0
    except Exception as exc:
        res["hft_bytes_error"] = f"{type(exc).__name__}: {exc}"
    return res


def main() -> None:
    emit(measure(sys.argv[1], sys.argv[2], Path(sys.argv[3])))


if __name__ == "__main__":
    main()
