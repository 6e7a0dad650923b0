"""Encodings of the validated level parts: CPU to write and read them, and their bytes.

Child: ``python -m benchmarks.bench_level_parts STORE`` on a store the ``ours`` step has validated
(``bench_merge ours``): takes ~5 M level rows of ``bench-a``'s parts and, best of 5, CPU seconds, in memory:

- ``format-3``: what ``depth_core.level_parts`` writes (prices and quantities as exact integer ticks,
  compressed by pcodec in blocks, ``ev`` as runs, ``is_bid`` as bits), encode (ticks) + write, and the read
  back to float64 columns (``level_part_columns``);
- ``format-2``: how the releases before it wrote ticks (int64 columns delta-encoded by Parquet, uncompressed,
  required columns), read back alike;
- ``format-1 none`` / ``lz4`` / ``zstd-1``: float64 columns, dictionary pages (``none``: how level parts were
  written before format 2, and its fallback), read back alike.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit

SETTINGS: dict[str, dict[str, Any]] = {
    "format-1 none": {"compression": "none"},
    "format-1 lz4": {"compression": "lz4"},
    "format-1 zstd-1": {"compression": "zstd", "compression_level": 1},
}


def measure(store: str, rows: int = 5_000_000, repeat: int = 5) -> dict[str, Any]:
    import polars as pl
    import pyarrow.parquet as pq

    from depth_core.level_parts import (
        encode_level_part,
        format_2_bytes,
        level_part_bytes,
        level_part_columns,
        read_level_part,
    )
    from depth_store import open_store

    root = Path(store)
    parts = sorted(root.glob("validated/market=spot/stream=bench-a/symbol=*/date=*/*levels-*.parquet"))
    if not parts:
        raise SystemExit(f"no validated level parts under {store}: run `bench_merge ours` on it first")
    st = open_store(store)
    frames = []
    n = 0
    for p in parts[1:] or parts:  # the first part of a day is short
        frames.append(read_level_part(st, p.relative_to(root).as_posix()))
        n += frames[-1].height
        if n >= rows:
            break
    frame = pl.concat(frames)
    floats = frame.to_arrow()
    out: dict[str, Any] = {"rows": frame.height, "settings": []}

    def best(fn: Any) -> tuple[float, Any]:
        low, got = float("inf"), None
        for _ in range(repeat):
            t = time.process_time()
            got = fn()
            low = min(low, time.process_time() - t)
        return low, got

    per = 1e6 / frame.height

    for setting, writer in (
        ("format-3", lambda: level_part_bytes(encode_level_part(frame))),
        ("format-2", lambda: format_2_bytes(encode_level_part(frame))),
    ):
        write_s, data = best(writer)
        read_s, _ = best(lambda data=data: level_part_columns(data))
        out["settings"].append(
            {
                "setting": setting,
                "write_s_per_m_rows": write_s * per,
                "read_s_per_m_rows": read_s * per,
                "bytes_per_row": len(data) / frame.height,
            }
        )
    for name, kw in SETTINGS.items():

        def write(kw: dict[str, Any] = kw) -> bytes:
            buf = io.BytesIO()
            pq.write_table(floats, buf, row_group_size=131_072, write_statistics=True, **kw)
            return buf.getvalue()

        write_s, raw = best(write)
        read_s, _ = best(lambda raw=raw: pq.read_table(io.BytesIO(raw)))
        out["settings"].append(
            {
                "setting": name,
                "write_s_per_m_rows": write_s * per,
                "read_s_per_m_rows": read_s * per,
                "bytes_per_row": len(raw) / frame.height,
            }
        )
    return out


def main() -> None:
    emit(measure(sys.argv[1]))


if __name__ == "__main__":
    main()
