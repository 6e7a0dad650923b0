"""docs/analysts.md runs as written: its python blocks in order (one namespace) and its depth-export
commands."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from depth_store import open_store
from tests.analysts import synth
from tests.fixtures.paths import REPO_ROOT

DOC = REPO_ROOT / "docs" / "analysts.md"
_BLOCK_RE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK_RE.findall(DOC.read_text()) if lang == language]


def test_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_dir = tmp_path / "store"
    data = synth.generate(days=("2026-11-23", "2026-11-24"), events_per_day=1500, seed=17)
    synth.write(open_store(str(store_dir)), data)
    monkeypatch.setenv("DEPTH_STORE_URL", str(store_dir))
    monkeypatch.chdir(tmp_path)
    python_blocks = blocks("python")
    commands = [
        line for block in blocks("bash") for line in block.splitlines() if line.startswith("depth-export")
    ]
    assert len(python_blocks) >= 8 and len(commands) == 2
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict[str, object] = {"__name__": "analysts_doc"}
    ran_exports = False
    for i, code in enumerate(python_blocks):
        if "exports/" in code and not ran_exports:  # the shell commands come before the block that reads them
            for command in commands:
                done = subprocess.run(
                    shlex.split(command), env=env, capture_output=True, text=True, timeout=120
                )
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            ran_exports = True
        try:
            exec(compile(code, f"{DOC.name}[python block {i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"python block {i} of {DOC.name} failed: {exc!r}\n{code}") from exc
    assert ran_exports
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == [
        "binance_incremental_book_L2_2026-11-23_BTCUSDT.csv.gz",
        "binance_incremental_book_L2_2026-11-24_BTCUSDT.csv.gz",
        "spot_btcusdt_20261124.npz",
    ]
