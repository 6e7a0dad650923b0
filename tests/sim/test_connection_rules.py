"""Binance's connection rules on short clocks: max age with serverShutdown, ping/pong, 5 msg/s, 1024
streams."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from exchange_sim.runner import SimulatorThread


def test_max_connection_age_sends_server_shutdown_then_disconnects(make_simulator: Any) -> None:
    """The 24 h rule on a compressed clock: age 1.5 s, notice 1 s before."""
    sim = make_simulator(symbols=["BTCUSDT"], max_connection_age_s=1.5, shutdown_notice_s=1.0)

    async def run() -> tuple[list[dict[str, Any]], int | None]:
        frames: list[dict[str, Any]] = []
        async with websockets.connect(sim.ws_url + "/stream?streams=btcusdt@depth@100ms") as ws:
            try:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            except ConnectionClosed as exc:
                return frames, exc.rcvd.code if exc.rcvd else None

    frames, code = asyncio.run(run())
    assert code == 1001
    notices = [i for i, f in enumerate(frames) if f.get("e") == "serverShutdown"]
    assert len(notices) == 1
    # depth events keep flowing between the notice and the disconnect
    assert any("stream" in f for f in frames[notices[0] + 1 :])


def test_connection_without_pong_is_dropped_and_one_with_pong_stays(make_simulator: Any) -> None:
    sim = make_simulator(symbols=["BTCUSDT"], ping_interval_s=0.2, pong_timeout_s=0.4)
    port = sim.port

    # a raw client that completes the handshake and then never answers the server's pings
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    deadline = time.monotonic() + 10
    closed = False
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            closed = True
            break
        received += chunk
    sock.close()
    assert received.startswith(b"HTTP/1.1 101")
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body[:1] == b"\x89"  # the server pinged us
    assert closed, "the server kept a connection that never answered pings"
    assert b"\x88" in body  # and closed it with a close frame (1011 keepalive ping timeout)

    async def answering_client() -> int:
        async with websockets.connect(sim.ws_url + "/ws/btcusdt@depth@100ms", ping_interval=None) as ws:
            n = 0
            end = time.monotonic() + 1.5  # several ping timeouts long
            while time.monotonic() < end:
                await asyncio.wait_for(ws.recv(), 5)
                n += 1
            return n

    assert asyncio.run(answering_client()) > 10
    assert [c["path"] for c in sim.control.connections()] == []


def test_more_than_five_incoming_messages_per_second_disconnects(simulator: SimulatorThread) -> None:
    async def run(count: int) -> tuple[list[dict[str, Any]], int | None]:
        replies: list[dict[str, Any]] = []
        async with websockets.connect(simulator.ws_url + "/ws") as ws:
            for i in range(count):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            try:
                while len(replies) < count:
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            except ConnectionClosed as exc:
                return replies, exc.rcvd.code if exc.rcvd else None
        return replies, None

    replies, code = asyncio.run(run(5))
    assert code is None and [r["id"] for r in replies] == [0, 1, 2, 3, 4]
    replies, code = asyncio.run(run(6))
    assert code == 1008 and len(replies) == 5


def test_stream_count_limit_per_connection(simulator: SimulatorThread) -> None:
    names = [f"sym{i}usdt@depth@100ms" for i in range(1025)]

    async def subscribe() -> list[dict[str, Any]]:
        out = []
        async with websockets.connect(simulator.ws_url + "/ws", max_size=None) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names[:1024], "id": 1}))
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names[1024:], "id": 2}))
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        return out

    ok, refused = asyncio.run(subscribe())
    assert ok == {"result": None, "id": 1}
    assert refused["id"] == 2 and refused["error"]["code"] == 2


def test_stream_count_limit_in_url(make_simulator: Any) -> None:
    # 1025 names do not fit in a request line (414), so the URL rule is shown on a lower limit
    sim = make_simulator(max_streams_per_connection=10)
    names = [f"sym{i}usdt@depth@100ms" for i in range(11)]

    async def too_many_in_url() -> None:
        async with websockets.connect(sim.ws_url + "/stream?streams=" + "/".join(names)):
            pass

    with pytest.raises(InvalidStatus) as info:
        asyncio.run(too_many_in_url())
    assert info.value.response.status_code == 400
