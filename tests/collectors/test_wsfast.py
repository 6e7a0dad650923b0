"""FastTextConnection: text frames read in place give exactly what websockets' recv() gives, in order.

A real websockets server and client (loopback); frame bytes are also fed to the connection's
``data_received`` in random pieces, so every way a frame can be cut across reads is exercised.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import struct
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from collectors.wsfast import FastTextConnection


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One unmasked server-to-client frame."""
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    if n < 126:
        head += bytes((n,))
    elif n < 65536:
        head += bytes((126,)) + struct.pack(">H", n)
    else:
        head += bytes((127,)) + struct.pack(">Q", n)
    return head + payload


def text(i: int, size: int) -> bytes:
    return (b'{"i":%d,"pad":"' % i + b"x" * size)[: max(size, 8)] + b'"}'


async def _silent(ws: ServerConnection) -> None:
    await ws.wait_closed()


def test_frames_cut_anywhere_reach_the_sink_whole_and_in_order() -> None:
    async def go() -> None:
        rng = random.Random(5)
        async with serve(_silent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(
                f"ws://127.0.0.1:{port}", create_connection=FastTextConnection, max_size=2**25
            ) as ws:
                assert isinstance(ws, FastTextConnection) and ws.fast
                got: list[bytes] = []
                sizes = [0, 1, 123, 124, 125, 126, 127, 1400, 65533, 65534, 65535, 65536, 70000]
                sent = [text(i, rng.choice(sizes) if i % 3 else rng.randint(0, 3000)) for i in range(300)]
                stream = b""
                for i, payload in enumerate(sent):
                    stream += frame(0x1, payload)
                    if i % 50 == 7:
                        stream += frame(0x9, b"ping%d" % i)  # answered by websockets, never a message
                # frames that arrive before the reader is ready are kept for it
                early = len(stream) // 3
                ws.data_received(stream[:early])
                ws.set_sink(got.extend)
                i = early
                while i < len(stream):
                    step = rng.choice([1, 2, 3, 9, 10, 11, 200, 1500, 70000])
                    ws.data_received(stream[i : i + step])
                    i += step
                assert got == sent
                assert ws.fast and ws.fast_frames == len(sent) and ws.fallback_reason is None

    asyncio.run(go())


def test_an_unusual_frame_hands_the_rest_to_websockets_in_order() -> None:
    async def go() -> None:
        async with serve(_silent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", create_connection=FastTextConnection) as ws:
                assert isinstance(ws, FastTextConnection)
                got: list[bytes] = []
                ws.set_sink(got.extend)
                stream = frame(0x1, b"one") + frame(0x1, b"two")
                # a fragmented message, a binary one, then plain text again: all websockets' from here
                stream += (
                    frame(0x1, b"thr", fin=False)
                    + frame(0x0, b"ee")
                    + frame(0x2, b"\x00bin")
                    + frame(0x1, b"four")
                )
                for b in range(len(stream)):
                    ws.data_received(stream[b : b + 1])
                assert got == [b"one", b"two"] and not ws.fast
                assert ws.fallback_reason is not None
                rest = [await asyncio.wait_for(ws.recv(decode=False), 5) for _ in range(3)]
                assert rest == [b"three", b"\x00bin", b"four"]

    asyncio.run(go())


def test_messages_sent_with_the_handshake_are_all_received_in_order() -> None:
    """The server sends at once, so the first frames can share a read with the handshake response."""
    count = 2000

    async def handler(ws: ServerConnection) -> None:
        for i in range(count):
            await ws.send(text(i, 1400 if i % 2 else 30).decode())
        await ws.wait_closed()

    async def go() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            for _ in range(3):
                async with connect(
                    f"ws://127.0.0.1:{port}", create_connection=FastTextConnection, compression=None
                ) as ws:
                    assert isinstance(ws, FastTextConnection) and ws.fast
                    got: list[bytes] = []
                    done = asyncio.Event()

                    def sink(
                        payloads: list[bytes], got: list[bytes] = got, done: asyncio.Event = done
                    ) -> None:
                        got.extend(payloads)
                        if len(got) == count:
                            done.set()

                    ws.set_sink(sink)
                    await asyncio.wait_for(done.wait(), 30)
                    assert ws.fast and ws.fast_frames == count
                    assert got == [text(i, 1400 if i % 2 else 30) for i in range(count)]

    asyncio.run(go())


def test_compressed_frames_are_left_to_websockets() -> None:
    """permessage-deflate sets a reserved bit: such frames are websockets' to read (the collector
    connects with compression off, so this is only the safety net)."""

    async def handler(ws: ServerConnection) -> None:
        for i in range(50):
            await ws.send(text(i, 500).decode())
        await ws.wait_closed()

    async def go() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", create_connection=FastTextConnection) as ws:
                assert isinstance(ws, FastTextConnection)
                got: list[bytes] = []
                ws.set_sink(got.extend)
                rest = [await asyncio.wait_for(ws.recv(decode=False), 10) for _ in range(50 - len(got))]
                assert got + rest == [text(i, 500) for i in range(50)]
                assert not ws.fast

    asyncio.run(go())


def test_the_frames_of_one_read_reach_the_sink_in_one_call() -> None:
    async def go() -> None:
        async with serve(_silent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", create_connection=FastTextConnection) as ws:
                assert isinstance(ws, FastTextConnection)
                calls: list[list[bytes]] = []
                ws.set_sink(calls.append)
                ws.data_received(
                    frame(0x1, b"a") + frame(0x9, b"p") + frame(0x1, b"b") + frame(0x1, b"c")[:2]
                )
                ws.data_received(frame(0x1, b"c")[2:])
                assert calls == [[b"a", b"b"], [b"c"]] and ws.fast_frames == 3

    asyncio.run(go())


def test_a_sink_that_raises_closes_the_connection_and_is_reported() -> None:
    async def go() -> None:
        async with serve(_silent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect(f"ws://127.0.0.1:{port}", create_connection=FastTextConnection)
            assert isinstance(ws, FastTextConnection)

            def sink(payloads: list[bytes]) -> None:
                raise ValueError("bug")

            ws.set_sink(sink)
            ws.data_received(frame(0x1, b"x") + frame(0x1, b"y"))
            assert isinstance(ws.sink_error, ValueError)
            await asyncio.wait_for(ws.wait_closed(), 10)

    asyncio.run(go())


def test_frames_over_tls_are_read_in_place(tmp_path: Path) -> None:
    """Binance is wss://: the frames come out of asyncio's TLS layer into the same fast reader."""
    pytest.importorskip("cryptography")
    from benchmarks.firehose import make_self_signed

    cert, key = make_self_signed(tmp_path / "tls")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    count = 3000

    async def handler(ws: ServerConnection) -> None:
        for i in range(count):
            await ws.send(text(i, 1400).decode())
        await ws.wait_closed()

    async def go() -> None:
        async with serve(handler, "127.0.0.1", 0, ssl=server_ctx) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(
                f"wss://127.0.0.1:{port}",
                ssl=client_ctx,
                create_connection=FastTextConnection,
                compression=None,
            ) as ws:
                assert isinstance(ws, FastTextConnection)
                got: list[bytes] = []
                done = asyncio.Event()

                def sink(payloads: list[bytes]) -> None:
                    got.extend(payloads)
                    if len(got) == count:
                        done.set()

                ws.set_sink(sink)
                await asyncio.wait_for(done.wait(), 60)
                assert ws.fast and ws.fast_frames == count
                assert got == [text(i, 1400) for i in range(count)]

    asyncio.run(go())
