"""Parquet and JSON through the ObjectStore interface (the core never talks to a backend directly)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from depth_store.base import ObjectInfo, ObjectStore


def put_parquet(
    store: ObjectStore,
    key: str,
    frame: pl.DataFrame | pa.Table,
    row_group_size: int = 262_144,
    fast: bool = False,
    delta_ints: bool = False,
) -> ObjectInfo:
    """Write a frame as zstd Parquet with statistics, atomically (one put of the whole file).

    pyarrow's writer: same speed as polars' here, and its encodings make the merged rows ~20% smaller. It
    writes into memory (no Python call per page, so a busy GIL never stalls it; the files are tens of MB),
    and the store puts the bytes once (the local store: hashed and written straight into its own temp
    file; before, a temp file elsewhere was copied in and hashed again, ~1.3 CPU-s of a benchmark day).
    ``fast``: dictionary-encoded pages left uncompressed, for the validated level parts the merge reads
    (per million level rows 15 % less CPU to write than lz4 and 12 % more bytes: the dictionaries already
    hold most of what lz4 found; ``python -m benchmarks.bench_level_parts STORE``).
    ``delta_ints``: integer and time columns delta-encoded instead of dictionary-encoded, for tables of
    one row per event (ids, times and hashes that rarely repeat: a validated events file is written in a
    quarter of the CPU and is a third smaller).
    """
    table = frame if isinstance(frame, pa.Table) else frame.to_arrow()
    delta = (
        [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_temporal(f.type)]
        if delta_ints
        else []
    )
    buf = pa.BufferOutputStream()
    pq.write_table(
        table,
        buf,
        row_group_size=row_group_size,
        write_statistics=True,
        compression="none" if fast else "zstd",
        compression_level=None if fast else 3,
        use_dictionary=[f.name for f in table.schema if f.name not in delta] if delta else True,
        column_encoding=dict.fromkeys(delta, "DELTA_BINARY_PACKED") or None,
    )
    return store.put_bytes(key, memoryview(buf.getvalue()))


def local_path(store: ObjectStore, key: str) -> Path | None:
    """The file behind ``key`` when the store is a local folder (read it in place, no copy)."""
    uri, options = store.scan_location(key)
    if options is None and "://" not in uri:
        path = Path(uri)
        if path.is_file():
            return path
    return None


def read_parquet(store: ObjectStore, key: str, columns: list[str] | None = None) -> pl.DataFrame:
    path = local_path(store, key)
    if path is not None:
        return pl.read_parquet(path, columns=columns)
    return pl.read_parquet(io.BytesIO(store.get_bytes(key)), columns=columns)


def read_arrow(store: ObjectStore, key: str, columns: list[str] | None = None) -> pa.Table:
    """One object as an Arrow table of one chunk per column, in pyarrow's memory pool.

    For tables held only for a phase (a merge's per-event tables): ``pl.from_arrow`` wraps them without a
    copy, and once dropped their memory goes back to the OS at the next
    :func:`depth_core.memory.release_free_memory`. A polars read would leave it with polars' allocator, which
    returns freed pages only over its decay time (~1.5 s), so the next phase would start on top of them.
    Read on the calling thread: pages that pyarrow's reader threads took stay with those threads' heaps,
    out of the release's reach (then the next phase started 130 MiB higher in one run of two).
    Read row group by row group (``read_table`` would cut them into batches of 131,072 rows), so a file of one
    row group, as a validation writes its per-event tables, needs no copy to join the chunks."""
    path = local_path(store, key)
    source: Any = path if path is not None else pa.BufferReader(store.get_bytes(key))
    with pq.ParquetFile(source) as file:
        return file.read(columns=columns, use_threads=False).combine_chunks()


def scan_parquet(store: ObjectStore, key: str) -> pl.LazyFrame:
    """A lazy scan (row-group pruning by statistics) of one object."""
    path = local_path(store, key)
    if path is not None:
        return pl.scan_parquet(path)
    uri, options = store.scan_location(key)
    return pl.scan_parquet(uri, storage_options=options)


def put_json(store: ObjectStore, key: str, obj: Any) -> ObjectInfo:
    return store.put_bytes(key, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def get_json(store: ObjectStore, key: str) -> Any:
    return orjson.loads(store.get_bytes(key))


def replace_prefix(store: ObjectStore, prefix: str, written: set[str]) -> list[str]:
    """After writing a new set of files under ``prefix``, delete the old ones not in it (re-runs)."""
    removed = []
    for info in list(store.list(prefix)):
        if info.key not in written:
            store.delete(info.key)
            removed.append(info.key)
    return removed
