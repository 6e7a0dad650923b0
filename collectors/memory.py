"""Keep the memory the spool backlog frees for reuse instead of giving it back to the kernel.

Why: every received line is a new ~1.5 KB bytes object, freed by the spool writer a few milliseconds
later in a batch of up to ``--spool-max-pending-bytes``. glibc's malloc returns the top of its heap to
the kernel whenever more than 128 KiB of it is free (``M_TRIM_THRESHOLD``) and serves the 256 KiB socket
reads with ``mmap``, so the same memory was unmapped and faulted in again (zeroed by the kernel) at every
batch: page faults cost CPU per message. With the backlog bounded by flow control, keeping that much
freed memory is bounded too. Only glibc has ``mallopt``; elsewhere this does nothing.
"""

from __future__ import annotations

from collectors import logs
from depth_core.heap import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, MALLOPT

# allocations above this still get their own mapping (returned to the kernel when freed)
MMAP_THRESHOLD = 4 * 1024 * 1024


def keep_freed_memory(max_pending_bytes: int) -> bool:
    """Let the heap keep up to a few backlogs' worth of freed memory; True if glibc took the settings."""
    if MALLOPT is None:
        return False
    # the loop's lines (up to one backlog), the writer's batch (another) and their slack
    trim = min(4 * max_pending_bytes + 64 * 1024 * 1024, 2**31 - 1)
    ok = bool(MALLOPT(M_TRIM_THRESHOLD, trim)) and bool(MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not ok:
        logs.info("malloc_tuning_unavailable")
    return ok
