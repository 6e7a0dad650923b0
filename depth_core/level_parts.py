"""Validated level parts: a stream's level rows of a symbol-day, as the merge and the carry-over read them.

A level part holds the rows ``(ev, is_bid, price, qty)`` of the events whose ``part`` column names it, in
event order. It is the durable copy of those rows once the raw objects are cleaned up, and the largest thing
a validation writes (a BTCUSDT day: ~38 M rows per stream), so its encoding is chosen for the CPU to write
and read it as much as for its size.

Prices and quantities are kept as integer ticks at the fewest decimals that hold every value of the part
exactly (``price * 10**price_decimals``). Ticks are exact: a part is kept in ticks only when every value
converts back to the very same float64 (``ticks / 10**d``, a correctly rounded IEEE division of two exact
integers); a part with any value that does not (more than 15 decimals, a mantissa past 2**53) is written in
format 1. The decimals are in the file's key-value metadata.

Format 3 (written since the eleventh session of issue 15): a Parquet file with one row, and one row group,
per block of up to :data:`BLOCK_ROWS` level rows: the block's ``first_ev``/``last_ev`` (smallest and largest
event number: the merge skips blocks by them) and ``rows``, then its columns, each one binary value:
``price`` ticks compressed by pcodec (standalone, https://github.com/pcodec/pcodec), ``qty`` as the bits of
its non-zero rows (``qty_bits``; nearly half of all level rows remove a level: quantity 0) and the ticks of
those rows (``qty``, pcodec), ``ev`` as runs (``ev`` the run values and ``ev_rows`` their lengths, pcodec
too), ``is_bid`` as bits (``numpy.packbits``, little bit order). Against format 2 it is written in about
two thirds of the CPU, read in about two thirds, and is smaller (3.8 against 4.4 bytes a row on a real day:
``python -m benchmarks.bench_level_parts STORE``): Parquet's delta encoder, which format 2 used for every
column, was the largest part of a validation's own CPU.

Format 2 (ticks as plain int64 columns, delta-encoded Parquet pages) and format 1 (float64 ``price`` and
``qty``, dictionary pages) are still read: validated output of earlier releases stays readable, and format 1
is the fallback above. Readers tell them apart by the key-value metadata and the column types.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Sequence

import numba
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pcodec import ChunkConfig, DeltaSpec, ModeSpec
from pcodec import standalone as pco

from depth_core.memory import size_classed_empty
from depth_core.storeio import local_path
from depth_store.base import ObjectInfo, ObjectNotFoundError, ObjectStore

LEVEL_COLUMNS = {"ev": pl.Int64, "is_bid": pl.Boolean, "price": pl.Float64, "qty": pl.Float64}
"""The level rows as the validation builds them and as :func:`read_level_part` returns them."""

ROW_GROUP = 131_072
"""Rows per row group of formats 1 and 2 (the merge skips row groups by their ``ev`` statistics)."""
BLOCK_ROWS = 65_536
"""Level rows per block of format 3 (the merge skips blocks by their ``first_ev`` and ``last_ev``)."""
MAX_DECIMALS = 15  # 10**d exact in float64 up to 22; Binance sends at most 8
_META_FORMAT = b"depth.level_part_format"
_META_PRICE_DEC = b"depth.price_decimals"
_META_QTY_DEC = b"depth.qty_decimals"


class LevelPartError(ValueError):
    """A level part that does not decode (metadata missing or inconsistent with its columns)."""


_POW10 = np.array([10.0**d for d in range(MAX_DECIMALS + 1)])


_TICK_BLOCK = 4096


@numba.njit(cache=True, nogil=True)
def _to_ticks(values: np.ndarray, pow10: np.ndarray, out: np.ndarray, at: int, state: np.ndarray) -> bool:
    """Continue ``out`` (ticks up to ``at``) with ``values``, at the fewest decimals at which every value so
    far is an exact integer number of ticks, proven by ``out[i] / 10**d == value``; False when there is none
    (the caller writes floats then). ``state``: the decimals and the largest |tick| so far, carried from
    chunk to chunk.

    One pass: ``d`` only grows (at most ``len(pow10) - 1`` times), and the ticks already written are
    rescaled when it does (exact: integers below 2**53). Block by block: a block whose every value is exact
    at the current ``d`` (nearly all) is converted and proven in a loop without branches, which the compiler
    vectorizes; any other block is redone value by value."""
    limit = 9007199254740992.0  # 2**53: every integer below it is exact in float64
    d = int(state[0])
    top = state[1]
    n = len(values)
    lo = 0
    while lo < n:
        hi = min(lo + _TICK_BLOCK, n)
        p = pow10[d]
        inexact = 0
        block_top = top
        for i in range(lo, hi):
            v = values[i]
            t = np.rint(v * p)
            inexact += (t / p != v) | (abs(t) >= limit)  # NaN and infinities too
            block_top = max(block_top, abs(t))
            out[at + i] = np.int64(t) if abs(t) < limit else 0
        if inexact == 0:
            top = block_top
            lo = hi
            continue
        for i in range(lo, hi):
            v = values[i]
            while True:
                t = np.rint(v * pow10[d])
                if abs(t) < limit and t / pow10[d] == v:
                    break
                if d + 1 >= len(pow10) or top * 10.0 >= limit:
                    return False
                d += 1
                top *= 10.0
                for j in range(at + i):
                    out[j] *= 10
            out[at + i] = np.int64(t)
            top = max(top, abs(t))
        lo = hi
    state[0] = d
    state[1] = top
    return True


class _TickArrays:
    """The process's int64 arrays for ticks, reused from part to part: a part's ticks are ~10 MB a column,
    and fresh ones are page-faulted and zeroed by the kernel part after part (~0.3 CPU-s a BTCUSDT
    stream-day). An array is handed out again only once the pool holds its only reference: the Arrow table
    of a part takes the ticks without a copy, so an encoded part still being written (or kept by a caller)
    holds its arrays, and new ones are made.

    One pool for all threads (not one per thread): a validation encodes at most two parts at once (one being
    written, the next submitted), but hands them to whichever of its threads is free, and per-thread pools
    each grew to the largest part (≈ 100 MiB held at the end of a bench day's validation, against ≈ 45)."""

    KEEP = 4  # price and qty of the two parts encoded at once

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.lock = threading.Lock()

    def take(self, n: int) -> np.ndarray:
        with self.lock:  # the view is made under the lock: another thread then sees it in use
            pool = self.arrays
            for i in range(len(pool)):
                # references: the list's and getrefcount's argument; any other is a view still in use
                if len(pool[i]) >= n and sys.getrefcount(pool[i]) == 2:
                    return pool[i][:n]
            if len(pool) >= self.KEEP:  # drop the smallest: the pool keeps what the largest part needs
                del pool[min(range(len(pool)), key=lambda i: len(pool[i]))]
            pool.append(np.empty(n, np.int64))
            return pool[-1][:n]

    def clear(self) -> None:
        """Drop the arrays no part holds (the end of a pass: the next phase should not carry them)."""
        with self.lock:
            pool = self.arrays
            self.arrays = [pool[i] for i in range(len(pool)) if sys.getrefcount(pool[i]) > 2]


_TICK_ARRAYS = _TickArrays()


def release_tick_arrays() -> None:
    """Drop the tick arrays kept for the next part (:class:`_TickArrays`); call when a pass ends."""
    _TICK_ARRAYS.clear()


def _ticks(column: pa.ChunkedArray) -> tuple[np.ndarray, int] | None:
    """A float column as exact integer ticks and their decimals (None: not every value has them); chunk by
    chunk, so frames buffered apart are never concatenated first."""
    out = _TICK_ARRAYS.take(len(column))
    state = np.zeros(2)  # decimals, largest |tick|
    at = 0
    for chunk in column.chunks:
        if not _to_ticks(chunk.to_numpy(), _POW10, out, at, state):
            return None
        at += len(chunk)
    return out, int(state[0])


def encode_level_part(frames: pl.DataFrame | Sequence[pl.DataFrame]) -> pa.Table:
    """The Arrow table of a level part (its frames in order, never concatenated: chunks of one table):
    format 2 when every price and quantity is an exact number of ticks at some decimals (the fewest, per
    part: spot frames write 8 decimals whatever the tick size), else format 1."""
    parts = [frames] if isinstance(frames, pl.DataFrame) else list(frames)
    cols = list(LEVEL_COLUMNS)
    table = pa.concat_tables(
        [f.select(cols).to_arrow() for f in parts] or [pl.DataFrame(schema=LEVEL_COLUMNS).to_arrow()]
    )
    table = table.cast(_required(table.schema))
    price, qty = _ticks(table["price"]), _ticks(table["qty"])
    if price is None or qty is None:
        return table
    meta = {
        _META_FORMAT: b"2",
        _META_PRICE_DEC: str(price[1]).encode(),
        _META_QTY_DEC: str(qty[1]).encode(),
    }
    schema = _required(
        pa.schema({"ev": pa.int64(), "is_bid": pa.bool_(), "price": pa.int64(), "qty": pa.int64()}), meta
    )
    return pa.table([table["ev"], table["is_bid"], price[0], qty[0]], schema=schema)


def _required(schema: pa.Schema, metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    """The schema with every column non-nullable (level rows never hold nulls): the writer then encodes no
    definition levels (11 % of the CPU to write a part)."""
    return pa.schema([pa.field(f.name, f.type, nullable=False) for f in schema], metadata=metadata)


def put_level_part(store: ObjectStore, key: str, frames: pl.DataFrame | Sequence[pl.DataFrame]) -> ObjectInfo:
    """Write one level part (its frames in order; format 2 where exact, see the module), atomically."""
    return store.put_bytes(key, memoryview(level_part_bytes(encode_level_part(frames))))


def level_part_bytes(table: pa.Table) -> pa.Buffer:
    """The Parquet file of an encoded level part (:func:`encode_level_part`), in memory: format 3 for a part
    in ticks, format 1 for a part in floats."""
    buf = pa.BufferOutputStream()
    if pa.types.is_integer(table.schema.field("price").type):
        pq.write_table(
            _blocks_table(table),
            buf,
            row_group_size=1,  # one block per row group: a reader reads only the blocks it wants
            compression="none",  # pcodec has compressed the columns; the rest is a few bytes a block
            use_dictionary=False,
            write_statistics=["first_ev", "last_ev"],
        )
        return buf.getvalue()
    pq.write_table(  # format 1: floats, dictionary pages
        table,
        buf,
        row_group_size=ROW_GROUP,
        compression="none",
        write_statistics=["ev"],
        use_dictionary=["is_bid", "price", "qty"],
        column_encoding={"ev": "DELTA_BINARY_PACKED"},
    )
    return buf.getvalue()


def format_2_bytes(table: pa.Table) -> pa.Buffer:
    """A part in ticks (:func:`encode_level_part`) as the releases before format 3 wrote it: ticks as int64
    columns, delta-encoded Parquet pages, uncompressed. The validation no longer writes it; the tests of its
    reader and ``benchmarks.bench_level_parts`` do."""
    buf = pa.BufferOutputStream()
    pq.write_table(
        table,
        buf,
        row_group_size=ROW_GROUP,
        compression="none",
        write_statistics=["ev"],
        use_dictionary=False,
        column_encoding=dict.fromkeys(["ev", "price", "qty"], "DELTA_BINARY_PACKED"),
    )
    return buf.getvalue()


_TICKS_CODEC = ChunkConfig(compression_level=0, delta_spec=DeltaSpec.no_op(), mode_spec=ModeSpec.classic())
"""pcodec's fastest level, no delta and no mode search: a part's ticks in ≈ 2 ns a value (levels 2 and up
compress a third smaller but cost 3-4 times the CPU; Parquet's delta encoder cost ≈ 4 ns a value)."""
_RUNS_CODEC = ChunkConfig(compression_level=0, delta_spec=DeltaSpec.auto(), mode_spec=ModeSpec.classic())
"""Event numbers of a block's runs: consecutive, so the delta makes them nearly free."""
_BLOCK_SCHEMA = pa.schema(
    [
        pa.field(name, kind, nullable=False)
        for name, kind in (
            ("first_ev", pa.int64()),
            ("last_ev", pa.int64()),
            ("rows", pa.int64()),
            ("ev", pa.binary()),
            ("ev_rows", pa.binary()),
            ("is_bid", pa.binary()),
            ("price", pa.binary()),
            ("qty_bits", pa.binary()),
            ("qty", pa.binary()),
        )
    ]
)


_INDEX = ("first_ev", "last_ev", "rows")
_DATA = ("ev", "ev_rows", "is_bid", "price", "qty_bits", "qty")


def _blocks_table(table: pa.Table) -> pa.Table:
    """Format 3 of a part in ticks: one row per block of :data:`BLOCK_ROWS` level rows (see the module)."""
    ev = _contiguous(table["ev"], np.int64)
    bits = _bit_bytes(table["is_bid"])
    price, qty = _contiguous(table["price"], np.int64), _contiguous(table["qty"], np.int64)
    rows: dict[str, list[object]] = {name: [] for name in _BLOCK_SCHEMA.names}
    values, counts = np.empty(BLOCK_ROWS, np.int64), np.empty(BLOCK_ROWS, np.int64)
    qty_bits, nonzero = np.empty(BLOCK_ROWS // 8, np.uint8), np.empty(BLOCK_ROWS + 1, np.int64)
    for lo in range(0, len(ev), BLOCK_ROWS):
        hi = min(lo + BLOCK_ROWS, len(ev))
        n_runs, smallest, largest = _runs(ev[lo:hi], values, counts)
        rows["first_ev"].append(smallest)
        rows["last_ev"].append(largest)
        rows["rows"].append(hi - lo)
        rows["ev"].append(pco.simple_compress(values[:n_runs], _RUNS_CODEC))
        rows["ev_rows"].append(pco.simple_compress(counts[:n_runs], _RUNS_CODEC))
        block_bits = bits[lo // 8 : (hi + 7) // 8].copy()
        if (hi - lo) % 8:  # the bits past the block's last row are zero, whatever the buffer held
            block_bits[-1] &= (1 << ((hi - lo) % 8)) - 1
        rows["is_bid"].append(block_bits.tobytes())
        rows["price"].append(pco.simple_compress(price[lo:hi], _TICKS_CODEC))
        n_nonzero = _split_nonzero(qty[lo:hi], qty_bits, nonzero)
        rows["qty_bits"].append(qty_bits[: (hi - lo + 7) // 8].tobytes())
        rows["qty"].append(pco.simple_compress(nonzero[:n_nonzero], _TICKS_CODEC))
    meta = dict(table.schema.metadata or {})
    meta[_META_FORMAT] = b"3"
    return pa.table(rows, schema=_BLOCK_SCHEMA.with_metadata(meta))


@numba.njit(cache=True, nogil=True)
def _runs(ev: np.ndarray, values: np.ndarray, counts: np.ndarray) -> tuple[int, int, int]:
    """``ev`` as runs of equal values (into ``values`` and ``counts``): their number, then the smallest and
    largest ``ev`` (``ev`` is not empty)."""
    k = 0
    smallest = largest = ev[0]
    for i in range(len(ev)):
        v = ev[i]
        if i == 0 or v != ev[i - 1]:
            values[k] = v
            counts[k] = 0
            k += 1
            smallest = min(smallest, v)
            largest = max(largest, v)
        counts[k - 1] += 1
    return k, smallest, largest


@numba.njit(cache=True, nogil=True)
def _split_nonzero(values: np.ndarray, bits: np.ndarray, nonzero: np.ndarray) -> int:
    """The bits of ``values``' non-zero rows (little bit order, zero past the end) into ``bits``, and those
    values, in order, into ``nonzero``; returns how many. No branch on the values (a branch per row cost
    twice the CPU): every value is stored, and the next one overwrites it if it was zero, so ``nonzero`` must
    be longer than ``values`` (compiled: no bounds check)."""
    n = len(values)
    k = 0
    for b in range((n + 7) // 8):
        byte = 0
        for j in range(8):
            i = b * 8 + j
            v = values[i] if i < n else 0
            is_set = int(v != 0)
            byte |= is_set << j
            nonzero[k] = v
            k += is_set
        bits[b] = byte
    return k


@numba.njit(cache=True, nogil=True)
def _expand_nonzero(bits: np.ndarray, nonzero: np.ndarray, divisor: float, out: np.ndarray) -> int:
    """Undo :func:`_split_nonzero` into ``out`` (float64), each value divided by ``divisor``; returns how
    many bits were set (the caller checks it against the non-zero values decoded). ``nonzero`` must be at
    least as long as ``out`` (each row reads the next value, zero rows too); ``bits`` holds a bit a row."""
    k = 0
    for i in range(len(out)):
        is_set = (bits[i >> 3] >> (i & 7)) & 1
        out[i] = (nonzero[k] * is_set) / divisor
        k += is_set
    return k


def _bit_bytes(column: pa.ChunkedArray) -> np.ndarray:
    """A boolean column as bits, little bit order from the first row (Arrow's own bitmap, where it starts
    on a byte)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if array.offset % 8 or array.null_count:
        return np.packbits(array.to_numpy(zero_copy_only=False), bitorder="little")
    start = array.offset // 8
    return np.frombuffer(array.buffers()[1], np.uint8)[start : start + (len(array) + 7) // 8]


def _contiguous(column: pa.ChunkedArray, dtype: type[np.generic]) -> np.ndarray:
    """One numpy array of a column (a copy only where the column has several chunks)."""
    if column.num_chunks == 1:
        return np.ascontiguousarray(column.chunk(0).to_numpy(zero_copy_only=False), dtype)
    out = np.empty(len(column), dtype)
    at = 0
    for chunk in column.chunks:
        out[at : at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
        at += len(chunk)
    return out


LevelColumns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``ev`` (int64), ``is_bid`` (bool), ``price`` and ``qty`` (float64) as numpy arrays."""


def _tick_divisors(is_float: bool, metadata: dict[str, str], name: str) -> tuple[float, float] | None:
    """``10**decimals`` of the prices and quantities of a part in ticks (None: format 1, floats as they are).

    Divided by numpy, not polars (which multiplies with the reciprocal, not correctly rounded); exact: ticks
    and 10**d are exact doubles and IEEE division rounds correctly (see the module docstring)."""
    if is_float:
        return None
    try:
        if metadata[_META_FORMAT.decode()] not in ("2", "3"):
            raise KeyError(_META_FORMAT.decode())
        p_dec, q_dec = int(metadata[_META_PRICE_DEC.decode()]), int(metadata[_META_QTY_DEC.decode()])
    except (KeyError, ValueError) as exc:
        raise LevelPartError(f"{name}: integer price column without valid format metadata ({exc})") from exc
    if not (0 <= p_dec <= MAX_DECIMALS and 0 <= q_dec <= MAX_DECIMALS):
        raise LevelPartError(f"{name}: decimals {p_dec}/{q_dec} out of range")
    return 10.0**p_dec, 10.0**q_dec


def read_level_columns(
    store: ObjectStore,
    key: str,
    ev_between: tuple[int, int] | None = None,
    events: np.ndarray | None = None,
) -> LevelColumns:
    """The level rows of one part (any format), optionally only those with ``lo <= ev <= hi``; with
    ``events`` (sorted event numbers), only the blocks (row groups) that hold one of them are read (chosen
    by their smallest and largest ``ev``; rows of other events in those blocks may come along). Raises the
    store's ``ObjectNotFoundError`` for a missing part and :class:`LevelPartError` for one that does not
    decode. A local part is memory-mapped."""
    return read_level_rows(store, [key], ev_between, events)


def read_level_rows(
    store: ObjectStore,
    keys: Sequence[str],
    ev_between: tuple[int, int] | None = None,
    events: np.ndarray | None = None,
) -> LevelColumns:
    """:func:`read_level_columns` of several parts, their rows in the parts' order in one set of arrays (a
    merged file's events often lie in two parts: nothing read is copied again to join them). Of a format-3
    block only the rows of ``events`` are kept: a merge reads the other stream's parts for its events of
    another batching, about a third of their rows, and the rest is not divided into floats nor copied.
    A missing part is an ``ObjectNotFoundError`` naming its key."""
    with contextlib.ExitStack() as stack:
        return _read_parts([_open_part(stack, store, key, ev_between, events) for key in keys])


def level_part_columns(
    data: pa.Buffer | bytes, ev_between: tuple[int, int] | None = None, name: str = "level part"
) -> LevelColumns:
    """The level rows of a level part file held in memory (:func:`level_part_bytes`), any format."""
    with contextlib.ExitStack() as stack:
        return _read_parts(
            [_open_source(stack, stack.enter_context(pa.BufferReader(data)), name, ev_between, None)]
        )


def _read_parts(parts: list[_OpenPart]) -> LevelColumns:
    """The rows of opened parts, in order, into one set of arrays."""
    n = sum(p.rows for p in parts)
    out = (
        size_classed_empty(n, np.int64),
        size_classed_empty(n, np.bool_),
        size_classed_empty(n, np.float64),
        size_classed_empty(n, np.float64),
    )
    at = 0
    for part in parts:
        try:
            at = part.read_into(out, at)
        except (
            RuntimeError,
            KeyError,
            pa.ArrowInvalid,
        ) as exc:  # pcodec's corruption errors are RuntimeErrors
            raise LevelPartError(f"{part.name}: does not decode ({exc})") from exc
    return out[0][:at], out[1][:at], out[2][:at], out[3][:at]


def _open_part(
    stack: contextlib.ExitStack,
    store: ObjectStore,
    key: str,
    ev_between: tuple[int, int] | None,
    events: np.ndarray | None,
) -> _OpenPart:
    try:
        path = local_path(store, key)
        source: pa.NativeFile = (
            pa.memory_map(str(path)) if path is not None else pa.BufferReader(store.get_bytes(key))
        )
    except ObjectNotFoundError as exc:
        raise ObjectNotFoundError(key) from exc
    return _open_source(stack, stack.enter_context(source), key, ev_between, events)


def _open_source(
    stack: contextlib.ExitStack,
    source: pa.NativeFile,
    name: str,
    ev_between: tuple[int, int] | None,
    events: np.ndarray | None,
) -> _OpenPart:
    """A part opened for reading: which blocks (row groups) to read, and their rows."""
    reader = pq.ParquetReader()
    reader.open(source, pre_buffer=False)
    stack.callback(reader.close)
    try:
        meta = _metadata(reader.metadata)
        if meta.get(_META_FORMAT.decode()) == "3":
            divisors = _tick_divisors(False, meta, name)
            schema = reader.schema_arrow
            index = reader.read_all(
                column_indices=[schema.get_field_index(c) for c in _INDEX], use_threads=False
            )
            first, last, rows = (_column(index, c) for c in _INDEX)
            blocks = [
                i for i in range(len(rows)) if _may_hold(int(first[i]), int(last[i]), ev_between, events)
            ]
            return _OpenPart(reader, name, divisors, ev_between, events, blocks, rows, True)
        divisors = _tick_divisors(pa.types.is_floating(reader.schema_arrow.field("price").type), meta, name)
        groups = _row_groups(reader.metadata, ev_between, events)
        rows = np.array(
            [reader.metadata.row_group(i).num_rows for i in range(reader.metadata.num_row_groups)]
        )
        return _OpenPart(reader, name, divisors, ev_between, events, groups, rows, False)
    except (RuntimeError, KeyError, pa.ArrowInvalid) as exc:
        raise LevelPartError(f"{name}: does not decode ({exc})") from exc


class _OpenPart:
    """One part being read: its blocks (format 3) or row groups (formats 1 and 2) that may hold wanted rows,
    decoded one at a time straight into the caller's arrays (the working set is one block, so memory does
    not grow with the rows read), each cut by binary search in its sorted ``ev``."""

    def __init__(
        self,
        reader: pq.ParquetReader,
        name: str,
        divisors: tuple[float, float] | None,
        ev_between: tuple[int, int] | None,
        events: np.ndarray | None,
        groups: list[int],
        group_rows: np.ndarray,
        blocks: bool,
    ) -> None:
        self.reader, self.name, self.divisors = reader, name, divisors
        self.ev_between, self.events = ev_between, events
        self.groups, self.group_rows, self.blocks = groups, group_rows, blocks
        self.rows = int(group_rows[groups].sum()) if groups else 0  # at most this many rows are kept

    def read_into(self, out: LevelColumns, at: int) -> int:
        """Decode the part's rows into ``out`` from row ``at``; returns the row after the last written."""
        return self._blocks_into(out, at) if self.blocks else self._row_groups_into(out, at)

    def _blocks_into(self, out: LevelColumns, at: int) -> int:
        """Format 3."""
        ev_out, bid_out, price_out, qty_out = out
        divisors = self.divisors
        assert divisors is not None
        schema = self.reader.schema_arrow
        data_columns = [schema.get_field_index(c) for c in _DATA]
        largest = int(self.group_rows.max(initial=0))
        ticks, qty_block = size_classed_empty(largest, np.int64), size_classed_empty(largest, np.float64)
        for i in self.groups:
            block = self.reader.read_row_group(i, column_indices=data_columns, use_threads=False)
            k = int(self.group_rows[i])
            where = f"{self.name}, block {i}"
            runs = _decompressed(block, "ev", None, where)
            run_rows = _decompressed(block, "ev_rows", None, where)
            ev = np.repeat(runs, run_rows)
            if len(ev) != k:
                raise LevelPartError(f"{where}: {len(ev)} event numbers for {k} rows")
            take = _kept_rows(ev, runs, run_rows, self.ev_between, self.events)
            kept = ev[take]
            end = at + len(kept)
            ev_out[at:end] = kept
            bits = np.frombuffer(block.column("is_bid")[0].as_py(), np.uint8)
            bid_out[at:end] = np.unpackbits(bits, count=k, bitorder="little").view(np.bool_)[take]
            np.divide(
                _decompressed(block, "price", ticks[:k], where)[take], divisors[0], out=price_out[at:end]
            )
            qty_bits = np.frombuffer(block.column("qty_bits")[0].as_py(), np.uint8)
            if len(qty_bits) != (k + 7) // 8:
                raise LevelPartError(f"{where}: {len(qty_bits)} bytes of non-zero bits for {k} rows")
            progress = pco.simple_decompress_into(block.column("qty")[0].as_py(), ticks[:k])
            if not progress.finished:
                raise LevelPartError(f"{where}: qty has more non-zero values than the block has rows")
            whole = isinstance(take, slice) and take.indices(k) == (0, k, 1)
            into = qty_out[at:end] if whole else qty_block[:k]
            if _expand_nonzero(qty_bits, ticks, divisors[1], into) != progress.n_processed:
                raise LevelPartError(
                    f"{where}: {progress.n_processed} non-zero quantities, bits for another number"
                )
            if not whole:
                qty_out[at:end] = into[take]
            at = end
        return at

    def _row_groups_into(self, out: LevelColumns, at: int) -> int:
        """Formats 1 and 2 (earlier releases; format 1 is also the fallback for values without ticks)."""
        ev_out, bid_out, price_out, qty_out = out
        for i in self.groups:
            group = self.reader.read_row_group(i, use_threads=False)
            ev = _column(group, "ev")
            take = _cut(ev, self.ev_between)
            kept = ev[take]
            end = at + len(kept)
            ev_out[at:end] = kept
            bid_out[at:end] = _column(group, "is_bid")[take]
            for column, values_out, div in (("price", price_out, 0), ("qty", qty_out, 1)):
                values = _column(group, column)[take]
                if self.divisors is None:
                    values_out[at:end] = values
                else:
                    np.divide(values, self.divisors[div], out=values_out[at:end])
            at = end
        return at


def _kept_rows(
    ev: np.ndarray,
    runs: np.ndarray,
    run_rows: np.ndarray,
    ev_between: tuple[int, int] | None,
    events: np.ndarray | None,
) -> slice | np.ndarray:
    """The rows of a format-3 block to keep: those within ``ev_between`` and, with ``events``, of those
    events (a slice where that is every row of a range, a mask otherwise)."""
    take = _cut(ev, ev_between, _is_sorted(runs))  # the runs are sorted where the rows are
    if events is None or not len(runs):
        return take
    if not len(events):
        return np.zeros(len(ev), np.bool_)
    at = np.minimum(np.searchsorted(events, runs), len(events) - 1)
    wanted = events[at] == runs
    if wanted.all():
        return take
    mask = np.repeat(wanted, run_rows)
    if isinstance(take, slice):
        start, stop, _step = take.indices(len(ev))
        mask[:start] = False
        mask[stop:] = False
        return mask
    return mask & take


def _decompressed(block: pa.Table, column: str, into: np.ndarray | None, where: str) -> np.ndarray:
    """One pcodec-compressed value of a block's column, into ``into`` (all of it: a short column is an
    error) or a new array."""
    data = block.column(column)[0].as_py()
    if into is None:
        out = pco.simple_decompress(data)
        return np.empty(0, np.int64) if out is None else out
    progress = pco.simple_decompress_into(data, into)
    if progress.n_processed != len(into) or not progress.finished:
        raise LevelPartError(f"{where}: {column} has {progress.n_processed} values for {len(into)} rows")
    return into


def _cut(
    ev: np.ndarray, ev_between: tuple[int, int] | None, is_sorted: bool | None = None
) -> slice | np.ndarray:
    """The rows of ``ev`` within ``ev_between``: a slice where ``ev`` is sorted (parts are written in event
    order; ``is_sorted`` when the caller knows), a mask where not (a part that is not is still read right)."""
    if ev_between is None:
        return slice(None)
    lo, hi = ev_between
    if is_sorted if is_sorted is not None else _is_sorted(ev):
        return slice(int(np.searchsorted(ev, lo, "left")), int(np.searchsorted(ev, hi, "right")))
    return (ev >= lo) & (ev <= hi)


def _may_hold(lo: int, hi: int, ev_between: tuple[int, int] | None, events: np.ndarray | None) -> bool:
    """Whether a block or row group with events ``lo..hi`` may hold wanted rows."""
    if ev_between is not None and (hi < ev_between[0] or lo > ev_between[1]):
        return False
    return events is None or np.searchsorted(events, lo, "left") != np.searchsorted(events, hi, "right")


def _metadata(meta: pq.FileMetaData) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (meta.metadata or {}).items()}


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _row_groups(
    meta: pq.FileMetaData, ev_between: tuple[int, int] | None, events: np.ndarray | None
) -> list[int]:
    """The row groups that may hold rows of the wanted events (all, without statistics)."""
    ev_index = meta.schema.names.index("ev")
    out = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(ev_index).statistics
        if stats is None or not stats.has_min_max or _may_hold(stats.min, stats.max, ev_between, events):
            out.append(i)
    return out


@numba.njit(cache=True, nogil=True)
def _is_sorted(values: np.ndarray) -> bool:
    for i in range(1, len(values)):  # noqa: SIM110 (compiled: a plain loop)
        if values[i] < values[i - 1]:
            return False
    return True


def read_level_part(store: ObjectStore, key: str) -> pl.DataFrame:
    """One part's level rows as a frame (:data:`LEVEL_COLUMNS`)."""
    ev, is_bid, price, qty = read_level_columns(store, key)
    return pl.DataFrame({"ev": ev, "is_bid": is_bid, "price": price, "qty": qty}, schema=LEVEL_COLUMNS)
