"""Firehose mode (filled in next)."""

from __future__ import annotations

from typing import Any


async def run_firehose(sim: Any) -> None:
    raise NotImplementedError("firehose mode is not implemented yet")
