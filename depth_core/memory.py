"""Hand memory that earlier work freed back to the operating system.

Freed memory is not returned by itself: glibc keeps freed heap chunks below its (self-raising, up to 32 MiB)
mmap threshold for reuse, and pyarrow's memory pool keeps freed pages too. After a phase that allocated in
proportion to the day (a validation, a merge's planning over every event) that retained memory is as large
as the phase's own peak and stays in the process's RSS for the next phase, so a process running several
phases would grow with the day's length even though its live data does not. Called between phases (never
per file: re-faulting the pages costs CPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

import pyarrow as pa


def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere: macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> None:
    """Return the free pages of pyarrow's pool and of the C heap to the OS (live data is untouched)."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
