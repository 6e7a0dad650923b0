"""Issue 13's done-when, measured end to end: capture, nightly run, cleanup, checked against the truth.

1. **Capture** (``benchmarks/bench_universe_collector.py``, what ``make universe`` runs): 400 spot symbols at
   heavy-tailed rates from the simulator to two ``depth-collector`` processes (depth 1000, flush 10 s, raw
   layout v2, local file store) for ``--seconds`` (default 480). While it runs, every update id the simulator
   publishes is recorded per symbol (as contiguous id spans: the truth, compact, whatever its length).
2. **Run**: the real CLI, ``depth-pipeline run --date D``, on a hard-linked copy of that store with a fresh
   ``DAGSTER_HOME`` (defaults: multiprocess executor, 25 symbols a step, derived assets on).
3. **Cleanup**: ``depth-pipeline cleanup --date D`` on the same store and instance.
4. **Truth**: every id the simulator published for every symbol inside the window the collectors received
   (first received ``U`` to last received ``u`` over both streams, read from the raw objects before the run)
   is in the merged Parquet's event rows; ids published before the first received frame (before the
   collectors subscribed) or after the last (after they stopped) are counted apart, as legitimately absent.
   After the cleanup no raw object that the merge consumed is left, and the deletes went out in batches
   (``DeleteObjects``: ``DELETE_BATCH`` requests).

Per CLI command: wall, CPU-seconds of every process it started (this process is made a child subreaper, so
step processes and Dagster's helpers are reaped here and ``RUSAGE_CHILDREN`` holds them all), the largest
single process's peak RSS, the sampled peak of the whole process tree's RSS, and the store requests by kind
(``DEPTH_STORE_REQUEST_COUNTS``: each process writes its own counts). The 1-minute load average is recorded
with every figure: the box is shared, so wall under load is an upper bound; CPU-seconds are the cost.

``python -m benchmarks.bench_universe_pipeline [--seconds 480] [--symbols 400]`` (``make universe-pipeline``)
runs all four and exits 1 when the done-when is not met; ``--reuse-capture`` runs 2-4 again on the last
capture (kept pristine in ``artifacts/bench-work/universe-pipeline/capture``). Figures:
``artifacts/universe-pipeline.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gzip
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ARTIFACTS, WORK_DIR, NotAvailableError

WORK = WORK_DIR / "universe-pipeline"
STREAMS = ("uni-a", "uni-b")
TARGET_WALL_S = 15 * 60
RESULT_MD = Path(__file__).with_name("universe_pipeline.md")  # the last full measurement, kept in the repo
PR_SET_CHILD_SUBREAPER = 36
_U_RE = re.compile(rb'"U":(\d+)')
_LU_RE = re.compile(rb'"u":(\d+)')
_SNAP_RE = re.compile(rb'"lastUpdateId":(\d+)')


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class TruthRecorder:
    """The ids the simulator publishes, per symbol, as merged contiguous spans ``[lo, hi]``."""

    def __init__(self) -> None:
        self.spans: dict[str, list[list[int]]] = {}
        self.events: dict[str, int] = {}

    def install(self, sim: Any) -> None:
        for symbol, state in sim.sim.symbols.items():
            spans = self.spans.setdefault(symbol, [])
            self.events.setdefault(symbol, 0)
            original = state.truth.append

            def append(
                ev: Any, _orig: Any = original, _spans: list[list[int]] = spans, _sym: str = symbol
            ) -> None:
                _orig(ev)
                self.events[_sym] += 1
                if _spans and ev.first_id == _spans[-1][1] + 1:
                    _spans[-1][1] = ev.last_id
                else:
                    _spans.append([ev.first_id, ev.last_id])

            state.truth.append = append

    def to_json(self) -> dict[str, Any]:
        return {"spans": self.spans, "events": self.events}


def capture(seconds: float, n_symbols: int) -> dict[str, Any]:
    """The collector benchmark's capture into ``WORK/capture/store`` plus the truth beside it."""
    from benchmarks import bench_universe_collector

    truth = TruthRecorder()
    t0 = time.time()
    figures = bench_universe_collector.run(
        seconds, n_symbols, work=WORK / "capture", on_started=truth.install
    )
    figures["load1_after"] = load1()
    figures["started_utc"] = dt.datetime.fromtimestamp(t0, dt.UTC).isoformat(timespec="seconds")
    (WORK / "capture" / "truth.json").write_text(json.dumps(truth.to_json()))
    (WORK / "capture" / "capture.json").write_text(json.dumps(figures))
    return figures


def received_windows(store: Path) -> dict[str, Any]:
    """Per symbol, from every raw object of both streams: first received U, last received u, the first
    snapshot's lastUpdateId, and the dates the objects cover (the capture's UTC days)."""
    from depth_core.raw_format import RawObjectKey

    lo: dict[str, int] = {}
    hi: dict[str, int] = {}
    snap: dict[str, int] = {}
    dates: set[str] = set()
    for stream in STREAMS:
        for path in sorted((store / "raw" / "market=spot" / f"stream={stream}").rglob("*.ndjson.gz")):
            dates.add(RawObjectKey.parse(str(path.relative_to(store))).date)
            for line in gzip.decompress(path.read_bytes()).split(b"\n"):
                parts = line.split(b" ", 3)
                if len(parts) < 4:
                    continue
                kind, symbol, text = parts[1], parts[2].decode(), parts[3]
                if kind == b"D":
                    u_first = _U_RE.search(text)
                    u_last = _LU_RE.search(text)
                    if u_first is None or u_last is None:
                        continue
                    a, b = int(u_first.group(1)), int(u_last.group(1))
                    lo[symbol] = min(lo.get(symbol, a), a)
                    hi[symbol] = max(hi.get(symbol, b), b)
                elif kind == b"S":
                    m = _SNAP_RE.search(text)
                    if m is not None:
                        snap[symbol] = min(snap.get(symbol, int(m.group(1))), int(m.group(1)))
    return {"lo": lo, "hi": hi, "first_snapshot": snap, "dates": sorted(dates)}


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants once a second (the peak is kept), and
    each one's own peak (VmHWM; RUSAGE_CHILDREN's maximum cannot be reset between two commands)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_mib = 0.0
        self.peak_processes = 0
        self.max_process_hwm_mib = 0.0  # the largest single process's own peak (VmHWM)
        self._halt = threading.Event()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def run(self) -> None:
        while not self._halt.wait(1.0):
            total, n = 0.0, 0
            for p in self._tree():
                try:
                    for line in Path(f"/proc/{p}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) / 1024.0
                            n += 1
                        elif line.startswith("VmHWM:"):
                            self.max_process_hwm_mib = max(
                                self.max_process_hwm_mib, int(line.split()[1]) / 1024.0
                            )
                except OSError:
                    continue
            if total > self.peak_mib:
                self.peak_mib, self.peak_processes = total, n
            self.peak_processes = max(self.peak_processes, n)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _reap_orphans(timeout: float = 30.0) -> None:
    """Wait for every descendant re-parented to this subreaper (their CPU then counts in RUSAGE_CHILDREN)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.2)  # a child still exiting: nothing to await but its exit


def pipeline_command(args: list[str], env: dict[str, str], log: Path, counts: Path) -> dict[str, Any]:
    """Run one ``depth-pipeline`` command; its wall, CPU of all its processes, RSS, store requests."""
    exe = Path(sys.executable).parent / "depth-pipeline"
    shutil.rmtree(counts, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = load1()
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "DEPTH_STORE_REQUEST_COUNTS": str(counts)},
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        code = proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop()
    _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests: dict[str, int] = {}
    processes = 0
    for f in sorted(counts.glob("*.json")) if counts.exists() else []:
        processes += 1
        for kind, n in json.loads(f.read_text())["requests"].items():
            requests[kind] = requests.get(kind, 0) + int(n)
    return {
        "command": "depth-pipeline " + " ".join(args),
        "exit_code": code,
        "wall_s": round(wall, 1),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "user_s": round(after.ru_utime - before.ru_utime, 1),
        "max_process_rss_mib": round(sampler.max_process_hwm_mib),
        "peak_tree_rss_mib": round(sampler.peak_mib),
        "peak_processes": sampler.peak_processes,
        "processes_using_the_store": processes,
        "store_requests": requests,
        "load1_before": load_before,
        "load1_after": load1(),
        "log": str(log),
    }


def step_times(dagster_home: Path) -> dict[str, Any]:
    """From the instance's event log of the (one) run: per step kind (step key without its batch), how many
    steps and their summed time from STEP_START to STEP_SUCCESS; and the distinct step processes (each pays a
    process start, imports and the job's definitions: the fixed cost that the step count multiplies)."""
    import dagster as dg

    kinds: dict[str, dict[str, float]] = {}
    pids: set[int] = set()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for run in instance.get_runs():
            started: dict[str, float] = {}
            for entry in instance.all_logs(
                run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
            ):
                key = entry.step_key or "?"
                if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
                    started[key] = entry.timestamp
                    if entry.dagster_event is not None and entry.dagster_event.pid is not None:
                        pids.add(entry.dagster_event.pid)
                    continue
                kind = key.split("[", 1)[0]
                k = kinds.setdefault(kind, {"steps": 0, "seconds_in_steps": 0.0})
                k["steps"] += 1
                k["seconds_in_steps"] = round(
                    k["seconds_in_steps"] + entry.timestamp - started.get(key, entry.timestamp), 1
                )
    return {"by_kind": kinds, "step_processes": len(pids)}


def merged_coverage(store: Path, date: str) -> dict[str, list[tuple[int, int]]]:
    """Per symbol, the distinct ``[U; u]`` of the merged event rows (snapshot rows excluded), sorted."""
    import polars as pl

    files = sorted((store / "merged" / "market=spot").glob(f"symbol=*/date={date}/*.parquet"))
    if not files:
        return {}
    frame = (
        pl.scan_parquet([str(f) for f in files])
        .filter(~pl.col("is_snapshot"))
        .select("symbol", "first_update_id", "last_update_id")
        .unique()
        .sort("symbol", "first_update_id", "last_update_id")
        .collect()
    )
    out: dict[str, list[tuple[int, int]]] = {}
    for sym, a, b in frame.iter_rows():
        out.setdefault(sym, []).append((a, b))
    return out


def _holes(intervals: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The id ranges of ``[lo, hi]`` that no interval covers."""
    holes = []
    cur = lo - 1
    for a, b in intervals:
        if b < lo:
            continue
        if a > cur + 1:
            holes.append((cur + 1, min(a - 1, hi)))
        cur = max(cur, b)
        if cur >= hi:
            break
    if cur < hi:
        holes.append((cur + 1, hi))
    return [h for h in holes if h[0] <= h[1]]


def check_truth(
    truth: dict[str, Any], windows: dict[str, Any], merged: dict[str, list[tuple[int, int]]]
) -> dict[str, Any]:
    """Every published id inside the received window in the merged output; the rest counted by reason."""
    missing: dict[str, list[tuple[int, int]]] = {}
    not_published_but_received: dict[str, list[tuple[int, int]]] = {}
    before_window = after_window = inside = 0
    symbols_without_output = []
    for sym, spans in sorted(truth["spans"].items()):
        lo, hi = windows["lo"].get(sym), windows["hi"].get(sym)
        if lo is None or hi is None:
            symbols_without_output.append(sym)
            before_window += sum(b - a + 1 for a, b in spans)
            continue
        published_inside = [(max(a, lo), min(b, hi)) for a, b in spans if b >= lo and a <= hi]
        before_window += sum(min(b, lo - 1) - a + 1 for a, b in spans if a < lo)
        after_window += sum(b - max(a, hi + 1) + 1 for a, b in spans if b > hi)
        inside += sum(b - a + 1 for a, b in published_inside)
        gaps = _holes([(a, b) for a, b in published_inside], lo, hi)
        if gaps:  # ids the collectors received that the simulator never published: a broken truth record
            not_published_but_received[sym] = gaps
        holes = []
        for a, b in published_inside:
            holes.extend(_holes(merged.get(sym, []), a, b))
        if holes:
            missing[sym] = holes
        if sym not in merged:
            symbols_without_output.append(sym)
    missing_ids = sum(b - a + 1 for hs in missing.values() for a, b in hs)
    return {
        "symbols": len(truth["spans"]),
        "symbols_merged": len(merged),
        "symbols_without_output": symbols_without_output,
        "ids_published_inside_window": inside,
        "ids_missing_inside_window": missing_ids,
        "missing_examples": {s: h[:3] for s, h in list(missing.items())[:5]},
        "ids_before_first_received": before_window,
        "ids_after_last_received": after_window,
        "truth_record_broken": {s: h[:3] for s, h in list(not_published_but_received.items())[:5]},
    }


def _raw_left(store: Path) -> int:
    return sum(1 for _ in (store / "raw").rglob("*.ndjson.gz")) if (store / "raw").exists() else 0


def pipeline(date: str | None) -> dict[str, Any]:
    """Steps 2-4 on the kept capture."""
    cap = WORK / "capture"
    if not (cap / "truth.json").exists():
        raise NotAvailableError(f"no capture in {cap}: run without --reuse-capture first")
    truth = json.loads((cap / "truth.json").read_text())
    windows = received_windows(cap / "store")
    dates = windows["dates"]
    date = date or dates[-1]
    if len(dates) > 1:
        print(f"warning: the capture spans {dates}; measuring {date} only", file=sys.stderr)
    run_dir = WORK / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    store = run_dir / "store"
    subprocess.run(["cp", "-al", str(cap / "store"), str(store)], check=True)  # raw is never written in place
    raw_before = _raw_left(store)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(run_dir / "dagster_home"),
        "DEPTH_STORE_URL": str(store),
        "DEPTH_STREAMS": ",".join(STREAMS),
        "DEPTH_MARKET": "spot",
    }
    env.pop("DEPTH_SYMBOLS", None)
    # numba's kernels compiled into their cache first, as the pipeline image does at build (deploy/k8s): a
    # cold cache costs ≈ 19 CPU-s per step process, once after every change of the core's code
    subprocess.run([sys.executable, "-m", "depth_pipeline.warm"], check=True, stdout=subprocess.DEVNULL)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    result: dict[str, Any] = {
        "date": date,
        "raw_objects": raw_before,
        "capture": json.loads((cap / "capture.json").read_text()),
    }
    result["run"] = pipeline_command(
        ["run", "--date", date], env, run_dir / "run.log", run_dir / "counts-run"
    )
    result["run"]["steps"] = step_times(run_dir / "dagster_home")
    merged = merged_coverage(store, date)
    result["truth"] = check_truth(truth, windows, merged)
    result["cleanup"] = pipeline_command(
        ["cleanup", "--date", date], env, run_dir / "cleanup.log", run_dir / "counts-cleanup"
    )
    result["cleanup"]["raw_objects_left"] = _raw_left(store)
    reqs = result["cleanup"]["store_requests"]
    result["cleanup"]["deleted_in_batches"] = (
        reqs.get("DELETE_BATCH", 0) > 0 and reqs.get("DELETE", 0) >= raw_before
    )
    result["done_when"] = {
        "all_symbols_merged": result["run"]["exit_code"] == 0
        and result["truth"]["symbols_merged"] == result["truth"]["symbols"],
        "run_within_15_min": result["run"]["wall_s"] <= TARGET_WALL_S,
        "zero_ids_missing": result["truth"]["ids_missing_inside_window"] == 0
        and not result["truth"]["truth_record_broken"],
        "cleanup_removed_merged_raw_in_batches": result["cleanup"]["exit_code"] == 0
        and result["cleanup"]["raw_objects_left"] == 0
        and result["cleanup"]["deleted_in_batches"],
    }
    return result


def markdown(r: dict[str, Any]) -> str:
    run, cl, t = r["run"], r["cleanup"], r["truth"]

    def reqs(x: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in sorted(x["store_requests"].items()) if v)

    steps = run.get("steps", {})
    step_text = "; ".join(
        f"{kind.split('.')[-1]} {k['steps']} x (Σ {k['seconds_in_steps']:.0f} s)"
        for kind, k in steps.get("by_kind", {}).items()
    )
    lines = [
        f"Measured {r['measured_utc']} by `{r['reproduce']}` "
        f"(load average {r['load_at_start']} at the start).",
        "",
        f"Capture: {r['capture']['symbols']} symbols, {r['capture']['seconds'] / 60:.1f} min, "
        f"{r['raw_objects']} raw objects (two streams), date {r['date']}.",
        "",
        "| command | exit | wall | CPU-s (all processes) | peak RSS: one process / whole tree "
        "| store requests | load (1 min) before → after |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in (run, cl):
        lines.append(
            f"| `{x['command']}` | {x['exit_code']} | {x['wall_s'] / 60:.1f} min ({x['wall_s']:.0f} s) "
            f"| {x['cpu_s']:.0f} "
            f"| {x['max_process_rss_mib']} MiB / {x['peak_tree_rss_mib']} MiB "
            f"({x['peak_processes']} processes) "
            f"| {reqs(x)} | {x['load1_before']:.1f} → {x['load1_after']:.1f} |"
        )
    lines += [
        "",
        f"- The run's steps ({steps.get('step_processes', '?')} step processes; "
        "time from step start to success, "
        f"summed, 2 at a time): {step_text}.",
        f"- Truth: {t['symbols_merged']} of {t['symbols']} symbols merged; "
        f"{t['ids_published_inside_window']:,} ids "
        f"published inside the received windows, **{t['ids_missing_inside_window']} missing** "
        "from the merged "
        f"output; legitimately absent: {t['ids_before_first_received']:,} ids published before the first "
        f"received frame (before the collectors subscribed), {t['ids_after_last_received']:,} after the last "
        "(after they stopped).",
        f"- Cleanup: {r['raw_objects'] - cl['raw_objects_left']} of {r['raw_objects']} raw objects "
        f"deleted by {cl['store_requests'].get('DELETE_BATCH', 0)} DeleteObjects request(s) "
        f"({cl['raw_objects_left']} left; "
        "DELETE counts every key deleted, the run's lease object included).",
        "- Done when: "
        + ", ".join(f"{k} {'met' if v else '**not met**'}" for k, v in r["done_when"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    global WORK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=480.0, help="capture length (make universe: 480)")
    ap.add_argument("--symbols", type=int, default=400)
    ap.add_argument("--reuse-capture", action="store_true", help="run the pipeline again on the last capture")
    ap.add_argument(
        "--record",
        action="store_true",
        help=f"write {RESULT_MD.name} even for a re-run or another size (default: full runs that pass)",
    )
    ap.add_argument("--work", type=Path, help=f"working directory (capture/ and run/ in it; default {WORK})")
    ap.add_argument("--date", help="the date to run (default: the capture's last UTC date)")
    args = ap.parse_args(argv)
    WORK = args.work or WORK
    if not args.reuse_capture:
        print(json.dumps(capture(args.seconds, args.symbols)), flush=True)
    load_at_start = Path("/proc/loadavg").read_text().split()[:3]
    r = pipeline(args.date)
    r["measured_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    r["reproduce"] = "make universe-pipeline" + (
        " UNIVERSE_PIPELINE_ARGS=--reuse-capture" if args.reuse_capture else ""
    )
    r["load_at_start"] = " ".join(load_at_start)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "universe-pipeline.json").write_text(json.dumps(r, indent=2))
    print(json.dumps(r, indent=2))
    text = markdown(r)
    print(text)
    if (all(r["done_when"].values()) and args.symbols == 400 and not args.reuse_capture) or args.record:
        RESULT_MD.write_text(text)  # BENCHMARKS.md's universe section includes it (benchmarks/run.py)
    return 0 if all(r["done_when"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
