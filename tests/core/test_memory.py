"""How passes use memory: freed heap memory that glibc keeps is handed back to the OS between passes, and
kept for reuse during them; numpy's huge-page requests are off during passes."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from depth_core.heap import MALLOC_TRIM, MALLOPT
from depth_core.memory import _NUMPY_MADVISE, numpy_huge_pages_off, release_free_memory


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(not sys.platform.startswith("linux") or MALLOC_TRIM is None, reason="glibc only")
def test_freed_heap_chunks_are_returned() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunk = 64 << 10  # below the mmap threshold: heap chunks, which free() keeps in the process
    blocks = []
    for _ in range(2048):  # 128 MiB, each page touched
        p = libc.malloc(chunk)
        ctypes.memset(p, 1, chunk)
        blocks.append(p)
    pin = libc.malloc(chunk)  # a live chunk above them: the heap's top cannot shrink by itself
    try:
        for p in blocks:
            libc.free(p)
        held = _rss_kib()
        release_free_memory()
        assert held - _rss_kib() > 96 << 10  # most of the 128 MiB went back
    finally:
        libc.free(pin)


_HEAP_CHILD = """
import ctypes
from depth_core.heap import limit_heap_arenas
from depth_core.memory import heap_kept_for_reuse, release_free_memory

limit_heap_arenas()  # first, as a pipeline process does (mallopt reorders free chunks: blocks must be on top)

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]


def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def touch_and_free(mib):
    blocks = []
    for _ in range(mib):
        p = libc.malloc(1 << 20)
        ctypes.memset(p, 1, 1 << 20)
        blocks.append(p)
    held = rss_kib()
    for p in reversed(blocks):
        libc.free(p)
    return held - rss_kib()


with heap_kept_for_reuse():
    with heap_kept_for_reuse():  # a pass in another thread shares it
        pass
    during = touch_and_free(128)
after = touch_and_free(128)
release_free_memory()
print(during, after)
"""


@pytest.mark.skipif(MALLOPT is None, reason="glibc only")
def test_a_pass_keeps_freed_heap_for_reuse_and_hands_it_back_when_the_last_ends() -> None:
    # a fresh process: its heap has no holes that would serve the blocks from memory already resident
    out = subprocess.run([sys.executable, "-c", _HEAP_CHILD], capture_output=True, text=True, check=True)
    during, after = (int(x) for x in out.stdout.split())
    # during a pass 1 MiB blocks come from the heap, and 128 MiB freed at its top stay (glibc alone keeps
    # at most 64 MiB, and would have mapped each block on its own)
    assert during < 16 << 10
    # after the last pass: the same blocks again (no new memory), and at most 64 MiB of free top is kept
    assert after > 48 << 10


def test_release_is_harmless_to_live_data() -> None:
    import numpy as np
    import polars as pl

    frame = pl.DataFrame({"a": np.arange(1_000_000)})
    release_free_memory()
    assert frame["a"].sum() == 999_999 * 1_000_000 // 2


@pytest.mark.skipif(_NUMPY_MADVISE is None, reason="this numpy has no huge-page switch")
def test_numpy_huge_pages_are_off_during_passes_and_restored_after_the_last() -> None:
    assert _NUMPY_MADVISE is not None
    before = _NUMPY_MADVISE(True)  # the process's setting, as a pass finds it
    try:
        with numpy_huge_pages_off():
            assert _NUMPY_MADVISE(False) is False  # off inside
            with numpy_huge_pages_off():  # a pass in another thread shares it
                pass
            assert _NUMPY_MADVISE(False) is False  # still off: the outer pass runs on
        assert _NUMPY_MADVISE(True) is True  # restored once the last pass ended
        with pytest.raises(RuntimeError), numpy_huge_pages_off():
            raise RuntimeError("a pass that fails")
        assert _NUMPY_MADVISE(True) is True  # restored on failure too
    finally:
        _NUMPY_MADVISE(before)


def test_size_classed_arrays_share_a_block_size_across_nearby_lengths() -> None:
    import numpy as np

    from depth_core.memory import SIZE_CLASS_ROWS, size_classed_empty

    a, b = size_classed_empty(1_000_001, np.int64), size_classed_empty(1_040_000, np.int64)
    assert len(a) == 1_000_001 and len(b) == 1_040_000 and a.dtype == np.int64
    assert a.base is not None and b.base is not None
    assert len(a.base) == len(b.base) == 4 * SIZE_CLASS_ROWS  # one size class: glibc reuses the block
    assert len(size_classed_empty(0, np.bool_)) == 0
    c = size_classed_empty(SIZE_CLASS_ROWS, np.float64)
    assert c.base is None or len(c.base) == SIZE_CLASS_ROWS  # an exact multiple is not rounded further


_ARENAS_CHILD = """
import ctypes, os, sys, tempfile, threading

if sys.argv[1] == "limited":
    import depth_pipeline  # noqa: F401  (what a pipeline step process imports first)
import polars, pyarrow  # noqa: F401,E401  (their imports start threads)

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]

held = []
barrier = threading.Barrier(4)


def work():
    held.append(libc.malloc(1 << 16))  # a thread's first malloc takes its arena
    barrier.wait()


threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
path = tempfile.mktemp()
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""


@pytest.mark.skipif(MALLOPT is None, reason="glibc only")
def test_a_pipeline_process_keeps_its_threads_on_one_heap() -> None:
    from depth_core.heap import HEAP_ARENAS

    def arenas(mode: str, **env: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _ARENAS_CHILD, mode],
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env,
        )
        return int(out.stdout)

    assert arenas("default") > HEAP_ARENAS + 3  # glibc alone: each thread takes a heap of its own
    assert arenas("limited") == HEAP_ARENAS  # imported first, the package holds polars', pyarrow's and ours
    assert arenas("limited", MALLOC_ARENA_MAX="3") == 3  # the operator's own limit stands


@pytest.mark.skipif(MALLOPT is None, reason="glibc only")
def test_the_arena_limit_is_taken_once() -> None:
    from depth_core.heap import limit_heap_arenas

    assert limit_heap_arenas() is True
    assert limit_heap_arenas() is True  # again: harmless
