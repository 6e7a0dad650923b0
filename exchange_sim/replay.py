"""Replay of real recordings (filled in next)."""

from __future__ import annotations

import asyncio
from typing import Any


class ReplayEngine:
    def __init__(self, sim: Any, path: str, snapshot_path: str | None) -> None:
        raise NotImplementedError("replay mode is not implemented yet")

    symbols: dict[str, Any]
    done: asyncio.Event

    async def run(self) -> None: ...
    def on_subscribe(self) -> None: ...
    def start_now(self) -> None: ...
    def snapshot_body(self, symbol: str, limit: int) -> Any: ...
    def last_update_id(self, symbol: str) -> int:
        return 0
    def truth_events(self, symbol: str, from_id: int, to_id: int, max_count: int) -> Any: ...
    def book_body(self, symbol: str, update_id: int, limit: int) -> Any: ...
