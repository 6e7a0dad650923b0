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
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from depth_core.heap import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, MALLOC_TRIM, MALLOPT, limit_heap_arenas

HEAP_MMAP_THRESHOLD = 32 << 20
"""Blocks from this size up are mapped on their own during passes (glibc's largest dynamic threshold)."""
HEAP_TRIM_DURING_PASSES = 256 << 20
"""Free memory at the top of the heap kept during passes, instead of glibc's 128 KiB to 64 MiB."""
HEAP_TRIM_AFTER_PASSES = 64 << 20
"""The top-of-heap free memory kept between passes: where glibc's own thresholds settle in a long process."""


def release_free_memory() -> None:
    """Return the free pages of pyarrow's pool and of the C heap to the OS (live data is untouched)."""
    pa.default_memory_pool().release_unused()
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


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


_heap_passes = 0  # passes running with the heap kept for reuse (threads of one process)


@contextlib.contextmanager
def heap_kept_for_reuse() -> Iterator[None]:
    """glibc keeps the memory a pass frees for the pass's next allocations, instead of handing it to the
    kernel and faulting it in again; at the end of the last pass of the process, :func:`release_free_memory`
    hands it back (the passes call it).

    Why: glibc adjusts its thresholds by itself, but a pass frees in bursts larger than they allow (a batch's
    parsed rows, a part's encoded columns, on several threads), so pages were returned and re-faulted batch
    after batch: ≈ 400 k of a bench day's ≈ 800 k page faults and ≈ 0.5 CPU-s (benchmarks/NOTES.md, eleventh
    session). During passes blocks below 32 MiB come from the heap and up to 256 MiB of free heap top is
    kept; after the last pass the top kept is 64 MiB, about where glibc's own thresholds settle (setting them
    turns glibc's own adjustment off for the process). The pass's threads share the process's heaps
    (:func:`depth_core.heap.limit_heap_arenas`). Does nothing off glibc."""
    global _heap_passes
    mallopt = MALLOPT
    if mallopt is None:
        yield
        return
    limit_heap_arenas()
    with _GC_LOCK:
        if _heap_passes == 0:
            mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
            mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_DURING_PASSES)
        _heap_passes += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _heap_passes -= 1
            if _heap_passes == 0:
                mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_AFTER_PASSES)


@contextlib.contextmanager
def pass_settings() -> Iterator[None]:
    """The process-wide settings a pass (a stream-day validation, a merge) runs under:
    :func:`full_collections_deferred`, :func:`numpy_huge_pages_off` and :func:`heap_kept_for_reuse`."""
    with full_collections_deferred(), numpy_huge_pages_off(), heap_kept_for_reuse():
        yield


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
