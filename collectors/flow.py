"""Read flow control: the event loop stops reading sockets while the spool writer is behind.

Why: the event loop receives faster than the writer thread compresses and fsyncs when frames arrive at
firehose rates (or the writer is starved of CPU). Without a bound, the writer's backlog grew to hundreds
of MiB, and its allocation and page faults cost CPU per message. With this, once the backlog
(``Spool.pending_bytes``) passes ``Spool.max_pending_bytes`` after a socket read, every connection's
transport stops reading (``pause_reading``: the kernel's socket buffers and TCP flow control hold the
rest, nothing is dropped) and the writer is woken; as soon as the writer has taken the backlog and it is
under half the mark, the writer asks the loop (``call_soon_threadsafe``) to resume reading.

What must never happen, and why it does not:

- A deadlock: the writer never waits for the loop (it only schedules a callback), and the loop never
  waits for the writer (a pause is a flag and two syscalls per connection).
- Pings starving: a pause lasts until the writer picks up the backlog: it finishes the batch in hand (at
  most one mark's worth), then takes the whole backlog at once and compresses it while the loop reads on
  (≈ 20 ms a pause at the benchmark's 8 MiB firehose; at real rates no pause at all). A pause is ended after
  ``MAX_PAUSE_S`` whatever the writer does (a hung disk), far below websockets' ping timeout (30 s),
  Binance's pong deadline (1 min) and the collector's stall timeout (60 s).
- A stuck or failing writer stalling capture silently: a failing write (disk full, I/O error) still takes
  the lines (counting them as lost, as before), so reading resumes. A writer that takes nothing for
  ``MAX_PAUSE_S`` ends the pause with an error log (``read_pause_timeout``), and no new pause starts
  until the writer takes lines again: memory then grows as it did before flow control, and the gauge
  ``depth_collector_spool_pending_bytes`` shows it. A crashed writer never pauses reading (the collector
  stops with exit 1 anyway).
- Shutdown while paused: stopping disables flow control and resumes every connection (their close
  handshakes need reading); the spool's final flush writes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from collectors import logs
from collectors.spool import Spool

# the longest a pause may last: far below websockets' ping timeout (30 s) and the stall timeout (60 s)
MAX_PAUSE_S = 5.0
# the read_paused log line: at most one a minute, with what happened since the last one
LOG_EVERY_S = 60.0


class Pausable(Protocol):
    """A connection whose socket reading can be paused for the spool (collectors.wsfast)."""

    def pause_for_spool(self) -> None: ...
    def resume_for_spool(self) -> None: ...


class ReadFlow:
    """Pauses and resumes reading of every registered connection; used on the event loop only, except
    :meth:`drained` (the writer thread)."""

    def __init__(self, spool: Spool, *, max_pause_s: float = MAX_PAUSE_S) -> None:
        self.spool = spool
        self.high_water = spool.max_pending_bytes
        self.max_pause_s = max_pause_s
        self.readers: set[Pausable] = set()
        self.paused = False
        self.pause_gen = 0  # increments at every pause; the writer resumes one pause at most once
        self.enabled = True
        self.pauses = 0
        self.timeouts = 0
        self._paused_total_s = 0.0
        self._paused_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: asyncio.TimerHandle | None = None
        self._stuck_taken: int | None = None  # taken_bytes when a pause timed out (no pause until it moves)
        self._log_at = 0.0
        self._logged_pauses = 0
        self._logged_paused_s = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.enabled = True
        self.spool.read_flow = self

    @property
    def paused_seconds(self) -> float:
        """Seconds spent paused in total, the current pause included."""
        now = time.monotonic()
        return self._paused_total_s + (now - self._paused_at if self.paused else 0.0)

    # ---- connections ----------------------------------------------------------------------------

    def add(self, reader: Pausable) -> None:
        self.readers.add(reader)
        if self.paused:
            reader.pause_for_spool()

    def discard(self, reader: Pausable) -> None:
        self.readers.discard(reader)

    # ---- the loop's side ------------------------------------------------------------------------

    def over(self) -> bool:
        """After a socket read: True when the connection must not read on (paused, or the backlog just
        passed the high-water mark, which starts a pause of every connection)."""
        if self.paused:
            return True
        spool = self.spool
        if spool.appended_bytes - spool.taken_bytes <= self.high_water or not self.enabled:
            return False
        if self._stuck_taken is not None:
            if spool.taken_bytes == self._stuck_taken:
                return False  # the writer has not moved since a pause timed out: read on (logged)
            self._stuck_taken = None
            logs.warning("read_pause_writer_moving", pending_bytes=spool.pending_bytes)
        if spool.writer_error is not None or self._loop is None:
            return False
        self._pause()
        return True

    def _pause(self) -> None:
        assert self._loop is not None
        self.pause_gen += 1
        self.paused = True
        self.pauses += 1
        self._paused_at = time.monotonic()
        for reader in self.readers:
            reader.pause_for_spool()
        self.spool.wake_writer()
        self._guard = self._loop.call_later(self.max_pause_s, self._timed_out, self.pause_gen)
        if self._paused_at - self._log_at >= LOG_EVERY_S:
            self._log_at = self._paused_at
            logs.warning(
                "read_paused",
                pending_bytes=self.spool.pending_bytes,
                max_pending_bytes=self.high_water,
                pauses_since_last_log=self.pauses - self._logged_pauses,
                paused_s_since_last_log=round(self.paused_seconds - self._logged_paused_s, 3),
                pauses_total=self.pauses,
                message="the spool writer is behind the receive rate: socket reading pauses until it "
                "catches up (nothing is lost; the socket buffers hold the rest). Frequent pauses at real "
                "rates mean a slow spool disk or a starved CPU (logged at most once a minute)",
            )
            self._logged_pauses = self.pauses
            self._logged_paused_s = self.paused_seconds

    def _resume(self, gen: int) -> None:
        if not self.paused or gen != self.pause_gen:
            return  # that pause is over already (timed out, or stopped)
        self.paused = False
        self._paused_total_s += time.monotonic() - self._paused_at
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        for reader in self.readers:
            reader.resume_for_spool()

    def _timed_out(self, gen: int) -> None:
        if not self.paused or gen != self.pause_gen:
            return
        self.timeouts += 1
        self._stuck_taken = self.spool.taken_bytes
        logs.error(
            "read_pause_timeout",
            paused_s=self.max_pause_s,
            pending_bytes=self.spool.pending_bytes,
            timeouts=self.timeouts,
            message="the spool writer took no lines while reading was paused (hung disk? starved CPU?): "
            "reading resumed, and the backlog grows in memory until the writer moves again",
        )
        self._resume(gen)

    def stop(self) -> None:
        """No more pauses; resume every connection now (their close handshakes read)."""
        self.enabled = False
        self._resume(self.pause_gen)

    # ---- the writer's side ----------------------------------------------------------------------

    def drained(self, gen: int) -> None:
        """Writer thread: pause ``gen``'s backlog is taken; resume reading on the loop."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to resume
            loop.call_soon_threadsafe(self._resume, gen)
