"""``SimulatorThread``: the simulator on its own event loop thread, for synchronous code and tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from exchange_sim.control import SimControl
from exchange_sim.server import ExchangeSimulator, SimConfig

T = TypeVar("T")


class SimulatorThread:
    """Start with ``start()`` or ``with SimulatorThread(cfg) as sim:``; always ``stop()`` (idempotent)."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.requested_port = port
        self.sim = ExchangeSimulator(self.config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return self.sim.port

    @property
    def ws_url(self) -> str:
        return self.sim.ws_url

    @property
    def rest_url(self) -> str:
        return self.sim.rest_url

    @property
    def control(self) -> SimControl:
        return SimControl(self.rest_url)

    def start(self, timeout: float = 15.0) -> SimulatorThread:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="exchange-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("exchange simulator did not start in time")
        if self._error is not None:
            raise RuntimeError("exchange simulator failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self.sim.start(self.host, self.requested_port)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.sim.stop()

    def call(self, fn: Callable[[ExchangeSimulator], T], timeout: float = 10.0) -> T:
        """Run ``fn(sim)`` on the simulator's loop (thread-safe access to its state)."""
        assert self.loop is not None

        async def wrapper() -> T:
            return fn(self.sim)

        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        return fut.result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stopping = self.loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimulatorThread({self.config.market}, {self.config.symbols}, {self.ws_url})"


__all__ = ["SimulatorThread"]
