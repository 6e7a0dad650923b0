"""The README's first commands, ``make install`` and the console scripts."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_readme_first_commands_are_make_demo_then_make_test() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh|console)\n(.*?)```", text, re.S)  # the first shell block
    assert first_block is not None
    commands = [
        ln.split("#")[0].strip() for ln in first_block.group(1).splitlines() if ln.split("#")[0].strip()
    ]
    assert commands[:2] == ["make demo", "make test"], commands
    assert "./.venv" in text or ".venv" in text


def test_every_make_target_installs_first_and_install_creates_the_repo_venv() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^VENV := \.venv$", makefile, re.M)
    assert "-m venv $(VENV)" in makefile
    assert "-c requirements.lock" in makefile
    targets = dict(re.findall(r"^([a-z][a-z0-9_-]*):(.*)$", makefile, re.M))
    for name in ("install", "demo", "test"):
        assert name in targets, f"make {name} missing"
    for name, prereqs in targets.items():
        if name in ("install", "clean"):
            continue
        assert "install" in prereqs.split(), f"make {name} does not call install first"
    dry = subprocess.run(["make", "-n", "test"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and ".venv/bin/pytest" in dry.stdout, dry.stdout + dry.stderr
    ci = (REPO_ROOT / ".ci" / "run").read_text().split("\n")
    assert [ln for ln in ci if ln.strip() and not ln.startswith("#")][-1].strip() == "make test"


def test_console_scripts_are_in_the_repo_venv() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"depth-collector", "depth-pipeline"} <= set(scripts)
    venv_bin = REPO_ROOT / ".venv" / "bin"
    if Path(sys.executable).parent != venv_bin:
        return  # the suite runs from another interpreter: nothing to say about ./.venv
    for name in scripts:
        assert (venv_bin / name).is_file(), f".venv/bin/{name} missing"
    done = subprocess.run(
        [str(venv_bin / "depth-pipeline"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "cleanup" in done.stdout
