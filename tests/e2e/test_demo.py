"""``make demo`` tried as a new user would: in a fresh clone, with a shortened capture.

By default the clone's ``.venv`` reuses this checkout's installed packages (a ``.pth`` file; the
clone's own code comes first), so the test costs the demo's time, not an install. Under ``-m soak``
a second test runs ``make demo`` with nothing prepared, installing the pinned set from the package
registries exactly as the README says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.fixtures.e2e import REPO_ROOT

DEMO_SECONDS = "20"


def _clone(tmp_path: Path) -> Path:
    clone = tmp_path / "fresh-clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(clone)], check=True)
    return clone


def _reuse_installed_packages(clone: Path) -> None:
    """A venv in the clone that sees this checkout's dependencies but imports the clone's own code."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = Path(sysconfig.get_paths()["purelib"])
    clone_site = next((venv / "lib").glob("python3*/site-packages"))
    # Plain path lines: the clone first, then the dependencies (no .pth of this checkout is executed,
    # so its editable finder never shadows the clone's packages).
    (clone_site / "_e2e_clone.pth").write_text(f"{clone}\n{site_packages}\n")
    bin_dir = Path(sys.executable).parent
    clone_python = venv / "bin" / "python"
    for script in bin_dir.iterdir():
        if not script.is_file() or (venv / "bin" / script.name).exists():
            continue
        try:
            text = script.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if not text.startswith("#!") or "python" not in text.splitlines()[0]:
            continue
        target = venv / "bin" / script.name
        target.write_text(f"#!{clone_python}\n" + text.split("\n", 1)[1])
        target.chmod(0o755)
    (venv / ".installed").touch()  # the Makefile's install stamp: newer than pyproject.toml and the lock


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args and str(os.getpid()) != cmdline.parent.name:
            found.append(f"{cmdline.parent.name}: {args[:200]}")
    return found


def _run_demo(clone: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPTH_", "DAGSTER_HOME", "VIRTUAL_ENV"))}
    env["DEMO_SECONDS"] = DEMO_SECONDS
    env["PATH"] = f"{clone / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(
        ["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _check_report(clone: Path, result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"make demo failed ({result.returncode}):\n{out[-6000:]}"
    assert "DEMO REPORT" in out, out[-4000:]
    for stream in ("eu-1", "ap-1"):
        counts = [int(n) for n in re.findall(rf"stream {stream}: (\d+) events", out)]
        assert len(counts) == 2 and all(n > 0 for n in counts), (
            f"no events reported for {stream}:\n{out[-4000:]}"
        )
    # eu-1's outage left it a gap that ap-1 covered, and the merge kept everything either stream received.
    assert re.search(r"stream eu-1: .*gaps: \d+\.\.\d+ \(\d+ ids, covered by the other stream\)", out), out[
        -4000:
    ]
    assert "NOT covered" not in out
    assert out.count("ids a stream received but merged lacks: 0") == 2, out[-4000:]
    assert "merged coverage: complete" in out
    assert "pl.scan_parquet(" in out and "make ui" in out
    parquet = list((clone / "demo-data" / "store" / "merged").rglob("*.parquet"))
    assert parquet, "no merged Parquet in the demo store"
    leftovers = _processes_mentioning(str(clone))
    assert not leftovers, f"processes left behind by make demo: {leftovers}"


def test_make_demo_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    _reuse_installed_packages(clone)
    result = _run_demo(clone, timeout=240)
    _check_report(clone, result)


@pytest.mark.soak
def test_make_demo_in_a_fresh_clone_with_a_real_install(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    result = _run_demo(clone, timeout=900)
    _check_report(clone, result)
    assert (clone / ".venv" / "bin" / "depth-collector").exists()
