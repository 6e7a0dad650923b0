"""cryptofeed's Binance L2 feed taking frames from our local sender (child of the collector benchmark).

cryptofeed has no option for another Binance address, but its endpoints are class attributes, so a
subclass that overrides ``websocket_endpoints`` and ``rest_endpoints`` points the unmodified feed at
the local sender (which also answers ``/api/v3/exchangeInfo`` and ``/api/v3/depth``). The callback only
counts; everything cryptofeed does per message (JSON parse, Decimal levels, order-book update) is
measured. ``python -m benchmarks.cryptofeed_feed WS_URL HTTP_URL COUNT``.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from typing import Any

from benchmarks.common import emit


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ws_url, http_url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from cryptofeed import FeedHandler
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import L2_BOOK
    from cryptofeed.exchanges import Binance

    class LocalBinance(Binance):
        websocket_endpoints = [WebsocketEndpoint(ws_url)]
        rest_endpoints = [
            RestEndpoint(
                http_url, routes=Routes("/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}")
            )
        ]

    warmup = min(5000, count // 10)
    state: dict[str, Any] = {"n": 0}

    async def on_book(book: Any, receipt_ts: float) -> None:
        state["n"] += 1
        n = state["n"]
        if n == warmup:
            state["t0"], state["c0"] = time.perf_counter(), _cpu()
        elif n == count:
            state["t1"], state["c1"] = time.perf_counter(), _cpu()
            asyncio.get_running_loop().stop()

    fh = FeedHandler(config={"log": {"disabled": True}, "uvloop": False})
    fh.add_feed(LocalBinance(symbols=["BTC-USDT"], channels=[L2_BOOK], callbacks={L2_BOOK: on_book}))
    fh.run(start_loop=True, install_signal_handlers=False)
    n = count - warmup
    wall, cpu = state["t1"] - state["t0"], state["c1"] - state["c0"]
    emit(
        {
            "messages": n,
            "wall_window_s": wall,
            "cpu_window_s": cpu,
            "msgs_per_s": n / wall,
            "cpu_us_per_msg": cpu / n * 1e6,
        }
    )


if __name__ == "__main__":
    main()
