"""``pip-audit`` of the pinned set (requirements.lock): no known vulnerability.

pip-audit asks PyPI's per-version JSON API (``/pypi/<name>/<version>/json``) for each pin. Where that
service cannot be reached the test skips and says so (an audit that audited nothing must not pass).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK = REPO_ROOT / "requirements.lock"


def vulnerability_service_status() -> str | None:
    """None when pip-audit's service answers; otherwise why not."""
    url = f"https://pypi.org/pypi/pip/{metadata.version('pip')}/json"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return None if resp.status == 200 else f"{url} answered HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except OSError as exc:
        return f"{url} unreachable: {exc}"


def test_pinned_set_has_no_known_vulnerabilities(tmp_path: Path) -> None:
    why = vulnerability_service_status()
    if why is not None:
        pytest.skip(
            f"pip-audit's vulnerability service (PyPI per-version JSON API) is not available here: {why}"
        )
    out = tmp_path / "audit.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "-r",
            str(LOCK),
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "-f",
            "json",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.exists(), f"pip-audit wrote no report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    deps = json.loads(out.read_text())["dependencies"]
    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        pytest.skip(f"pip-audit could audit none of the {len(deps)} pins: {deps[0].get('skip_reason')}")
    vulnerable = {
        f"{d['name']}=={d['version']}": [(v["id"], v.get("fix_versions")) for v in d["vulns"]]
        for d in audited
        if d.get("vulns")
    }
    assert vulnerable == {}, f"vulnerable pins (id, fixed in): {vulnerable}"
