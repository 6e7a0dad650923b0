"""The demo's processes: each child in its own process group with its output in a log, stopped in
``finally`` blocks and at exit; steps run to completion; waiting with a clear failure."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


# ----------------------------------------------------------------------------------------------- output


_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress line with the elapsed time, flushed at once so ``make`` shows it live."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


# -------------------------------------------------------------------------------------------- processes


def entry_point(module: str, function: str = "main") -> list[str]:
    """Run a console script's function with this interpreter (works without ``.venv/bin`` scripts)."""
    return [sys.executable, "-c", f"import sys; from {module} import {function} as m; sys.exit(m())"]


@dataclass
class Child:
    """A child process in its own process group, with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        """Signal the whole group, wait, then kill what is left; returns the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {timeout:.0f}s: killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group
        if self.proc.poll() is None:
            self.proc.wait(10)
        self.log_file.close()
        return self.proc.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])


def _spawn(argv: Sequence[str], env: dict[str, str], log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``argv`` from the repository root with its output in ``log_file``, in its own process group
    (one killpg stops it and its children)."""
    return subprocess.Popen(
        list(argv),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,
    )


class Children:
    """Every process the demo started; ``stop_all`` is idempotent and also registered with atexit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        atexit.register(self.stop_all)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        proc = _spawn(argv, env, log_file)
        child = Child(name, proc, log_path, log_file)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if not child.log_file.closed:
                child.stop(signal.SIGTERM, timeout=20)


def run_step(name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path, timeout: float) -> str:
    """Run a command to completion in its own process group; its output goes to a log and is returned."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        proc = _spawn(argv, env, log_file)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise DemoError(f"{name} did not finish within {timeout:.0f}s (log: {log_path})") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    output = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join("    " + line for line in output.splitlines()[-25:])
        raise DemoError(f"{name} failed with exit status {proc.returncode} (log: {log_path}):\n{tail}")
    return output


def wait_for(
    predicate_desc: str, predicate: Callable[[], bool], timeout: float, child: Child | None = None
) -> None:
    """Poll ``predicate()`` until true; fail clearly (with the child's log) when it is not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if child is not None and child.proc.poll() is not None:
            raise DemoError(
                f"{child.name} exited with status {child.proc.returncode} while waiting for "
                f"{predicate_desc} (log: {child.log_path}):\n{child.tail()}"
            )
        time.sleep(0.1)
    tail = f":\n{child.tail()}" if child else ""
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {predicate_desc}{tail}")
