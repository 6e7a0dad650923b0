"""Shared pytest configuration. Fixtures live in tests/fixtures/ modules, one per real service."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.paths",
    "tests.fixtures.moto",
    "tests.fixtures.simulator",
    "tests.fixtures.collector",
    "tests.fixtures.dagster",
    "tests.fixtures.postgres",
    "tests.fixtures.e2e",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
