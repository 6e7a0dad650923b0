"""``make demo``: the whole system end to end, offline, on the embedded defaults.

It starts the local exchange simulator (two symbols), two collectors (``eu-1``, ``ap-1``) writing to a
local folder store, cuts ``eu-1``'s network for a while (a TCP relay between it and the simulator stops
and refuses connections) so its stream has a gap that ``ap-1`` covers, stops both collectors with SIGTERM,
runs the merge, its checks and the gated cleanup through a SQLite Dagster instance (``depth-pipeline run``
and ``cleanup``), and prints what happened. Every child runs in its own process group and is stopped in
``finally`` blocks and at exit, so nothing is left behind even on Ctrl-C or a failed step.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime as dt
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from depth_core.days import next_day
from depth_core.raw_format import RAW_ROOT, LineKind, RawFormatError, RawObjectKey, read_raw_object
from depth_store.base import ObjectStore

REPO_ROOT = Path(__file__).resolve().parent.parent
STREAMS = ("eu-1", "ap-1")
OUTAGE_STREAM = "eu-1"
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


# ----------------------------------------------------------------------------------------------- output


_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress line with the elapsed time, flushed at once so ``make`` shows it live."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


# -------------------------------------------------------------------------------------------- processes


def entry_point(module: str, function: str = "main") -> list[str]:
    """Run a console script's function with this interpreter (works without ``.venv/bin`` scripts)."""
    return [sys.executable, "-c", f"import sys; from {module} import {function} as m; sys.exit(m())"]


@dataclass
class Child:
    """A child process in its own process group, with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        """Signal the whole group, wait, then kill what is left; returns the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {timeout:.0f}s: killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group
        if self.proc.poll() is None:
            self.proc.wait(10)
        self.log_file.close()
        return self.proc.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])


class Children:
    """Every process the demo started; ``stop_all`` is idempotent and also registered with atexit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        atexit.register(self.stop_all)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,  # own process group: one killpg stops it and its children
        )
        child = Child(name, proc, log_path, log_file)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if not child.log_file.closed:
                child.stop(signal.SIGTERM, timeout=20)


def run_step(name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path, timeout: float) -> str:
    """Run a command to completion in its own process group; its output goes to a log and is returned."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise DemoError(f"{name} did not finish within {timeout:.0f}s (log: {log_path})") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    output = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join("    " + line for line in output.splitlines()[-25:])
        raise DemoError(f"{name} failed with exit status {proc.returncode} (log: {log_path}):\n{tail}")
    return output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate_desc: str, predicate: Callable[[], bool], timeout: float, child: Child | None = None
) -> None:
    """Poll ``predicate()`` until true; fail clearly (with the child's log) when it is not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if child is not None and child.proc.poll() is not None:
            raise DemoError(
                f"{child.name} exited with status {child.proc.returncode} while waiting for "
                f"{predicate_desc} (log: {child.log_path}):\n{child.tail()}"
            )
        time.sleep(0.1)
    tail = f":\n{child.tail()}" if child else ""
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {predicate_desc}{tail}")


# ----------------------------------------------------------------------------------------- the outage


class CuttableRelay:
    """A TCP relay between one collector and the simulator whose link can be cut: on ``cut`` it drops
    every open connection and refuses new ones until ``restore``. That is a network outage as the
    collector sees it, without any help from the simulator."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-relay", daemon=True)
        self.connections = 0

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()  # abrupt: like a dropped route, not a polite close
        self._writers.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        self._writers.update((client_w, up_w))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(client_r, up_w), pump(up_r, client_w))
        self._writers.discard(client_w)
        self._writers.discard(up_w)


# --------------------------------------------------------------------------------------- reading back


@dataclass
class StreamStats:
    """What one stream stored for one symbol, read back from its raw objects."""

    objects: int = 0
    events: int = 0
    snapshots: int = 0
    problems: int = 0
    first_id: int | None = None
    last_id: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # missing [first, last] ids
    intervals: list[tuple[int, int]] = field(default_factory=list)  # [U, u] of every event
    snapshot_ids: list[int] = field(default_factory=list)
    event_dates: set[str] = field(default_factory=set)  # UTC dates of the events' exchange time E


def read_stream_stats(store: ObjectStore, symbols: Sequence[str]) -> dict[tuple[str, str], StreamStats]:
    """Count events and find each stream's gaps (``U != previous u + 1``) from the stored raw objects."""
    stats: dict[tuple[str, str], StreamStats] = {
        (stream, symbol): StreamStats() for stream in STREAMS for symbol in symbols
    }
    by_key: dict[tuple[str, str], list[tuple[int, int]]] = {k: [] for k in stats}
    for info in store.list(f"{RAW_ROOT}/"):
        try:
            key = RawObjectKey.parse(info.key)
        except RawFormatError:
            continue
        if key.symbol is not None and (key.stream, key.symbol) not in stats:
            continue
        content = read_raw_object(store.get_bytes(info.key), key.layout)
        counted: set[tuple[str, str]] = set()
        for line in content.lines:
            symbol = key.symbol or line.symbol  # layout 2: each line names its symbol (None: stream-wide)
            entry = stats.get((key.stream, symbol)) if symbol is not None else None
            if entry is None or symbol is None:
                continue
            if (key.stream, symbol) not in counted:
                counted.add((key.stream, symbol))
                entry.objects += 1
            if line.kind is LineKind.DEPTH:
                try:
                    data = orjson.loads(line.text).get("data", {})
                    first, last = int(data["U"]), int(data["u"])
                    entry.event_dates.add(
                        dt.datetime.fromtimestamp(int(data["E"]) / 1000, dt.UTC).date().isoformat()
                    )
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    entry.problems += 1
                    continue
                by_key[(key.stream, symbol)].append((first, last))
            elif line.kind is LineKind.SNAPSHOT:
                entry.snapshots += 1
                with contextlib.suppress(
                    orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError
                ):
                    entry.snapshot_ids.append(int(orjson.loads(line.text)["lastUpdateId"]))
        if content.problems and key.symbol is not None:
            stats[(key.stream, key.symbol)].problems += len(content.problems)
    for k, intervals in by_key.items():
        entry = stats[k]
        unique = sorted(set(intervals))
        entry.events = len(unique)
        entry.intervals = unique
        if unique:
            entry.first_id, entry.last_id = unique[0][0], unique[-1][1]
        reach: int | None = None
        for first, last in unique:
            if reach is not None and first > reach + 1:
                entry.gaps.append((reach + 1, first - 1))
            reach = last if reach is None else max(reach, last)
    return stats


def merged_intervals(frame: object) -> list[tuple[int, int]]:
    """Covered id ranges of the merged rows (events only), joined where contiguous."""
    import polars as pl

    assert isinstance(frame, pl.DataFrame)
    events = (
        frame.filter(~pl.col("is_snapshot"))
        .select("first_update_id", "last_update_id")
        .unique()
        .sort("first_update_id")
    )
    joined: list[tuple[int, int]] = []
    for first, last in events.iter_rows():
        if joined and first <= joined[-1][1] + 1:
            joined[-1] = (joined[-1][0], max(joined[-1][1], last))
        else:
            joined.append((first, last))
    return joined


def covered(intervals: list[tuple[int, int]], first: int, last: int) -> bool:
    """Is ``[first, last]`` inside one of the joined ``intervals``?"""
    import bisect

    i = bisect.bisect_right(intervals, (first, sys.maxsize)) - 1
    return i >= 0 and intervals[i][0] <= first and last <= intervals[i][1]


def subtract(first: int, last: int, cut: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[first, last]`` outside every range in ``cut``."""
    pieces = [(first, last)]
    for a, b in cut:
        kept: list[tuple[int, int]] = []
        for x, y in pieces:
            if b < x or y < a:
                kept.append((x, y))
                continue
            if x < a:
                kept.append((x, a - 1))
            if b < y:
                kept.append((b + 1, y))
        pieces = kept
    return pieces


# ------------------------------------------------------------------------------------------ the demo


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


def fmt_ranges(ranges: Sequence[tuple[int, int]], limit: int = 3) -> str:
    parts = [f"{a}..{b} ({b - a + 1} ids)" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"+{len(ranges) - limit} more")
    return ", ".join(parts) if parts else "none"


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
    relay: CuttableRelay | None = None
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
        relay = CuttableRelay(sim_port)
        relay.start()
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
                relay.cut()
                cut = True
                say(f"OUTAGE: cutting {OUTAGE_STREAM}'s network for {opts.outage_seconds:.0f}s")
            elif cut and elapsed >= opts.outage_at + opts.outage_seconds:
                relay.restore()
                cut, outage_done = False, True
                say(f"outage over: {OUTAGE_STREAM} may reconnect")
            if elapsed >= next_progress:
                counts = {
                    s: sum(1 for _ in (store_dir / RAW_ROOT).glob(f"*/stream={s}/*/*/*.ndjson.gz"))
                    for s in STREAMS
                }
                say(
                    f"capturing {elapsed:4.0f}/{opts.seconds:.0f}s; raw objects uploaded: "
                    + ", ".join(f"{s}={n}" for s, n in counts.items())
                )
                next_progress += 10 if opts.seconds >= 40 else 5
            time.sleep(0.2)
        if cut:
            relay.restore()
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
        relay.close()
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
                    f"collector {stream} stored no {symbol} events (log: {log_dir / f'collector-{stream}.log'})"
                )

        # 6. merge + checks, then gated cleanup, for every UTC day the capture touched
        # every UTC day the events belong to (a minute may span midnight); the wall clock is the fallback
        dates = sorted(set().union(*(st.event_dates for st in stats.values()))) or utc_dates(
            start_wall, end_wall
        )
        pipe_env = dict(base_env)
        pipe_env.update(
            DEPTH_STORE_URL=str(store_dir),
            DEPTH_STREAMS=",".join(STREAMS),
            DEPTH_SYMBOLS=symbols_csv,
            DEPTH_MARKET="spot",
            DAGSTER_HOME=str(dagster_home),
        )
        env_names = ("DEPTH_STORE_URL", "DEPTH_STREAMS", "DEPTH_SYMBOLS", "DEPTH_MARKET", "DAGSTER_HOME")
        (data / "demo.env").write_text("".join(f"{k}={shlex.quote(pipe_env[k])}\n" for k in env_names))
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

        print_report(opts, stats, merged, dates, store_dir, dagster_home, leftovers, raw_before, raw_after)
        return 0
    finally:
        if relay is not None:
            relay.close()
        children.stop_all()


@dataclass
class MergedSummary:
    rows: int
    events: int
    snapshot_rows: int
    by_source: dict[str, int]
    gaps: list[tuple[int, int]]
    parquet_files: list[str]
    quality_files: list[str]
    missing: dict[str, int]  # stream -> events it had (after the day's anchor) that merged lacks
    covered_gaps: dict[str, list[tuple[int, int, bool]]]  # stream -> its gaps, each covered in merged?


def report_merged(
    store: ObjectStore,
    store_dir: Path,
    symbols: Sequence[str],
    dates: Sequence[str],
    stats: dict[tuple[str, str], StreamStats],
) -> dict[str, MergedSummary]:
    """Read the merged Parquet back and compare it with what each stream stored."""
    import polars as pl

    from depth_core.layout import merged_day_prefix, merged_manifest_key, quality_day_prefix

    out: dict[str, MergedSummary] = {}
    for symbol in symbols:
        files: list[str] = []
        quality: list[str] = []
        for date in dates:
            files += [
                i.key
                for i in store.list(merged_day_prefix("spot", symbol, date))
                if i.key.endswith(".parquet")
            ]
            quality += [i.key for i in store.list(quality_day_prefix("spot", symbol, date))]
        if not files:
            raise DemoError(f"the pipeline wrote no merged Parquet for {symbol} under {store_dir / 'merged'}")
        frame = pl.concat([pl.read_parquet(store_dir / f) for f in files], how="vertical_relaxed")
        joined = merged_intervals(frame)
        gaps = [(joined[i][1] + 1, joined[i + 1][0] - 1) for i in range(len(joined) - 1)]
        anchor = (
            frame.filter(pl.col("is_snapshot")).select(pl.col("last_update_id").min()).item()
            if frame.filter(pl.col("is_snapshot")).height
            else None
        )
        events = (
            frame.filter(~pl.col("is_snapshot")).select("first_update_id", "last_update_id").unique().height
        )
        by_source = dict(
            frame.filter(~pl.col("is_snapshot"))
            .unique(["first_update_id", "last_update_id"])
            .group_by("source")
            .len()
            .iter_rows()
        )
        # ids that cannot be in the output: before the day's first image, and between a recorded gap and
        # the snapshot the book resumed from (the manifest counts those as skipped)
        unusable: list[tuple[int, int]] = [(-(2**62), anchor)] if anchor is not None else []
        for date in dates:
            key = merged_manifest_key("spot", symbol, date)
            if store.exists(key):
                for gap in orjson.loads(store.get_bytes(key)).get("gaps", []):
                    if gap.get("reanchored_at") is not None:
                        unusable.append((int(gap["first_id"]), int(gap["reanchored_at"])))
        missing: dict[str, int] = {}
        covered_gaps: dict[str, list[tuple[int, int, bool]]] = {}
        for stream in STREAMS:
            st = stats[(stream, symbol)]
            missing[stream] = sum(
                1
                for first, last in st.intervals
                if not all(covered(joined, a, b) for a, b in subtract(first, last, unusable))
            )
            covered_gaps[stream] = [(a, b, covered(joined, a, b)) for a, b in st.gaps]
        out[symbol] = MergedSummary(
            rows=frame.height,
            events=events,
            snapshot_rows=frame.filter(pl.col("is_snapshot")).height,
            by_source={str(k): int(v) for k, v in by_source.items()},
            gaps=gaps,
            parquet_files=files,
            quality_files=quality,
            missing=missing,
            covered_gaps=covered_gaps,
        )
    return out


def quality_line(store_dir: Path, files: Sequence[str]) -> str:
    """Where the data-quality report is (PNG + markdown per symbol-day), or that none was written."""
    if not files:
        return f"Quality:  no report under {store_dir / 'quality'} (the quality asset did not run)"
    pictures = [f for f in files if f.endswith(".png")]
    shown = pictures[0] if pictures else files[0]
    return f"Quality:  {store_dir / 'quality'}  ({len(files)} files, e.g. {store_dir / shown})"


def print_report(
    opts: DemoOptions,
    stats: dict[tuple[str, str], StreamStats],
    merged: dict[str, MergedSummary],
    dates: Sequence[str],
    store_dir: Path,
    dagster_home: Path,
    leftovers: dict[str, list[Path]],
    raw_before: int,
    raw_after: int,
) -> None:
    lines = ["", "=" * 78, f"DEMO REPORT — {opts.seconds:.0f}s captured, dates {', '.join(dates)}", "=" * 78]
    for symbol in opts.symbols:
        m = merged[symbol]
        lines.append(f"{symbol}")
        for stream in STREAMS:
            st = stats[(stream, symbol)]
            gap_text = (
                ", ".join(
                    f"{a}..{b} ({b - a + 1} ids, {'covered by the other stream' if ok else 'NOT covered'})"
                    for a, b, ok in m.covered_gaps[stream][:3]
                )
                or "none"
            )
            lines.append(
                f"  stream {stream}: {st.events} events, {st.snapshots} snapshots, {st.objects} raw objects; gaps: {gap_text}"
            )
        share = ", ".join(f"{k}={v}" for k, v in sorted(m.by_source.items()))
        lines.append(
            f"  merged: {m.events} events, {m.rows} rows ({m.snapshot_rows} snapshot rows); supplied by {share}"
        )
        lost = sum(m.missing.values())
        lines.append(
            f"  merged coverage: {'complete' if not m.gaps else 'gaps ' + fmt_ranges(m.gaps)}; "
            f"ids a stream received but merged lacks: {lost}"
        )
    leftover_count = sum(len(v) for v in leftovers.values())
    lines += [
        "",
        f"Raw objects: {raw_before} before the gated cleanup, {raw_after} after; "
        f"spool files left after SIGTERM: {leftover_count}",
        f"Parquet:  {store_dir / 'merged'}",
        quality_line(store_dir, [f for m in merged.values() for f in m.quality_files]),
        f"Logs:     {opts.data_dir / 'logs'}",
        "",
        "Load it with polars:",
        "    import polars as pl",
        f'    df = pl.scan_parquet("{store_dir}/merged/**/*.parquet", hive_partitioning=True)',
        '    print(df.group_by("symbol", "source").len().collect())',
        "",
        f"Browse the runs:  make ui   (reads {opts.data_dir / 'demo.env'}; Dagster home {dagster_home})",
        "=" * 78,
    ]
    print("\n".join(lines), flush=True)
    bad = [s for s in opts.symbols if sum(merged[s].missing.values())]
    if bad:
        raise DemoError(f"merged output lacks ids a stream received for {', '.join(bad)}")


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


if __name__ == "__main__":
    sys.exit(main())
