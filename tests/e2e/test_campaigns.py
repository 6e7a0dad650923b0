"""Fault campaigns through the whole system: simulator, collectors, moto S3, Dagster pipeline, cleanup.

One run of the system carries many faults, one after another or overlapping, so the setup is paid once
(the e2e folder must stay within its time budget). After the faults, every campaign asserts the same
invariants:

1. every update id that any stream stored is in the merged output;
2. every gap in the merged output was missed by every stream, and the coverage manifest records it;
3. no raw object was deleted unless a merge listed it and its events are in the merged output;
4. the collector's metrics account for every message: frames counted == lines stored + lines dropped.

Every link goes through a fault-injecting TCP proxy (``exchange_sim/tcp_proxy.py``); faults on the
exchange side come from the simulator's control API. The long versions (a 60 s store outage, hours of
exchange time) are marked ``soak``.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from depth_store import ObjectStore
from exchange_sim.control import SimControl
from tests.fixtures.e2e import (
    E2ESystem,
    ManagedProcess,
    MergedDay,
    RawInventory,
    assert_cleanup_safe,
    assert_gaps_are_real_and_recorded,
    assert_nothing_lost,
    metric_sum,
    read_merged_day,
    wait_until,
)

SYMBOL = "BTCUSDT"
SPEED = "8"  # exchange time runs 8x: 80 events/s per symbol at @depth@100ms


def _clock_skew_dir(root: Path) -> Path:
    """A ``sitecustomize`` that shifts a process's wall clock by ``E2E_CLOCK_SKEW_S`` seconds."""
    folder = root / "skew"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import os, time\n"
        "_off = int(float(os.environ.get('E2E_CLOCK_SKEW_S', '0')) * 1e9)\n"
        "if _off:\n"
        "    _tn, _t = time.time_ns, time.time\n"
        "    time.time_ns = lambda: _tn() + _off\n"
        "    time.time = lambda: _t() + _off / 1e9\n"
    )
    return folder


class Timeline:
    """Waits measured in exchange events (a condition on the simulator), not in sleeps."""

    def __init__(self, ctl: SimControl) -> None:
        self.ctl = ctl

    def events(self) -> int:
        return int(self.ctl.status()["events_generated"])

    def run_for(self, events: int, timeout: float = 60) -> None:
        target = self.events() + events
        wait_until(f"{events} more exchange events", lambda: self.events() >= target, timeout, interval=0.05)


def _connection_of(ctl: SimControl, path_prefix: str) -> int:
    """The simulator connection id of the collector whose websocket path starts with ``path_prefix``."""

    def mine() -> list[dict[str, object]]:
        return [c for c in ctl.connections() if str(c["path"]).startswith(path_prefix)]

    wait_until(f"a simulator connection on {path_prefix}", lambda: bool(mine()), 30)
    return int(max(mine(), key=lambda c: int(str(c["id"])))["id"])  # type: ignore[call-overload]


def _wait_receiving(system: E2ESystem, stream: str) -> None:
    """A (re)started collector is connected and recording depth frames again."""

    def receiving() -> bool:
        m = system.metrics(stream)
        return metric_sum(m, "depth_collector_messages_total", symbol=SYMBOL, kind="depth") >= 5

    wait_until(f"{stream} to receive depth frames", lambda: _quietly(receiving), 60)


def _live(system: E2ESystem, stream: str) -> bool:
    """The collector received a depth frame within the last half second."""
    age = metric_sum(system.metrics(stream), "depth_collector_last_message_age_seconds", symbol=SYMBOL)
    return 0 < age < 0.5


def _stop(system: E2ESystem, stream: str) -> tuple[dict[str, float], str]:
    """Cut the stream's exchange link, read its final metrics and session, stop it with SIGTERM."""
    system.ws_proxy[stream].set_mode("refuse")
    proc = system.collectors[stream]
    seen: list[tuple[float, float]] = []

    def quiet() -> bool:
        """Its counters stopped moving: every frame that got through the cut link has been handled."""
        m = system.metrics(stream)
        seen.append(
            (
                metric_sum(m, "depth_collector_messages_total", symbol=SYMBOL, kind="depth"),
                metric_sum(m, "depth_collector_spool_dropped_lines_by_symbol_total", symbol=SYMBOL),
            )
        )
        return len(seen) >= 2 and seen[-1] == seen[-2]

    wait_until(f"{stream}'s counters to settle after its link was cut", quiet, 30, interval=0.3)
    metrics = system.metrics(stream)
    session = next(
        k.split('session="')[1].split('"')[0] for k in metrics if k.startswith("depth_collector_info{")
    )
    status = proc.terminate(timeout=90)
    assert status == 0, f"{stream} exited {status} on SIGTERM:\n{proc.output()[-3000:]}"
    return metrics, session


def _assert_accounted(inventory: RawInventory, stream: str, metrics: dict[str, float], session: str) -> None:
    """The collector's metrics account for every message: depth frames counted == lines stored + dropped."""
    stored = sum(
        rec.depth_lines_by_symbol.get(SYMBOL, 0)
        for rec in inventory.objects.values()
        if rec.stream == stream and f"-{session}-" in rec.key
    )
    counted = metric_sum(metrics, "depth_collector_messages_total", symbol=SYMBOL, kind="depth")
    dropped = metric_sum(metrics, "depth_collector_spool_dropped_lines_by_symbol_total", symbol=SYMBOL)
    assert counted > 0
    assert counted == stored + dropped, (
        f"{stream} session {session}: {counted} depth frames counted, {stored} stored, {dropped} dropped"
    )


def _assert_books_match_the_exchange(ctl: SimControl, store: ObjectStore, days: list[MergedDay]) -> None:
    """Replaying the merged rows (``depth_core.reader.book_at``) gives the simulator's own book, top 20
    levels a side, after randomly chosen events (before and after the faults and the re-anchor)."""
    from depth_core.reader import book_at

    rng = random.Random(7)
    for day in days:
        # rows after a gap keep book_exact false until the re-anchoring image: the book is exact elsewhere
        exact = day.frame.filter(~pl.col("is_snapshot") & pl.col("book_exact"))
        ends = sorted(exact["last_update_id"].unique().to_list())
        for update_id in rng.sample(ends, min(6, len(ends))):
            bids, asks = book_at(SYMBOL, int(update_id), store=store, depth=20)
            truth = ctl.book(SYMBOL, update_id=int(update_id), limit=20)
            for side, frame in (("bids", bids), ("asks", asks)):
                expected = [(float(price), float(qty)) for price, qty in truth[side]]
                got = list(zip(frame["price"].to_list(), frame["qty"].to_list(), strict=True))
                assert got == expected, (
                    f"{side} after id {update_id}: merged {got[:3]} != exchange {expected[:3]}"
                )


def _assert_no_partial_parquet(system: E2ESystem) -> None:
    """Whatever a killed run left visible is complete: every Parquet object reads back whole."""
    store = system.store()
    for prefix in ("validated/", "merged/"):
        for info in store.list(prefix):
            if info.key.endswith(".parquet"):
                frame = pl.read_parquet(io.BytesIO(store.get_bytes(info.key)))
                assert frame.width > 0, info.key


def _kill_when(
    system: E2ESystem, proc: ManagedProcess, what: str, condition: object, timeout: float = 120
) -> None:
    """Kill -9 ``proc`` the moment ``condition()`` holds, with its store link black-holed first so it
    is caught mid-way (its next request hangs) rather than after it finished."""
    assert callable(condition)
    wait_until(what, lambda: bool(condition()) or not proc.running, timeout, interval=0.02)
    system.pipeline_proxy.set_mode("blackhole")
    proc.kill9()
    system.pipeline_proxy.set_mode("pass")


def _quietly(check: Callable[[], bool]) -> bool:
    """A condition that is false (not an error) while the process is not answering yet."""
    try:
        return check()
    except OSError:
        return False


@pytest.mark.timeout(400)
def test_fault_campaign(e2e_system: Callable[..., E2ESystem]) -> None:
    """kill -9, staggered restarts, store outage / 500s / black hole, malformed frames, a stall, planned
    and forced max-age reconnects at compressed time, a one-stream id drop, a drop on both streams, clock
    skew on one collector, a spool over its disk budget, a late upload, a killed run, a killed cleanup."""
    system: E2ESystem = e2e_system(symbols=[SYMBOL], streams=["eu-1", "ap-1"])
    system.start_simulator("--speed", SPEED, "--max-connection-age", "14", "--seed", "11")
    ctl = SimControl(f"http://127.0.0.1:{system.sim_port}")
    clock = Timeline(ctl)
    skew_env = {"PYTHONPATH": str(_clock_skew_dir(system.root)), "E2E_CLOCK_SKEW_S": "-2.5"}

    common = ("--max-connection-age", "6", "--stall-timeout", "2")
    eu = system.add_collector("eu-1", *common, "--shutdown-grace", "3")
    ap = system.add_collector("ap-1", *common, ws_path="/market", env=skew_env)
    # A third stream, not merged, whose spool budget is far too small while its store is down.
    lo = system.add_collector(
        "lo-1", "--spool-max-bytes", "48K", "--segment-max-bytes", "16K", ws_path="/public"
    )
    system.s3_proxy["lo-1"].set_mode("refuse")
    for stream in ("eu-1", "ap-1"):
        system.wait_for_upload(stream)

    # kill -9 of eu-1; it restarts from its spool
    clock.run_for(40)
    eu.kill9()
    clock.run_for(60)
    eu.start()
    _wait_receiving(system, "eu-1")
    # ap-1 restarted later (SIGTERM: flush, exit 0); the two outages are disjoint
    clock.run_for(80)
    assert ap.terminate(timeout=60) == 0
    clock.run_for(60)
    ap.start()
    _wait_receiving(system, "ap-1")

    # eu-1's store, about 12 s: refused, then 500s, then throttled (503 SlowDown), then a black hole;
    # it keeps collecting into its spool meanwhile
    system.s3_proxy["eu-1"].set_mode("refuse")
    ctl.fault("malformed", "all", count=3)
    clock.run_for(400)
    # a silent id drop on eu-1 only (ap-1 covers it), a stall on ap-1 (it reconnects after 2 s)
    now = ctl.last_update_id(SYMBOL)
    ctl.fault("drop_ids", _connection_of(ctl, "/stream"), symbol=SYMBOL, from_id=now + 200, to_id=now + 600)
    system.s3_proxy["eu-1"].set_mode("http_error", status=500)
    clock.run_for(120)
    system.s3_proxy["eu-1"].set_mode("http_error", status=503)
    clock.run_for(120)
    # the errors really reached eu-1's uploads (its store client may be backing off: wait for one)
    assert system.s3_proxy["eu-1"].wait_for("http_errors", 1, timeout=60), "eu-1 made no upload attempt"
    ctl.fault("stall", _connection_of(ctl, "/market"), seconds=3)
    system.s3_proxy["eu-1"].set_mode("blackhole")
    clock.run_for(320)
    assert system.s3_proxy["eu-1"].wait_for("blackholed", 1, timeout=60), "eu-1 made no upload attempt"
    system.s3_proxy["eu-1"].set_mode("pass")
    system.s3_proxy["lo-1"].set_mode("pass")
    # both streams lose the same ids: one real gap, recorded and re-anchored (both must be live first,
    # or the gap would also hold what one of them missed while reconnecting)
    for stream in ("eu-1", "ap-1"):
        wait_until(f"{stream} to be live", lambda s=stream: _quietly(lambda: _live(system, s)), 60)  # type: ignore[misc]
    now = ctl.last_update_id(SYMBOL)
    common_gap = (now + 300, now + 500)
    ctl.fault("drop_ids", "all", symbol=SYMBOL, from_id=common_gap[0], to_id=common_gap[1])
    clock.run_for(120)

    # the end: ap-1 and lo-1 stop cleanly; eu-1 stops while its store is down (its tail stays spooled).
    # First eu-1 catches up with the store outage above, so what stays spooled is only its tail (after
    # ap-1 stopped), not older segments still retrying, which would make the first merge show a gap.
    def eu_caught_up() -> bool:
        m = system.metrics("eu-1")
        return metric_sum(m, "depth_collector_upload_lag_seconds") < 3

    wait_until("eu-1 to catch up on its uploads", lambda: _quietly(eu_caught_up), 90, interval=0.25)
    ap_metrics, ap_session = _stop(system, "ap-1")
    lo_metrics, lo_session = _stop(system, "lo-1")
    system.s3_proxy["eu-1"].set_mode("refuse")
    eu_metrics, eu_session = _stop(system, "eu-1")
    inventory = RawInventory.read(system.store())
    _assert_accounted(inventory, "ap-1", ap_metrics, ap_session)
    _assert_accounted(inventory, "lo-1", lo_metrics, lo_session)
    assert system.spool_files("eu-1"), (
        "eu-1 was stopped with its store down: its last segments must stay in its spool"
    )

    # what the faults did, as the collectors saw them
    assert metric_sum(lo_metrics, "depth_collector_spool_dropped_lines_total") > 0
    assert "spool_full" in lo.output()
    assert metric_sum(ap_metrics, "depth_collector_clock_warnings_total") >= 1
    assert metric_sum(eu_metrics, "depth_collector_reconnects_total", kind="planned") >= 1
    assert metric_sum(eu_metrics, "depth_collector_gaps_total") >= 1
    for stream in ("eu-1", "ap-1"):
        gaps = inventory.stream_gaps(SYMBOL, stream)
        assert any(a <= common_gap[0] and common_gap[1] <= b for a, b in gaps), (stream, gaps)

    # merge, killed mid-write first: nothing partial is visible, the re-run succeeds
    dates = inventory.dates()
    killed = system.pipeline_process("pipeline-run-killed", "run", "--date", dates[0]).start()
    store = system.store()
    _kill_when(
        system,
        killed,
        "the first pipeline output",
        lambda: any(True for _ in store.list("validated/")) or any(True for _ in store.list("merged/")),
    )
    _assert_no_partial_parquet(system)
    for date in dates:
        status, out = system.pipeline("run", "--date", date)
        assert status == 0, out[-4000:]
    days = [read_merged_day(store, "spot", SYMBOL, date) for date in dates]
    for day in days:
        assert_nothing_lost(inventory, day)
        assert_gaps_are_real_and_recorded(inventory, day)
    assert (
        sum(1 for day in days for gap in day.gaps if gap[0] <= common_gap[1] and common_gap[0] <= gap[1]) == 1
    )
    assert all(gap[0] <= common_gap[1] and common_gap[0] <= gap[1] for day in days for gap in day.gaps), [
        d.gaps for d in days
    ]
    # the merged data is the exchange's book: replayed at random event ends, it equals the simulator's
    _assert_books_match_the_exchange(ctl, store, days)
    system.sim.stop_quietly()  # type: ignore[union-attr]

    # late upload: eu-1 comes back after the merge and uploads the tail its spool held
    merged_keys = set(RawInventory.read(store).objects)
    system.s3_proxy["eu-1"].set_mode("pass")
    eu.start()

    def spool_drained() -> bool:
        m = system.metrics("eu-1")
        return (
            metric_sum(m, "depth_collector_uploaded_objects_total") >= 1
            and metric_sum(m, "depth_collector_upload_pending_objects") == 0
        )

    wait_until("eu-1 to upload what its spool held", lambda: _quietly(spool_drained), 60)
    assert eu.terminate(timeout=60) == 0
    before = RawInventory.read(store)
    late_keys = {k for k, rec in before.objects.items() if rec.stream == "eu-1"} - merged_keys
    assert late_keys, "eu-1's late objects should be in the store"
    inventory.merge_from(before)
    _assert_accounted(inventory, "eu-1", eu_metrics, eu_session)

    # cleanup, killed mid-way first; the re-run finishes it, deletes what the merge listed, keeps the
    # late objects (exit 0) and anything of a stream the pipeline does not merge
    n_merged_raw = sum(1 for k in before.objects if k in merged_keys and "stream=lo-1" not in k)
    killed = system.pipeline_process("pipeline-cleanup-killed", "cleanup", "--date", dates[0]).start()
    _kill_when(
        system,
        killed,
        "the cleanup's first deletion",
        lambda: (
            sum(1 for i in store.list("raw/") if i.key in merged_keys and "stream=lo-1" not in i.key)
            < n_merged_raw
        ),
    )
    for date in dates:
        status, out = system.pipeline("cleanup", "--date", date)
        assert status == 0, out[-4000:]
    after = {i.key for i in store.list("raw/")}
    assert_cleanup_safe(before, after, days)
    assert late_keys <= after, "cleanup deleted objects that arrived after the merge"
    assert {k for k in after if "stream=lo-1" in k} == {k for k in before.objects if "stream=lo-1" in k}
    assert not {k for k in after if k in merged_keys and "stream=lo-1" not in k}, "merged raw objects remain"

    # the re-merge takes the late objects in, carrying over the events of the raw objects the cleanup
    # already deleted from validated/ (depth_core/carryover.py)
    for date in dates:
        status, out = system.pipeline("run", "--date", date)
        assert status == 0, out[-4000:]
    days = [read_merged_day(store, "spot", SYMBOL, date) for date in dates]
    for day in days:
        assert_nothing_lost(inventory, day)
        assert_gaps_are_real_and_recorded(inventory, day)
