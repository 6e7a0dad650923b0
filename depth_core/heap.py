"""glibc's allocator controls (``mallopt``, ``malloc_trim``), and how many heaps a process's threads share.

Standard library only, so that a process can limit its heaps before numpy, polars or pyarrow start threads:
glibc gives each new thread a heap (an *arena*) of its own, up to 8 per core, and fixes that limit the
first time a thread needs an arena; polars' and pyarrow's imports already start threads that take four of
them. So a pipeline process calls :func:`limit_heap_arenas` first thing (``depth_pipeline/__init__.py``,
the benchmark's children), and every pass calls it again, which limits what it still can.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable
from typing import Any


def glibc_function(name: str, argtypes: list[Any]) -> Any:
    """A function of glibc's allocator (``malloc_trim``, ``mallopt``), typed; None elsewhere (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    function = getattr(libc, name, None)
    if function is None:
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


MALLOC_TRIM: Callable[[int], int] | None = glibc_function("malloc_trim", [ctypes.c_size_t])
MALLOPT: Callable[[int, int], int] | None = glibc_function("mallopt", [ctypes.c_int, ctypes.c_int])
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8

HEAP_ARENAS = 1
"""Heaps the threads of a pipeline process share (glibc's default: up to 8 per core).

Why one: a validation's threads (fetching, decompressing, parsing, writing level parts) each allocated in a
heap of their own, and each heap kept its own freed memory and holes, so a process grew with the length of
the day: a bench day's validate + merge peaked at 819 to 889 MiB with glibc's default, 727 to 770 with one
heap (4 runs each, ``/usr/bin/time``), and spent no more CPU (fewer page faults: the threads reuse each
other's freed blocks). The threads that allocate most hold the GIL or run one at a time, so they rarely
wait for the heap's lock (benchmarks/NOTES.md, fourteenth session)."""

_lock = threading.Lock()
_limited = False


def limit_heap_arenas() -> bool:
    """Threads created from now on share the heaps that exist (at most :data:`HEAP_ARENAS` if none was
    added yet); once per process, for the rest of it (glibc cannot undo it). False off glibc, and where the
    environment sets the limit itself (``MALLOC_ARENA_MAX``, or ``arena_max`` in ``GLIBC_TUNABLES``): the
    operator's choice stands."""
    global _limited
    if (
        MALLOPT is None
        or "MALLOC_ARENA_MAX" in os.environ
        or "arena_max" in os.environ.get("GLIBC_TUNABLES", "")
    ):
        return False
    with _lock:
        if not _limited:
            _limited = bool(MALLOPT(M_ARENA_MAX, HEAP_ARENAS))
        return _limited
