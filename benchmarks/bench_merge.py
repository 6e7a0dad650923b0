"""Validate + merge of a generated day vs the floor and vs a plain-Python dict-book merge.

Children (each a fresh process so its peak RSS is its own):

- ``ours STORE DATE``: ``validate_stream_day`` for both streams, then ``merge_symbol_day`` (the
  pipeline's own pure functions, what the Dagster assets call), into the store's ``validated/``,
  ``merged/`` and ``state/``;
- ``floor STORE DATE OUT``: read the same raw objects of both streams, decompress, parse them with the
  project's compiled frame parser (``depth_core.events.parse_objects``), and write the level rows of the
  first stream (about the merged row count) in the merged schema to zstd Parquet, built and encoded as the
  merge writes its own (``depth_core.schema.MERGED_PARQUET_OPTIONS``) — everything a merge must do at
  least, with no validation or arbitration. It parses in batches of the validation's own size
  (``depth_core.validate.BATCH_BYTES`` of compressed input), so a batching that suits the allocator better
  speeds both sides alike (it once parsed 64 MiB of text at a time, which is ~20 % slower here), and under the
  process settings of a validation or merge pass (``depth_core.memory.pass_settings``: the allocator's
  thresholds speed the floor too);
- every child first limits its glibc heaps as a pipeline step process does (``depth_core.heap``), before
  its imports start threads;
- ``plain STORE DATE OUT``: the textbook merge in plain Python (stdlib ``json``, dicts as the book, a
  list of row tuples, pyarrow to write): the issue's "plain-Python merge" baseline.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit
from depth_core.heap import limit_heap_arenas

SYMBOL = "BTCUSDT"
STREAMS = ("bench-a", "bench-b")


def clean_outputs(store_root: Path) -> None:
    """Remove what a previous run wrote, so every run does the whole job."""
    for sub in ("validated", "merged", "state", "quality"):
        shutil.rmtree(store_root / sub, ignore_errors=True)


def run_ours(store_root: str, date: str) -> dict[str, Any]:
    from depth_core.merge import merge_symbol_day
    from depth_core.validate import validate_stream_day
    from depth_store import open_store

    clean_outputs(Path(store_root))
    store = open_store(store_root)
    t0 = time.perf_counter()
    reports = [validate_stream_day(store, "spot", s, date).reports[SYMBOL] for s in STREAMS]
    t1 = time.perf_counter()
    merged = merge_symbol_day(store, "spot", SYMBOL, date, list(STREAMS))
    t2 = time.perf_counter()
    rows = _merged_rows(Path(store_root), date)
    out: dict[str, Any] = {
        "validate_s": t1 - t0,
        "merge_s": t2 - t1,
        "total_s": t2 - t0,
        "merged_rows": rows["rows"],
        "merged_bytes": rows["bytes"],
        "merged_files": rows["files"],
    }
    for attr in ("gaps", "events", "rows"):
        if hasattr(merged, attr):
            val = getattr(merged, attr)
            out[f"report_{attr}"] = len(val) if isinstance(val, list) else val
    out["validated_events"] = [getattr(r, "events", None) for r in reports]
    return out


def _merged_rows(root: Path, date: str) -> dict[str, int]:
    import pyarrow.parquet as pq

    folder = root / "merged" / "market=spot" / f"symbol={SYMBOL}" / f"date={date}"
    files = sorted(folder.glob("*.parquet"))
    return {
        "rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files),
        "bytes": sum(f.stat().st_size for f in files),
        "files": len(files),
    }


def _raw_objects(store_root: str, stream: str) -> list[tuple[Path, str | None]]:
    """Every raw object of the stream for the symbol (the day and its neighbours: what a merge reads), with
    the symbol of a v1 object (None: a v2 object, whose lines name their symbol), in receive order."""
    base = Path(store_root) / "raw" / "market=spot" / f"stream={stream}"
    v2: list[tuple[Path, str | None]] = [(p, None) for p in base.glob("date=*/*.ndjson.gz")]
    v1: list[tuple[Path, str | None]] = [
        (p, SYMBOL) for p in (base / f"symbol={SYMBOL}").glob("date=*/*.ndjson.gz")
    ]
    return sorted(v2 + v1, key=lambda x: x[0].name)


def merged_hash(store_root: str, date: str) -> dict[str, Any]:
    """Row count and content hash of the published merged day (the manifest's files, in order)."""
    import hashlib

    import polars as pl

    folder = Path(store_root) / "merged" / "market=spot" / f"symbol={SYMBOL}" / f"date={date}"
    manifest = json.loads((folder / "_coverage_manifest.json").read_text())
    digest = hashlib.sha256()
    rows = 0
    for key in manifest["files"]:
        frame = pl.read_parquet(Path(store_root) / key)
        rows += frame.height
        digest.update(frame.hash_rows(seed=1).to_numpy().tobytes())
    return {
        "rows": rows,
        "sha256": digest.hexdigest(),
        "files": len(manifest["files"]),
        "manifest_rows": manifest["rows"],
        "events": manifest["events"],
        "gaps": len(manifest["gaps"]),
    }


def _floor_rows(chunk: Any, stream: str) -> Any:
    """The merged-schema rows of one parsed batch (no arbitration: every event of the stream), as an Arrow
    table built the way the merge builds its own (``depth_core.merge._Rows.table``): times and ids gathered
    per level row, ``symbol``, ``side`` and ``source`` as dictionaries over codes, so the floor writes them
    as cheaply as the merge does (until the ninth session both made a string per row)."""
    import numpy as np
    import pyarrow as pa

    from depth_core.schema import SIDE_ASK, SIDE_BID, string_codes

    ev = chunk.levels["ev"].to_numpy()
    n = len(ev)

    def per_row(column: str) -> Any:
        return chunk.events[column].to_numpy()[ev]

    ms = pa.timestamp("ms", "UTC")
    return pa.table(
        {
            "symbol": string_codes(np.zeros(n, np.int8), [SYMBOL]),
            "exchange_time": pa.array(per_row("E"), ms),
            "transaction_time": pa.nulls(n, ms),
            "receive_time": pa.array(per_row("receive_ns"), pa.timestamp("ns", "UTC")),
            "first_update_id": pa.array(per_row("U")),
            "last_update_id": pa.array(per_row("u")),
            "prev_update_id": pa.nulls(n, pa.int64()),
            "is_snapshot": pa.array(np.zeros(n, np.bool_)),
            "side": string_codes(chunk.levels["is_bid"].to_numpy().view(np.int8), [SIDE_ASK, SIDE_BID]),
            "price": pa.array(chunk.levels["price"].to_numpy()),
            "qty": pa.array(chunk.levels["qty"].to_numpy()),
            "source": string_codes(np.zeros(n, np.int8), [stream]),
            "book_exact": pa.array(np.ones(n, np.bool_)),
        }
    )


def _floor_pass(store_root: str, out: Path) -> tuple[int, int, dict[str, float]]:
    """The floor's work: rows written, level rows parsed, and seconds per phase."""
    import pyarrow.parquet as pq

    from depth_core.events import parse_objects
    from depth_core.raw_format import decompress
    from depth_core.schema import MERGED_PARQUET_OPTIONS
    from depth_core.validate import BATCH_BYTES, runs_within

    rows_written = 0
    parsed_levels = 0
    writer: pq.ParquetWriter | None = None
    phase = {"read_s": 0.0, "gunzip_s": 0.0, "parse_s": 0.0, "rows_and_write_s": 0.0}
    for si, stream in enumerate(STREAMS):
        files = _raw_objects(store_root, stream)
        # batches of compressed bytes, cut as the validation cuts them
        for lo, hi in runs_within([f.stat().st_size for f, _s in files], BATCH_BYTES):
            datas: list[bytes] = []
            for f, _symbol in files[lo:hi]:
                t = time.perf_counter()
                gz = f.read_bytes()
                t1 = time.perf_counter()
                datas.append(decompress(gz)[0])
                phase["read_s"] += t1 - t
                phase["gunzip_s"] += time.perf_counter() - t1
            t2 = time.perf_counter()
            chunk = parse_objects(datas, [symbol for _f, symbol in files[lo:hi]])
            del datas
            t3 = time.perf_counter()
            phase["parse_s"] += t3 - t2
            parsed_levels += chunk.levels.height
            if si != 0:
                continue
            table = _floor_rows(chunk, stream)
            if writer is None:
                options = dict(MERGED_PARQUET_OPTIONS)
                row_group = options.pop("row_group_size")
                writer = pq.ParquetWriter(out / "part-0.parquet", table.schema, **options)
            writer.write_table(table, row_group_size=row_group)
            rows_written += table.num_rows
            phase["rows_and_write_s"] += time.perf_counter() - t3
    if writer is not None:
        writer.close()
    return rows_written, parsed_levels, phase


def run_floor(store_root: str, date: str, out_dir: str) -> dict[str, Any]:
    from depth_core.memory import pass_settings

    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    with pass_settings():  # as a pass runs (see the module docstring)
        rows_written, parsed_levels, phase = _floor_pass(store_root, out)
    dt = time.perf_counter() - t0
    nbytes = sum(p.stat().st_size for p in out.glob("*.parquet"))
    return {
        "total_s": dt,
        "rows_written": rows_written,
        "parsed_levels": parsed_levels,
        "bytes": nbytes,
        **{k: round(v, 2) for k, v in phase.items()},
    }


def run_plain(store_root: str, date: str, out_dir: str) -> dict[str, Any]:
    """Textbook merge: parse every line with json, walk the id line, dict books, rows as tuples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    msgs: list[list[tuple[int, int, int, int, list[list[str]], list[list[str]], str]]] = []
    snaps: list[tuple[int, int, dict[str, Any], str]] = []
    for stream in STREAMS:
        mine: list[tuple[int, int, int, int, list[list[str]], list[list[str]], str]] = []
        for f, symbol in _raw_objects(store_root, stream):
            for line in gzip.decompress(f.read_bytes()).split(b"\n"):
                if not line:
                    continue
                ns_text, kind, text = line.split(b" ", 2)
                if symbol is None:  # v2: the line names its symbol
                    _sym, text = text.split(b" ", 1)
                if kind == b"D":
                    d = json.loads(text)["data"]
                    mine.append((d["U"], d["u"], int(ns_text), d["E"], d["b"], d["a"], stream))
                elif kind == b"S":
                    s = json.loads(text)
                    snaps.append((s["lastUpdateId"], int(ns_text), s, stream))
        mine.sort(key=lambda m: m[0])
        msgs.append(mine)
    snaps.sort(key=lambda s: s[0])
    rows: list[tuple[Any, ...]] = []
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}

    def image(snap: tuple[int, int, dict[str, Any], str]) -> None:
        last, recv, body, stream = snap
        bids.clear()
        asks.clear()
        for side, book, key in (("bid", bids, "bids"), ("ask", asks, "asks")):
            for p, q in body[key]:
                book[p] = q
                rows.append(
                    (
                        recv // 1_000_000,
                        recv,
                        last,
                        last,
                        True,
                        side,
                        float(p),
                        float(q),
                        f"snapshot:{stream}",
                    )
                )

    pos = [0] * len(msgs)
    next_id: int | None = None
    si = 0
    gaps = 0
    while True:
        if next_id is not None:
            for k, m in enumerate(msgs):
                while pos[k] < len(m) and m[pos[k]][1] < next_id:
                    pos[k] += 1
        if next_id is None or not any(
            pos[k] < len(m) and m[pos[k]][0] <= next_id <= m[pos[k]][1] for k, m in enumerate(msgs)
        ):
            # (re-)anchor: the first snapshot that some stream's events continue from
            anchored = False
            while si < len(snaps):
                last = snaps[si][0]
                if next_id is not None and last + 1 < next_id:
                    si += 1
                    continue
                for k, m in enumerate(msgs):
                    while pos[k] < len(m) and m[pos[k]][1] <= last:
                        pos[k] += 1
                if any(
                    pos[k] < len(m) and m[pos[k]][0] <= last + 1 <= m[pos[k]][1] for k, m in enumerate(msgs)
                ):
                    if next_id is not None:
                        gaps += 1
                    image(snaps[si])
                    next_id = last + 1
                    anchored = True
                    si += 1
                    break
                si += 1
            if not anchored:
                break
        assert next_id is not None
        best = -1
        for k, m in enumerate(msgs):
            while pos[k] < len(m) and m[pos[k]][1] < next_id:
                pos[k] += 1
            if (
                pos[k] < len(m)
                and m[pos[k]][0] <= next_id <= m[pos[k]][1]
                and (best < 0 or m[pos[k]][2] < msgs[best][pos[best]][2])
            ):
                best = k
        if best < 0:
            continue
        first, last_id, recv, e_ms, b, a, stream = msgs[best][pos[best]]
        for side, book, levels in (("bid", bids, b), ("ask", asks, a)):
            for p, q in levels:
                if float(q) == 0.0:
                    book.pop(p, None)
                else:
                    book[p] = q
                rows.append((e_ms, recv, first, last_id, False, side, float(p), float(q), stream))
        next_id = last_id + 1
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in range(9)]
    table = pa.table(
        {
            "symbol": pa.array([SYMBOL] * len(rows), pa.string()),
            "exchange_time": pa.array(cols[0], pa.timestamp("ms", "UTC")),
            "transaction_time": pa.nulls(len(rows), pa.timestamp("ms", "UTC")),
            "receive_time": pa.array(cols[1], pa.timestamp("ns", "UTC")),
            "first_update_id": pa.array(cols[2], pa.int64()),
            "last_update_id": pa.array(cols[3], pa.int64()),
            "prev_update_id": pa.nulls(len(rows), pa.int64()),
            "is_snapshot": pa.array(cols[4], pa.bool_()),
            "side": pa.array(cols[5], pa.string()),
            "price": pa.array(cols[6], pa.float64()),
            "qty": pa.array(cols[7], pa.float64()),
            "source": pa.array(cols[8], pa.string()),
        }
    )
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pq.write_table(table, out / "part-0.parquet", compression="zstd")
    return {
        "total_s": time.perf_counter() - t0,
        "rows_written": len(rows),
        "gaps": gaps,
        "events": sum(len(m) for m in msgs),
    }


def main() -> None:
    # every child runs with a pipeline step's process settings, taken before anything starts a thread
    # (depth_pipeline/__init__.py does the same): ours and the floor alike
    limit_heap_arenas()
    kind = sys.argv[1]
    if kind == "ours":
        emit(run_ours(sys.argv[2], sys.argv[3]))
    elif kind == "floor":
        emit(run_floor(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif kind == "plain":
        emit(run_plain(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif kind == "hash":
        got = merged_hash(sys.argv[2], sys.argv[3])
        if len(sys.argv) > 4:
            want = json.loads(Path(sys.argv[4]).read_text())
            got["expected"] = {k: want.get(k) for k in ("rows", "sha256")}
            got["identical"] = got["rows"] == want.get("rows") and got["sha256"] == want.get("sha256")
        emit(got)
    else:
        raise SystemExit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
