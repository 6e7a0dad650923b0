"""One writer per day, guarded in the store: a lease object per market-date that every writing step holds.

Dagster's run queue already allows one run per date (``depth/date`` tag limit in dagster.yaml), but runs of
``depth-pipeline run``/``cleanup`` execute outside the queue, and a second Dagster instance could share the
store; so every step that writes a day's ``validated/``, ``merged/`` or deletes its raw objects first takes
the day's lease ``state/market=<m>/_leases/date=<d>.json`` with a conditional write:

- created with ``put_bytes_if_absent`` (S3 ``If-None-Match: *``); the holder is the Dagster run id, so all
  steps of one run share it (re-entrant) while any other run is refused with an error naming the holder;
- renewed every third of ``DEPTH_LEASE_SECONDS`` by a background thread with ``put_bytes_if_match`` on the
  etag it last wrote, so a lost lease is noticed (the step then fails rather than write on);
- taken over only when it expired, when the Dagster instance says the holding run has finished, or when
  the holder ran on this host and neither its process nor its run worker is alive (a killed
  ``depth-pipeline run`` leaves its run STARTED for ever): a crashed run never blocks its date;
- released by the run's last step (``record_day``, or the cleanup) with ``delete_if_match``.

Between the steps of one run the lease stays held (the run is still writing), covered by the expiry.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg

from depth_core.layout import day_lease_key
from depth_core.names import Market
from depth_store import ObjectNotFoundError, ObjectStore

DEFAULT_LEASE_SECONDS = 600.0
TAG_REFUSED = "depth/refused"  # set on a run the lease turned away before it wrote anything
_FINISHED = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


class LeaseHeldError(RuntimeError):
    """Another run is writing this day."""


def lease_seconds() -> float:
    return float(os.environ.get("DEPTH_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


def _conditional(store: ObjectStore) -> Any:
    """The store's conditional-write methods (``put_bytes_if_absent``, ``put_bytes_if_match``,
    ``delete_if_match``; depth_store's local and S3 backends have them)."""
    return store


def supports_leases(store: ObjectStore) -> bool:
    """Whether the store has conditional writes (every store of depth_store does; wrappers may not)."""
    return callable(getattr(store, "put_bytes_if_absent", None)) and callable(
        getattr(store, "put_bytes_if_match", None)
    )


@dataclass
class Lease:
    """A held lease: its key, holder and the etag of the version this holder last wrote."""

    key: str
    holder: str
    etag: str
    seconds: float

    def body(self) -> bytes:
        return _body(self.holder, self.seconds)


def _body(holder: str, seconds: float) -> bytes:
    now = time.time()
    return json.dumps(
        {
            "holder": holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "run_pid": _run_pid(),  # the run worker (the CLI, the run's process): alive between steps
            "renewed_at": now,
            "expires_at": now + seconds,
        }
    ).encode()


def _current(store: ObjectStore, key: str) -> tuple[dict[str, Any], str] | None:
    """The lease's content and etag (None when absent). Read, then head: if the two disagree a writer
    came in between and the caller's compare-and-swap on this etag fails, so it simply tries again."""
    try:
        data = store.get_bytes(key)
    except ObjectNotFoundError:
        return None
    info = store.head(key)
    if info is None or not info.etag:
        return None
    try:
        content = json.loads(data)
    except ValueError:
        content = {}
    return (content if isinstance(content, dict) else {}), info.etag


def _holder_finished(instance: dg.DagsterInstance | None, holder: str) -> bool:
    if instance is None:
        return False
    try:
        run = instance.get_run_by_id(holder)
    except Exception:  # not a run id of this instance
        return False
    return run is not None and run.status in _FINISHED


def _run_pid() -> int:
    """The run worker's pid: the parent of a multiprocess-executor step process, else this process."""
    return os.getppid() if multiprocessing.parent_process() is not None else os.getpid()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _holder_dead(content: dict[str, Any]) -> bool:
    """Whether the holder ran on this host and neither its step process nor its run worker (the CLI or the
    run's process) is alive any more — a killed ``depth-pipeline run`` leaves its run
    STARTED in the instance forever, so its lease would otherwise block the date until it expires."""
    if content.get("host") != socket.gethostname():
        return False
    pids = [int(p) for p in (content.get("pid"), content.get("run_pid")) if isinstance(p, int) and p > 1]
    return bool(pids) and not any(_pid_alive(p) for p in pids)


def acquire(
    store: ObjectStore,
    market: Market,
    date: str,
    holder: str,
    *,
    instance: dg.DagsterInstance | None = None,
    seconds: float | None = None,
) -> Lease:
    """Take (or, for the same holder, renew) the day's lease; raises LeaseHeldError naming the holder."""
    key = day_lease_key(market, date)
    seconds = lease_seconds() if seconds is None else seconds
    for _attempt in range(5):
        info = _conditional(store).put_bytes_if_absent(key, _body(holder, seconds))
        if info is not None and info.etag:
            return Lease(key, holder, info.etag, seconds)
        current = _current(store, key)
        if current is None:
            continue  # released in between: try to create it again
        content, etag = current
        other = str(content.get("holder", "?"))
        expired = float(content.get("expires_at", 0) or 0) < time.time()
        if other == holder or expired or _holder_finished(instance, other) or _holder_dead(content):
            info = _conditional(store).put_bytes_if_match(key, _body(holder, seconds), etag)
            if info is not None and info.etag:
                return Lease(key, holder, info.etag, seconds)
            continue  # someone else renewed or took it in between: look again
        until = time.strftime("%H:%M:%S UTC", time.gmtime(float(content.get("expires_at", 0) or 0)))
        raise LeaseHeldError(
            f"{date} is being written by run {other} (host {content.get('host', '?')}, pid "
            f"{content.get('pid', '?')}; lease {key} valid until {until} unless renewed): one writer per "
            "day — wait for that run to finish, then run again"
        )
    raise LeaseHeldError(f"could not take the lease {key}: it kept changing (another writer is active)")


def renew(store: ObjectStore, lease: Lease) -> bool:
    """Extend the lease; False if it is no longer ours (taken over after expiring, or released)."""
    info = _conditional(store).put_bytes_if_match(lease.key, lease.body(), lease.etag)
    if info is None or not info.etag:
        return False
    lease.etag = info.etag
    return True


def release_day_lease(store: ObjectStore, market: Market, date: str, holder: str) -> bool:
    """Delete the day's lease if ``holder`` holds it (the last step of a run); True if it was released."""
    if not supports_leases(store):
        return False
    key = day_lease_key(market, date)
    current = _current(store, key)
    if current is None or str(current[0].get("holder")) != holder:
        return False
    return bool(_conditional(store).delete_if_match(key, current[1]))


@contextlib.contextmanager
def hold(
    store: ObjectStore,
    market: Market,
    date: str,
    holder: str,
    *,
    instance: dg.DagsterInstance | None = None,
    seconds: float | None = None,
    release: bool = False,
) -> Iterator[Lease | None]:
    """Hold the day's lease for the block, renewing it in the background; fail if it was lost meanwhile.

    ``release`` deletes it at the end (a writer with no later step: the cleanup, the CLI's direct work)."""
    if not supports_leases(store):
        yield None
        return
    lease = acquire(store, market, date, holder, instance=instance, seconds=seconds)
    lost = threading.Event()
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(lease.seconds / 3):
            if not renew(store, lease):
                lost.set()
                return

    thread = threading.Thread(target=keep, name=f"depth-lease-{date}", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()
        if release and not lost.is_set():
            _conditional(store).delete_if_match(lease.key, lease.etag)
    if lost.is_set():
        raise LeaseHeldError(
            f"the lease {lease.key} of run {holder} was taken over while it was writing (it was not renewed "
            f"in time): its output of {date} may be overwritten; run the day again"
        )


@contextlib.contextmanager
def day_lease(
    store: ObjectStore,
    market: Market,
    date: str,
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    *,
    release: bool = False,
) -> Iterator[Lease | None]:
    """``hold`` for a step of a Dagster run: the run id holds it; a refusal fails the step clearly."""
    try:
        with hold(
            store, market, date, context.run.run_id, instance=context.instance, release=release
        ) as lease:
            yield lease
    except LeaseHeldError as exc:
        # the run wrote nothing: say so on the run, so the cleanup gate does not count it as a failed merge
        context.instance.add_run_tags(context.run.run_id, {TAG_REFUSED: "lease"})
        raise dg.Failure(description=str(exc), metadata={"lease": day_lease_key(market, date)}) from exc
