"""The demo's steps (see the package docstring), its options and ``main``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from depth_core.days import next_day
from depth_core.raw_format import RAW_ROOT
from depth_pipeline.demo.processes import (
    REPO_ROOT,
    Child,
    Children,
    DemoError,
    entry_point,
    run_step,
    say,
    wait_for,
)
from depth_pipeline.demo.readback import STREAMS, read_stream_stats, report_merged
from depth_pipeline.demo.report import print_report
from exchange_sim.tcp_proxy import TcpProxy, free_port

OUTAGE_STREAM = "eu-1"
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")


@dataclass
class DemoOptions:
    seconds: float
    data_dir: Path
    symbols: list[str]
    outage_at: float
    outage_seconds: float
    flush_seconds: int


def parse_args(argv: Sequence[str] | None) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m depth_pipeline.demo",
        description="Offline end-to-end demo: simulator, two collectors, an outage, merge, checks, cleanup.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("DEMO_SECONDS", "60")),
        help="capture length in seconds (env DEMO_SECONDS, default 60)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DEMO_DATA_DIR", REPO_ROOT / "demo-data")),
        help="where the store, spools, logs and Dagster instance go; wiped first (default ./demo-data)",
    )
    parser.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS), help="simulated symbols")
    parser.add_argument(
        "--outage-seconds",
        type=float,
        default=None,
        help="length of eu-1's outage (default: a quarter of the capture)",
    )
    args = parser.parse_args(argv)
    if args.seconds < 10:
        parser.error("--seconds must be at least 10")
    outage = args.outage_seconds if args.outage_seconds is not None else max(3.0, args.seconds / 4)
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    return DemoOptions(
        seconds=args.seconds,
        data_dir=args.data_dir.resolve(),
        symbols=symbols,
        outage_at=args.seconds / 3,
        outage_seconds=min(outage, args.seconds / 2),
        flush_seconds=2 if args.seconds < 40 else 5,
    )


def utc_dates(start: float, end: float) -> list[str]:
    """Every UTC date between two wall-clock instants (a minute may span midnight)."""
    last = dt.datetime.fromtimestamp(end, dt.UTC).date().isoformat()
    out = [dt.datetime.fromtimestamp(start, dt.UTC).date().isoformat()]
    while out[-1] < last:
        out.append(next_day(out[-1]))
    return out


def pipeline_env(store_dir: Path, symbols: Sequence[str], dagster_home: Path) -> dict[str, str]:
    """The pipeline settings of the demo (also written to ``demo.env`` for ``make ui``). No start date:
    the partitions start at the demo's data (``depth_pipeline.daydata.partition_start``), not years back,
    even when the shell exports a ``DEPTH_START_DATE`` meant for another store."""
    return {
        "DEPTH_STORE_URL": str(store_dir),
        "DEPTH_STREAMS": ",".join(STREAMS),
        "DEPTH_SYMBOLS": ",".join(symbols),
        "DEPTH_MARKET": "spot",
        "DEPTH_START_DATE": "",
        "DAGSTER_HOME": str(dagster_home),
    }


def run_demo(opts: DemoOptions) -> int:
    data = opts.data_dir
    if data.exists():
        say(f"removing the previous demo data in {data}")
        shutil.rmtree(data)
    store_dir, log_dir, dagster_home = data / "store", data / "logs", data / "dagster_home"
    for d in (store_dir, log_dir, dagster_home):
        d.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    base_env = dict(os.environ)
    base_env.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
    base_env["PYTHONUNBUFFERED"] = "1"
    symbols_csv = ",".join(opts.symbols)
    children = Children(log_dir)
    relay: TcpProxy | None = None
    try:
        # 1. the exchange
        sim_port = free_port()
        say(f"starting the exchange simulator ({symbols_csv}) on 127.0.0.1:{sim_port}")
        sim = children.start(
            "simulator",
            [
                *entry_point("exchange_sim.cli"),
                "--port",
                str(sim_port),
                "--symbols",
                symbols_csv,
                "--seed",
                "7",
            ],
            base_env,
        )
        wait_for(
            "the simulator to listen",
            lambda: "listening" in sim.log_path.read_text(errors="replace"),
            30,
            sim,
        )

        # 2. two collectors; eu-1 goes through a relay we can cut
        relay = TcpProxy("127.0.0.1", sim_port).start()
        collectors: dict[str, Child] = {}
        for stream in STREAMS:
            ws_port = relay.port if stream == OUTAGE_STREAM else sim_port
            env = dict(base_env)
            argv = [
                *entry_point("collectors.cli"),
                "--collector-id", stream,
                "--symbols", symbols_csv,
                "--store", str(store_dir),
                "--ws-url", f"ws://127.0.0.1:{ws_port}",
                "--rest-url", f"http://127.0.0.1:{sim_port}",
                "--spool-dir", str(data / f"spool-{stream}"),
                "--flush-seconds", str(opts.flush_seconds),
                "--snapshot-interval", "0",
                "--shutdown-grace", "30",
            ]  # fmt: skip
            collectors[stream] = children.start(f"collector-{stream}", argv, env)
            say(f"started collector {stream} (pid {collectors[stream].proc.pid})")

        # 3. capture, with eu-1's outage in the middle
        start_wall = time.time()
        capture_start = time.monotonic()
        outage_done = False
        cut = False
        next_progress = 0.0
        while (elapsed := time.monotonic() - capture_start) < opts.seconds:
            for child in collectors.values():
                if child.proc.poll() is not None:
                    raise DemoError(
                        f"{child.name} exited early with status {child.proc.returncode} "
                        f"(log: {child.log_path}):\n{child.tail()}"
                    )
            if sim.proc.poll() is not None:
                raise DemoError(f"the simulator exited early (log: {sim.log_path}):\n{sim.tail()}")
            if not cut and not outage_done and elapsed >= opts.outage_at:
                relay.set_mode("refuse")
                cut = True
                say(f"OUTAGE: cutting {OUTAGE_STREAM}'s network for {opts.outage_seconds:.0f}s")
            elif cut and elapsed >= opts.outage_at + opts.outage_seconds:
                relay.set_mode("pass")
                cut, outage_done = False, True
                say(f"outage over: {OUTAGE_STREAM} may reconnect")
            if elapsed >= next_progress:
                counts = {
                    # layout 2 (date=/name) and layout 1 (symbol=/date=/name) alike
                    s: sum(1 for _ in (store_dir / RAW_ROOT).glob(f"*/stream={s}/**/*.ndjson.gz"))
                    for s in STREAMS
                }
                say(
                    f"capturing {elapsed:4.0f}/{opts.seconds:.0f}s; raw objects uploaded: "
                    + ", ".join(f"{s}={n}" for s, n in counts.items())
                )
                next_progress += 10 if opts.seconds >= 40 else 5
            time.sleep(0.2)
        if cut:
            relay.set_mode("pass")
        end_wall = time.time()

        # 4. stop: SIGTERM flushes and uploads everything received
        say("stopping the collectors with SIGTERM (they flush and upload their spools)")
        for stream, child in collectors.items():
            status = child.stop(signal.SIGTERM, timeout=45)
            if status != 0:
                raise DemoError(
                    f"collector {stream} exited with status {status} (log: {child.log_path}):\n{child.tail()}"
                )
        sim.stop()
        relay.stop()
        leftovers = {
            s: [p for p in (data / f"spool-{s}").rglob("*") if p.is_file() and p.suffix == ".gz"]
            for s in STREAMS
        }

        # 5. what each stream stored
        from depth_store import open_store

        store = open_store(str(store_dir))
        stats = read_stream_stats(store, opts.symbols)
        for (stream, symbol), st in stats.items():
            if st.events == 0:
                raise DemoError(
                    f"collector {stream} stored no {symbol} events "
                    f"(log: {log_dir / f'collector-{stream}.log'})"
                )

        # 6. merge + checks, then gated cleanup, for every UTC day the capture touched
        # every UTC day the events belong to (a minute may span midnight); the wall clock is the fallback
        dates = sorted(set().union(*(st.event_dates for st in stats.values()))) or utc_dates(
            start_wall, end_wall
        )
        demo_env = pipeline_env(store_dir, opts.symbols, dagster_home)
        pipe_env = {**base_env, **demo_env}
        (data / "demo.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in demo_env.items()))
        for date in dates:
            say(f"merging {date}: depth-pipeline run --date {date} (validate each stream, merge, checks)")
            run_step(
                f"pipeline-run-{date}",
                [*entry_point("depth_pipeline.cli"), "run", "--date", date],
                pipe_env,
                log_dir,
                150,
            )
        merged = report_merged(store, store_dir, opts.symbols, dates, stats)
        raw_before = sum(1 for _ in store.list(f"{RAW_ROOT}/"))
        for date in dates:
            say(f"gated cleanup {date}: depth-pipeline cleanup --date {date}")
            run_step(
                f"pipeline-cleanup-{date}",
                [*entry_point("depth_pipeline.cli"), "cleanup", "--date", date],
                pipe_env,
                log_dir,
                120,
            )
        raw_after = sum(1 for _ in store.list(f"{RAW_ROOT}/"))

        print_report(
            opts.seconds,
            opts.symbols,
            opts.data_dir,
            stats,
            merged,
            dates,
            store_dir,
            dagster_home,
            leftovers,
            raw_before,
            raw_after,
        )
        return 0
    finally:
        if relay is not None:
            relay.stop()
        children.stop_all()


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    say(f"demo: {opts.seconds:.0f}s capture of {', '.join(opts.symbols)} into {opts.data_dir}")

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return run_demo(opts)
    except DemoError as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nDEMO INTERRUPTED: every process it started was stopped", file=sys.stderr, flush=True)
        return 130
