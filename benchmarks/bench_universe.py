"""Universe pipeline benchmark: sensor ticks and the day's cleanup on moto S3 holding a synthetic full day of
layout-2 raw objects for N symbols x 2 streams, with every store request counted (``depth_store.counting``).

``python -m benchmarks.bench_universe [--symbols 400] [--streams 2] [--flush-seconds 10] [--quick]``
prints one JSON line (see ``benchmarks.common.emit``). ``benchmarks/run.py`` (section ``universe``) runs it
and renders BENCHMARKS.md; ``docs/cost.md`` takes its request counts.

The day: ``86400 / flush`` objects per stream for yesterday (the date the nightly run and cleanup handle) and
the last ``RECENT_MINUTES`` of today (the collectors' live position), each holding one short depth line per
symbol (sizes are small; what is measured is listing, reading and deleting, whose request counts do not
depend on object size). A stream-day report per stream lists every object with the symbols and event dates
it holds, as ``depth_core/validate.py`` writes it.

What is timed:

- ``arrival_first_tick``: the raw-arrival sensor's first tick (empty cursor: it lists back to the start of
  yesterday);
- steady ticks after 1 new object per stream (a 10 s flush between two ticks of a 30 s sensor gives 3):
  arrival, gap (reads each new object for notes), late-data, and one reconcile tick;
- the reconcile sensor's sweep until its first pass completes;
- ``cleanup_day`` of yesterday for every symbol (merge gates given: no real merge of synthetic data exists;
  the gate's own cost is one manifest HEAD + GET per symbol-day, counted separately in docs/cost.md).

The nightly run itself (validate, merge, derive of 400 symbols, then the gated cleanup, against the
simulator's truth) is measured on real captured data by ``benchmarks/bench_universe_pipeline.py``
(``make universe-pipeline``), not on this synthetic day (its objects hold no real depth events).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import NotAvailableError, emit

RECENT_MINUTES = 10


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(exe):
        raise NotAvailableError("moto_server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, f"http://127.0.0.1:{port}"


def _symbols(n: int) -> list[str]:
    return [f"S{i:04d}USDT" for i in range(n)]


def synthetic_day(
    store: Any, streams: list[str], symbols: list[str], flush_seconds: float, date: str, now: float
) -> dict[str, list[Any]]:
    """Upload yesterday's full day and today's last minutes of v2 objects; write yesterday's stream-day
    reports."""
    from depth_core.raw_format import LineKind, RawObjectKey, encode_line_v2

    midnight = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()
    per_day = int(86400 / flush_seconds)
    starts = [midnight + i * flush_seconds for i in range(per_day)]
    starts += [
        now - RECENT_MINUTES * 60 + i * flush_seconds for i in range(int(RECENT_MINUTES * 60 / flush_seconds))
    ]

    def body(ns: int) -> bytes:
        return gzip.compress(
            b"".join(
                encode_line_v2(ns + j, LineKind.DEPTH, sym, b'{"stream":"x@depth@100ms","data":{}}')
                for j, sym in enumerate(symbols)
            ),
            compresslevel=1,
        )

    jobs = [(stream, i, int(t * 1e9)) for stream in streams for i, t in enumerate(starts)]

    def put(job: tuple[str, int, int]) -> Any:
        stream, seq, ns = job
        key = RawObjectKey.for_stream_segment("spot", stream, ns, "bench", seq)
        return store.put_bytes(key.key, body(ns))

    with ThreadPoolExecutor(8) as pool:
        infos = list(pool.map(put, jobs))
    out: dict[str, list[Any]] = {s: [] for s in streams}
    for (stream, _seq, _ns), info in zip(jobs, infos, strict=True):
        out[stream].append(info)
    from depth_core.validated_layout import COMPACT_SYMBOL_DATES_VERSION
    from depth_pipeline.cleanup import stream_day_report_key

    for stream in streams:
        objects = [
            {
                "key": i.key,
                "size": i.size,
                "etag": i.etag,
                "layout": 2,
                "symbols": symbols,
                "event_dates": [date],
                "symbol_event_dates": {},
            }  # the compact form: every symbol's dates are the object's
            for i in out[stream]
            if f"/date={date}/" in i.key
        ]
        report = {"objects": objects, "version": COMPACT_SYMBOL_DATES_VERSION}
        store.put_bytes(stream_day_report_key("spot", stream, date), json.dumps(report).encode())
    return out


def steady_scan(store: Any, market: str, stream: str, now: float) -> Any:
    """The scan state a sensor ticking all day would have now (see the run() comment)."""
    from depth_core.raw_format import RawObjectKey, stream_prefix
    from depth_pipeline.raw_scan import CLOCK_MARGIN_SECONDS, LAG_SECONDS, StreamScan

    base = stream_prefix(market, stream)  # type: ignore[arg-type]
    infos = list(store.list(base))
    head = max(i.key for i in infos)
    lag_ns = RawObjectKey.parse(head).first_receive_ns - int(LAG_SECONDS * 1e9)
    seen = {
        i.key[len(base) :]: i.last_modified.timestamp()
        for i in infos
        if RawObjectKey.parse(i.key).first_receive_ns >= lag_ns
    }
    # a sweep pass began after the bulk upload (objects uploaded before it are not reported again)
    started = now + CLOCK_MARGIN_SECONDS
    return StreamScan(
        head=head, since=now - 86400, seen=seen, pass_started=started, prev_pass_started=started, passes=1
    )


def _timed(store: Any, fn: Any) -> tuple[Any, dict[str, Any]]:
    store.reset()
    t0 = time.perf_counter()
    c0 = time.process_time()
    value = fn()
    return value, {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "requests": store.snapshot(),
    }


def run(n_symbols: int, streams: list[str], flush_seconds: float) -> dict[str, Any]:
    import dagster as dg

    from depth_core.names import Market
    from depth_pipeline.cleanup import ManifestObject, MergeGate, cleanup_day
    from depth_pipeline.config import PipelineConfig
    from depth_pipeline.sensors import (
        TICK_BUDGET_SECONDS,
        Deadline,
        arrival_events,
        evaluate_late_data,
        evaluate_reconcile,
        evaluate_stream_gaps,
        scan_streams,
    )
    from depth_store import open_store
    from depth_store.counting import CountingStore

    proc, endpoint = start_moto()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    report: dict[str, Any] = {"symbols": n_symbols, "streams": len(streams), "flush_seconds": flush_seconds}
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket="bench")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # moto starting: no signal to wait on
        store = CountingStore(open_store("s3://bench/depth"))
        now = time.time()
        yesterday = (dt.datetime.fromtimestamp(now, tz=dt.UTC).date() - dt.timedelta(days=1)).isoformat()
        symbols = _symbols(n_symbols)
        t0 = time.perf_counter()
        day = synthetic_day(store, streams, symbols, flush_seconds, yesterday, now)
        report["objects"] = sum(len(v) for v in day.values())
        report["object_bytes"] = sum(i.size for v in day.values() for i in v)
        report["upload_s"] = time.perf_counter() - t0
        market: Market = "spot"

        # raw arrival: first tick (empty cursor) and a steady tick
        def arrival(cursor: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            found, states = scan_streams(
                store,
                market,
                streams,
                cursor,
                now=time.time(),
                initial_lookback_seconds=time.time()
                - (dt.datetime.fromisoformat(yesterday).replace(tzinfo=dt.UTC).timestamp()),
                deadline=Deadline(TICK_BUDGET_SECONDS),
            )
            events = arrival_events(found, dt.datetime.now(dt.UTC).date().isoformat())
            return len(events), {"streams": {s: st.to_json() for s, st in states.items()}}

        (n_events, arrival_cursor), report["arrival_first_tick"] = _timed(store, lambda: arrival({}))
        report["arrival_first_tick"]["events"] = n_events
        # steady state: the sensors ticked all day while the objects arrived; their cursors are what those
        # ticks left (newest key, the lag window's keys, a finished sweep pass), built from one listing
        instance = dg.DagsterInstance.ephemeral()
        steady = {"streams": {s: steady_scan(store, market, s, time.time()).to_json() for s in streams}}
        gap_cursor: dict[str, Any] = dict(steady)
        late_cursor: dict[str, Any] = dict(steady)
        arrival_cursor = dict(steady)

        # one new object per stream, then a steady tick of each sensor
        from depth_core.raw_format import LineKind, RawObjectKey, encode_line_v2

        for stream in streams:
            ns = time.time_ns()
            key = RawObjectKey.for_stream_segment(market, stream, ns, "bench", 10**7)
            store.put_bytes(
                key.key,
                gzip.compress(
                    b"".join(
                        encode_line_v2(ns, LineKind.DEPTH, s, b'{"stream":"x","data":{}}') for s in symbols
                    )
                ),
            )
        (_n, _c), report["arrival_steady_tick"] = _timed(store, lambda: arrival(arrival_cursor))
        tick, report["gap_steady_tick"] = _timed(
            store, lambda: evaluate_stream_gaps(store, market, streams, 60.0, gap_cursor)
        )
        report["gap_steady_tick"]["alerts"] = len(tick.alerts)
        _v, report["late_steady_tick"] = _timed(
            store, lambda: evaluate_late_data(instance, store, market, streams, late_cursor)
        )

        # reconcile: ticks until the sweep has passed over every retained key once
        config = PipelineConfig(store_url="s3://bench/depth", streams=tuple(streams))
        cursor: dict[str, Any] = {}
        ticks = []
        for _ in range(100):
            (_req, text, logs), t = _timed(
                store,
                lambda c=cursor: evaluate_reconcile(instance, store, market, streams, c, config),
            )
            ticks.append(t)
            cursor = json.loads(text)
            if not (logs and logs[0].startswith("sweeping")):
                break
        report["reconcile_ticks_to_first_pass"] = len(ticks)
        report["reconcile_tick_max_wall_s"] = max(t["wall_s"] for t in ticks)
        report["reconcile_tick"] = ticks[-1]

        # cleanup of yesterday for every symbol, gates given (see the module docstring)
        listed = [
            ManifestObject(i.key, i.size, i.etag, (yesterday,))
            for v in day.values()
            for i in v
            if f"/date={yesterday}/" in i.key
        ]
        merged_at = dt.datetime.now(dt.UTC)

        def gate(symbol: str, date: str) -> MergeGate:
            if date != yesterday:
                return MergeGate(date, symbol, False, "not merged (bench)")
            return MergeGate(date, symbol, True, "ok", "bench", merged_at, listed)

        result, report["cleanup_day"] = _timed(
            store,
            lambda: cleanup_day(
                None,  # type: ignore[arg-type]  # the gates are given: no instance is read
                store,
                market,
                streams,
                yesterday,
                symbols,
                gate_of=gate,
            ),
        )
        report["cleanup_day"]["deleted"] = len(result.deleted)
        report["cleanup_day"]["kept"] = len(result.kept_holdings_pending)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=400)
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--flush-seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="a 60 s flush (1,440 objects per stream-day)")
    args = ap.parse_args(argv)
    flush = 60.0 if args.quick else args.flush_seconds
    streams = [f"s{i}" for i in range(args.streams)]
    try:
        emit(run(args.symbols, streams, flush))
    except NotAvailableError as exc:
        emit({"not_available": str(exc)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
