"""Baseline receiver: the cheapest useful websockets client loop (receive frames, count them, nothing else).

Run as a child: ``python -m benchmarks.bare_loop URL COUNT``; prints a JSON report with the
messages/s and the CPU seconds spent between the first and the last frame.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time

from websockets.asyncio.client import connect

from benchmarks.common import emit


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def receive(url: str, count: int) -> dict[str, float]:
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        await ws.recv()
        t0, c0 = time.perf_counter(), _cpu()
        nbytes = 0
        for _ in range(count - 1):
            msg = await ws.recv()
            nbytes += len(msg)
        t1, c1 = time.perf_counter(), _cpu()
    n = count - 1
    return {
        "messages": n,
        "bytes": nbytes,
        "wall_window_s": t1 - t0,
        "cpu_window_s": c1 - c0,
        "msgs_per_s": n / (t1 - t0),
        "cpu_us_per_msg": (c1 - c0) / n * 1e6,
    }


def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    emit(asyncio.run(receive(url, count)))


if __name__ == "__main__":
    main()
