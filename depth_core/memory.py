"""Hand memory that earlier work freed back to the operating system.

Freed memory is not returned by itself: glibc keeps freed heap chunks below its (self-raising, up to 32 MiB)
mmap threshold for reuse, and pyarrow's memory pool keeps freed pages too. After a phase that allocated in
proportion to the day (a validation, a merge's planning over every event) that retained memory is as large
as the phase's own peak and stays in the process's RSS for the next phase, so a process running several
phases would grow with the day's length even though its live data does not. Called between phases (never
per file: re-faulting the pages costs CPU).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
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


_GC_LOCK = threading.Lock()
_gc_deferrals = 0  # passes running with full collections deferred (threads of one process)
_gc_saved_threshold = (0, 0, 0)


@contextlib.contextmanager
def full_collections_deferred() -> Iterator[None]:
    """Python's full (oldest-generation) garbage collections are deferred until the pass (a stream-day
    validation, a merge) ends; the young generations are collected as usual.

    Why: a stream-day pass keeps a few records per raw object (``StreamObject``, ``RawObjectRead``, the
    listing) until its reports are written, ~10 tracked objects per object, and each full collection walks
    all of them again and finds nothing to free (5 full collections, ~0.5 CPU-s per benchmark day; the floor
    spends 0.05 s); a merge's three full collections walk every object of the imported libraries (≈ 0.14 s).
    Cyclic garbage that dies young is still freed by the young collections. The thresholds
    are process-wide: they are restored when the last pass of the process ends (a pass in another thread
    shares the deferral); with automatic collection disabled this does nothing."""
    global _gc_deferrals, _gc_saved_threshold
    with _GC_LOCK:
        if _gc_deferrals == 0:
            _gc_saved_threshold = gc.get_threshold()
            young, middle, _oldest = _gc_saved_threshold
            gc.set_threshold(young, middle, 1 << 30)
        _gc_deferrals += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_deferrals -= 1
            if _gc_deferrals == 0:
                gc.set_threshold(*_gc_saved_threshold)


def _numpy_madvise_switch() -> Callable[[bool], bool] | None:
    """numpy's switch for asking the kernel for huge pages (``NUMPY_MADVISE_HUGEPAGE``; None if gone)."""
    try:
        from numpy._core import multiarray
    except ImportError:
        return None
    switch: Callable[[bool], bool] | None = getattr(multiarray, "_set_madvise_hugepage", None)
    return switch


_NUMPY_MADVISE = _numpy_madvise_switch()
_hugepage_passes = 0  # passes running with numpy's huge-page requests off (threads of one process)
_hugepage_saved = True


@contextlib.contextmanager
def numpy_huge_pages_off() -> Iterator[None]:
    """numpy does not ask the kernel for transparent huge pages while the pass (a stream-day validation, a
    merge) runs; restored when the last pass of the process ends, like :func:`full_collections_deferred`.

    Why: numpy ``madvise``s every array of 4 MiB or more for huge pages. Where the kernel's transparent huge
    pages are ``madvise`` (Ubuntu's and Debian's default), each first touch of such an array then faults and
    zeroes a whole 2 MiB page, and a pass allocates and frees arrays of that size for every batch and every
    output file, handing them back between phases (:func:`release_free_memory`). With plain pages a bench
    day's validation + merge spends ≈ 0.75 CPU-s less in the kernel (benchmarks/NOTES.md, tenth session);
    the floor, which keeps its few arrays, does not change. Where huge pages are ``always`` this does
    nothing (the kernel does not wait to be asked)."""
    global _hugepage_passes, _hugepage_saved
    switch = _NUMPY_MADVISE
    if switch is None:
        yield
        return
    with _GC_LOCK:
        if _hugepage_passes == 0:
            _hugepage_saved = switch(False)
        _hugepage_passes += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _hugepage_passes -= 1
            if _hugepage_passes == 0:
                switch(_hugepage_saved)


SIZE_CLASS_ROWS = 1 << 18


def size_classed_empty(n: int, dtype: np.dtype[Any] | type[Any]) -> np.ndarray:
    """``np.empty(n, dtype)`` whose block is ``n`` rounded up to a multiple of :data:`SIZE_CLASS_ROWS` rows.

    For arrays a loop makes afresh at a slightly different length each time (a merge's rows and level reads,
    file after file): blocks of a few sizes are reused by glibc from one round to the next, where blocks of a
    new size each time leave holes behind, and the heap grows with the number of rounds (a bench day's
    validate + merge peaked 50 to 70 MiB lower with size classes: benchmarks/NOTES.md, tenth session). The
    rounded tail is never touched, so it costs address space, not memory."""
    cap = -(-n // SIZE_CLASS_ROWS) * SIZE_CLASS_ROWS
    return np.empty(cap, dtype)[:n]
