"""The collector's heap settings take (glibc), through the project's one binding of glibc's allocator."""

from __future__ import annotations

import subprocess
import sys

import pytest

from depth_core.heap import MALLOPT


@pytest.mark.skipif(MALLOPT is None, reason="glibc only")
def test_the_collector_keeps_freed_memory_for_reuse() -> None:
    # a child: the settings are process-wide and stay
    child = "from collectors.memory import keep_freed_memory; print(keep_freed_memory(64 << 20))"
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
