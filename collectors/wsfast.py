"""A websockets client connection whose plain text frames skip websockets' per-frame machinery.

Why: receiving through ``recv()`` costs ~5 µs of CPU per frame in websockets itself (the generator-
based frame parser, the message assembler, a future and a coroutine step per message) — as much as
everything else the collector does per message. Binance sends one unfragmented, unmasked text frame
per message, whose header is 2-10 bytes; reading those here costs a fraction of that.

websockets still does everything else. The opening handshake is parsed by websockets (this class only
cuts the bytes at the end of the HTTP response, so the frame stream starts at a frame boundary). After
it, every complete frame is looked at once:

- an unmasked text frame with FIN set, no reserved bits and within ``max_size``: its payload goes to
  the sink, in order, in one list per socket read (frames that arrive before a sink is set are kept and
  handed over first);
- a ping or a pong: its bytes are fed to websockets, which answers a ping and settles a pong as usual;
- anything else (close, binary, a fragment, reserved bits, a mask, a frame over ``max_size``): this
  frame and everything after it go to websockets for the rest of the connection, so the close
  handshake, errors and unusual messages are exactly websockets' own; such messages come out of
  ``recv()``, after every frame already given to the sink.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from collectors import logs

_TEXT_FIN = 0x81  # FIN + opcode 1, no reserved bits
_PING_FIN = 0x89
_PONG_FIN = 0x8A
_HTTP_END = b"\r\n\r\n"


def _frame_size(head: bytes) -> int | None:
    """Header plus payload length of the frame ``head`` starts with; None while its header is cut."""
    if len(head) < 2:
        return None
    length = head[1] & 0x7F
    if length < 126:
        return 2 + length
    if length == 126:
        return None if len(head) < 4 else 4 + ((head[2] << 8) | head[3])
    return None if len(head) < 10 else 10 + int.from_bytes(head[2:10], "big")


class FlowCheck(Protocol):
    def over(self) -> bool:
        """After a read: True when this connection must stop reading (collectors.flow.ReadFlow)."""
        ...


class FastTextConnection(ClientConnection):
    """:class:`ClientConnection` handing complete text frames to :meth:`set_sink`'s callable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast = False  # the frame stream is read here (decided once, at the end of the handshake)
        self._tail = b""  # the start of a frame whose end has not arrived yet
        self._sink: Callable[[list[bytes]], None] | None = None
        self._early: list[bytes] = []  # frames received before a sink was set
        self.fast_frames = 0  # frames read here (the rest came out of recv())
        self.fast_reads = 0  # socket reads those frames came in
        self.fallback_reason: str | None = None  # why websockets reads the frames (None: it does not)
        self.sink_error: Exception | None = None
        # asked after every read whether to pause reading (the spool writer is behind); None: never
        self.read_flow: FlowCheck | None = None

    @property
    def fast(self) -> bool:
        """Whether text frames currently go to the sink (False: websockets handles every frame)."""
        return self._fast

    def set_sink(self, sink: Callable[[list[bytes]], None]) -> None:
        """Hand every text frame to ``sink`` from now on (the payloads of one read in one list, in
        order), starting with those already received.

        If ``sink`` raises, the connection is closed (``recv()`` then raises ``ConnectionClosed``) and
        the exception is kept in :attr:`sink_error` for the reader to report.
        """
        self._sink = sink
        early, self._early = self._early, []
        if not early:
            return
        try:
            sink(early)
        except Exception as exc:
            self._sink_failed(exc)

    def pause_for_spool(self) -> None:
        """Stop reading the socket (flow control; the kernel buffers what arrives meanwhile)."""
        self.transport.pause_reading()

    def resume_for_spool(self) -> None:
        """Read again, unless websockets' own message queue holds reading paused (after a fallback)."""
        if not self.recv_messages.paused:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._fast:
            self.fast_reads += 1
            self._receive_frames(data)
            flow = self.read_flow
            if flow is not None and flow.over():
                self.transport.pause_reading()
            return
        self._data_received_slow(data)
        flow = self.read_flow
        if flow is not None and flow.over():
            self.transport.pause_reading()

    def _data_received_slow(self, data: bytes) -> None:
        if self.protocol.state is State.CONNECTING:
            end = data.find(_HTTP_END)
            if end >= 0:
                super().data_received(data[: end + 4])
                # the handshake is complete and websockets holds no byte of the frame stream: read it here
                if self.protocol.state is State.OPEN and not self.protocol.reader.buffer:
                    self._fast = True
                    rest = data[end + 4 :]
                    if rest:
                        self._receive_frames(rest)
                    return
                data = data[end + 4 :]
                if not data:
                    return
        super().data_received(data)

    def _sink_failed(self, exc: Exception) -> None:
        self.sink_error = exc
        self._fast = False
        self._sink = None
        self._tail = b""
        self.transport.close()

    def _receive_frames(self, data: bytes) -> None:
        batch: list[bytes] = []
        tail = self._tail
        i = 0
        if tail:
            # complete the frame the last read cut off, without copying the whole read after it
            size = _frame_size(tail if len(tail) >= 10 else tail + data[:10])
            if size is None or size > len(tail) + len(data):
                self._tail = tail + data
                return
            i = size - len(tail)
            self._tail = b""
            if not self._scan(tail + data[:i], 0, batch):
                if self.sink_error is None and i < len(data):
                    ClientConnection.data_received(self, data[i:])
                return
        if self._scan(data, i, batch):
            self._deliver(batch)

    def _scan(self, buf: bytes, i: int, batch: list[bytes]) -> bool:
        """The complete frames of ``buf`` from ``i``: text frames into ``batch``, pings and pongs to
        websockets; the cut-off end is kept as the tail. False when websockets reads on from an unusual
        frame (``batch`` delivered before it)."""
        n = len(buf)
        max_size = self.protocol.max_message_size
        push = batch.append
        while n - i >= 2:
            b0 = buf[i]
            b1 = buf[i + 1]
            length = b1 & 0x7F
            if length < 126:
                head = 2
            elif length == 126:
                if n - i < 4:
                    break
                length = (buf[i + 2] << 8) | buf[i + 3]
                head = 4
            else:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
                head = 10
            end = i + head + length
            if b0 == _TEXT_FIN and b1 < 0x80 and (max_size is None or length <= max_size):
                if end > n:
                    break
                push(buf[i + head : end])
            elif b0 in (_PING_FIN, _PONG_FIN) and b1 < 0x80:  # (control frames are <= 125 bytes)
                if end > n:
                    break
                ClientConnection.data_received(self, buf[i:end])
            else:  # websockets reads this frame and everything after it, after the frames before it
                self._tail = b""
                self._deliver(batch)
                if self.sink_error is not None:
                    return False
                self._fast = False
                self.fallback_reason = f"frame starting 0x{b0:02x} 0x{b1:02x}"
                logs.info(
                    "ws_read_by_websockets", reason=self.fallback_reason, frames_before=self.fast_frames
                )
                ClientConnection.data_received(self, buf[i:])
                return False
            i = end
        self._tail = buf[i:] if i < n else b""
        return True

    def _deliver(self, batch: list[bytes]) -> None:
        """The text frames of one read to the sink (kept for it until it is set)."""
        if not batch:
            return
        self.fast_frames += len(batch)
        sink = self._sink
        if sink is None:
            self._early.extend(batch)
            return
        try:
            sink(batch)
        except Exception as exc:
            self._sink_failed(exc)
