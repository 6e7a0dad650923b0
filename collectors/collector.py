"""The collector: websocket connections, continuity, snapshots, spool and upload, wired together.

One asyncio event loop runs every websocket reader (the hot path: a few ``bytes.find`` calls and one
deque append per frame), the snapshot worker and housekeeping. Disk and store I/O run in threads
(``collectors.spool``, ``collectors.uploader``), so a slow fsync or a slow store never blocks receiving.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import random
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collectors import logs
from collectors.config import EXCHANGE_WEIGHT_LIMIT, CollectorConfig
from collectors.flow import ReadFlow
from collectors.frames import (
    DEPTH_HEAD_SPOT,
    DEPTH_HEAD_USDM,
    STREAM_PREFIX,
    depth_head,
    int_field,
    parse_slow,
)
from collectors.rest import InvalidSymbolError, RestClient, RestError, WeightBudget, depth_weight
from collectors.snapshots import SnapshotScheduler
from collectors.spool import OutboxObject, Spool
from collectors.state import LATENCY_BUCKET_OF_MS, LATENCY_TABLE_MS, SymbolState, latency_bucket
from collectors.uploader import Uploader
from collectors.wsfast import FastTextConnection
from depth_store.base import ObjectStore
from depth_store.counting import CountingStore

EXIT_OK = 0
EXIT_INVALID_SYMBOL = 2
_ALNUM = string.ascii_lowercase + string.digits
_PREFIX_LEN = len(STREAM_PREFIX)
# Binance: 300 connection attempts per 5 minutes per IP; two processes on one IP stay within it.
CONNECT_ATTEMPTS_PER_5MIN = 150
# a symbol the exchange does not know (-1121: unknown or delisted) is asked about again this rarely
UNKNOWN_SYMBOL_RETRY_S = 600.0
# websockets servers refuse a request line over 8,192 bytes (Binance's limit is not published): every
# connection URL stays under this, the request line's "GET " and " HTTP/1.1" included with room to spare
MAX_URL_BYTES = 8000


def new_session_id() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(12))


@dataclass(slots=True)
class ConnStream:
    """One stream of one connection: which symbol, which kind, and this connection's id progress."""

    state: SymbolState
    is_depth: bool
    first_start: int | None = None
    last_id: int | None = None


@dataclass
class Connection:
    """One websocket connection carrying a group of streams."""

    conn_id: int
    group: int
    url: str
    streams: dict[bytes, ConnStream]
    ws: ClientConnection | None = None
    primary: bool = False
    opened_monotonic: float = 0.0
    last_frame_ns: int = 0
    frames: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: str = ""
    shutdown_notice: bool = False

    @property
    def states(self) -> list[SymbolState]:
        return [cs.state for cs in self.streams.values() if cs.is_depth]


class ConnectionGroup:
    """The symbols of one websocket connection: at most ``max_streams`` streams and a URL of at most
    ``MAX_URL_BYTES`` (the connection's URL is built from the symbols at each connect, so symbols added
    or removed while running are in the next connection's URL)."""

    def __init__(self, index: int, base_url: str, suffixes: tuple[str, ...], max_streams: int) -> None:
        self.index = index
        self.base_url = base_url  # "{ws-url}/stream?streams="
        self.suffixes = suffixes  # stream name suffixes of one symbol ("@depth@100ms", "@bookTicker")
        self.max_streams = max_streams
        self.symbols: list[SymbolState] = []
        self.url_bytes = len(base_url)
        self.task: asyncio.Task[None] | None = None
        self.current: Connection | None = None
        self.replace_requested = asyncio.Event()
        self.wake = asyncio.Event()  # set on close, replace request and stop: the supervisor looks again
        self.replace_reason = ""

    def stream_names(self, st: SymbolState) -> list[str]:
        low = st.symbol.lower()
        return [low + suffix for suffix in self.suffixes]

    def _added_bytes(self, st: SymbolState) -> int:
        return sum(len(n) + 1 for n in self.stream_names(st)) - (0 if self.symbols else 1)

    def has_room(self, st: SymbolState) -> bool:
        return (len(self.symbols) + 1) * len(self.suffixes) <= self.max_streams and (
            not self.symbols or self.url_bytes + self._added_bytes(st) <= MAX_URL_BYTES
        )

    def add(self, st: SymbolState) -> None:
        self.url_bytes += self._added_bytes(st)
        self.symbols.append(st)

    def remove(self, st: SymbolState) -> None:
        self.symbols.remove(st)
        self.url_bytes = len(self.url)

    @property
    def url(self) -> str:
        return self.base_url + "/".join(n for st in self.symbols for n in self.stream_names(st))


class Collector:
    """A running collector; :meth:`run` returns the process exit status."""

    def __init__(
        self,
        config: CollectorConfig,
        open_store: Callable[[], ObjectStore],
        *,
        session: str | None = None,
    ) -> None:
        self.config = config
        self.session = session or new_session_id()
        self.usdm = config.market == "usdm"
        self._depth_head_re = DEPTH_HEAD_USDM if self.usdm else DEPTH_HEAD_SPOT
        self.layout = config.raw_layout
        self.symbols = {s: SymbolState(s, self.layout) for s in config.symbols}
        # every store request the collector makes is counted (metrics, the stop report): what it costs
        self.store_requests: CountingStore | None = None

        def open_counted() -> ObjectStore:
            counted = CountingStore(open_store(), counts_from=self.store_requests)
            if self.store_requests is None:
                self.store_requests = counted
            return counted

        self.uploader = Uploader(
            open_counted, concurrency=config.upload_concurrency, on_uploaded=self._uploaded
        )
        self.spool = Spool(
            config.spool_dir,
            market=config.market,
            collector_id=config.collector_id,
            session=self.session,
            segment_seconds=config.flush_seconds,
            segment_max_bytes=config.segment_max_bytes,
            max_bytes=config.spool_max_bytes,
            fsync_interval=config.fsync_interval,
            gzip_level=config.gzip_level,
            on_object=self.uploader.submit,
            layout=self.layout,
            max_pending_bytes=config.spool_max_pending_bytes,
        )
        # socket reading pauses while the spool writer's backlog is over max_pending_bytes
        self.read_flow = ReadFlow(self.spool)
        self.budget = WeightBudget(config.rest_weight_per_minute, EXCHANGE_WEIGHT_LIMIT[config.market])
        self.rest = RestClient(config.rest_url, config.market, self.budget)
        self.snapshots = SnapshotScheduler(
            self.budget,
            depth_weight(config.market, config.snapshot_depth),
            self._take_snapshot,
            self._periodic_candidates,
            interval=config.snapshot_interval,
        )
        for st in self.symbols.values():
            self.snapshots.add_symbol(st)
        self.unknown_symbol_retry_s = UNKNOWN_SYMBOL_RETRY_S
        self._all_anchored_logged = False
        self.listed = 0  # symbols started while running (--symbols-from exchange)
        self.delisted = 0
        self._ws_request_id = 0
        self._control_tasks: set[asyncio.Task[None]] = set()
        self.groups: list[ConnectionGroup] = []
        self._make_groups()
        self.started_monotonic = time.monotonic()
        self.stop_event = asyncio.Event()
        self.exit_code = EXIT_OK
        self.fatal_message: str | None = None
        self._conn_seq = 0
        self._connect_attempts: collections.deque[float] = collections.deque()
        self.reconnects: dict[str, int] = collections.Counter()
        self.connect_failures = 0
        self.malformed_frames = 0
        self.other_frames = 0
        self.server_shutdowns = 0
        self.clock_offset_s: float | None = None
        self.clock_rtt_s: float | None = None
        self.clock_warnings = 0
        self._dropped_seen = 0
        self.ready = asyncio.Event()  # every group has had a connection open once
        self.shutdown_report: dict[str, Any] = {}

    # ---- setup ----------------------------------------------------------------------------------

    def _make_groups(self) -> list[ConnectionGroup]:
        self.groups = []
        for st in self.symbols.values():
            self._group_for(st).add(st)
        return self.groups

    def _group_for(self, st: SymbolState) -> ConnectionGroup:
        """The first group with room for ``st`` (streams and URL length), else a new one."""
        for g in self.groups:
            if g.has_room(st):
                return g
        suffixes = (
            (self.config.depth_stream_suffix, "@bookTicker")
            if self.config.book_ticker
            else (self.config.depth_stream_suffix,)
        )
        group = ConnectionGroup(
            len(self.groups),
            f"{self.config.ws_url}/stream?streams=",
            suffixes,
            self.config.max_streams_per_connection,
        )
        self.groups.append(group)
        return group

    def _stream_map(self, group: ConnectionGroup) -> dict[bytes, ConnStream]:
        out: dict[bytes, ConnStream] = {}
        for st in group.symbols:
            for name in group.stream_names(st):
                out[name.encode()] = ConnStream(st, not name.endswith("@bookTicker"))
        return out

    # ---- notes ----------------------------------------------------------------------------------

    def note(self, st: SymbolState, event: str, **fields: Any) -> None:
        """A collector note (kind M) about one symbol."""
        body = orjson.dumps({"event": event, **fields})
        self.spool.append(b"%s%d%s%s\n" % (st.head, time.time_ns(), st.tag_m, body))

    def note_all(self, states: list[SymbolState] | None, event: str, **fields: Any) -> None:
        """A note about many symbols (``None``: every symbol of the stream).

        Layout 2 writes it once, stream-wide (symbol ``-``), naming the symbols in ``symbols`` unless it
        concerns them all; layout 1 repeats it in every symbol's objects.
        """
        if self.layout == 2:
            if states is not None:
                fields = {**fields, "symbols": [st.symbol for st in states]}
            body = orjson.dumps({"event": event, **fields})
            self.spool.append(b"%d M - %s\n" % (time.time_ns(), body))
            return
        for st in self.symbols.values() if states is None else states:
            self.note(st, event, **fields)

    # ---- hot path -------------------------------------------------------------------------------

    def on_frame(self, conn: Connection, frame: bytes) -> None:
        """Record one websocket frame (see :meth:`on_frames`)."""
        self.on_frames(conn, (frame,))

    def on_frames(self, conn: Connection, frames: list[bytes] | tuple[bytes, ...]) -> None:
        """Record the frames of one socket read, in order: continuity, counters, one journal line each.
        No I/O, no logging.

        The frames of one read came out of one ``recv``: they share its receive time, taken once, and
        their journal lines go to the spool as one entry (one join, one append; split only where a
        frame needs more than the common case, so the journal keeps the frames' order with the notes).
        A depth frame in Binance's own field order is read by one regular-expression match (stream
        name, E, and the ids, in C); anything else takes the general path (:meth:`_on_frame_general`:
        ``bytes.find`` of each field, then a full JSON parse), which accepts every layout the fast match
        refuses.
        """
        if not frames:
            return
        ns = time.time_ns()
        conn.last_frame_ns = ns
        conn.frames += len(frames)
        match = self._depth_head_re.match
        streams = conn.streams
        usdm = self.usdm
        ms = ns // 1_000_000
        parts: list[bytes] = []
        push = parts.append
        start = 0  # the first frame whose line is in parts
        for i, frame in enumerate(frames):
            m = match(frame)
            cs = streams.get(m[1]) if m is not None else None
            if cs is None or not cs.is_depth:
                if parts:
                    self._spool_depth_lines(conn, parts, frames, start, i)
                    parts = []
                    push = parts.append
                start = i + 1
                self._on_frame_general(conn, frame, ns)
                continue
            assert m is not None
            st = cs.state
            _, e_text, a_text, b_text = m.groups()
            if usdm:  # groups u, pu: the usdm chain is pu == previous u
                last = int(a_text)
                first = int(b_text) + 1
            else:  # groups U, u
                first = int(a_text)
                last = int(b_text)
            if cs.first_start is None:
                cs.first_start = first
            cs.last_id = last
            if conn.primary:
                cont = st.continuity
                prev = cont.last_id
                if prev is not None and first == prev + 1 and last > prev:  # the next event of the chain
                    cont.last_id = last
                else:
                    gap = cont.observe(first, last)
                    if gap is not None:
                        if parts:  # the lines before the gap, then its note, then this frame's line
                            self._spool_depth_lines(conn, parts, frames, start, i)
                            parts = []
                            push = parts.append
                        start = i
                        self._on_gap(conn, st, gap, first, last)
            lat = ms - int(e_text)
            st.latency_buckets[
                LATENCY_BUCKET_OF_MS[lat] if 0 <= lat < LATENCY_TABLE_MS else latency_bucket(lat)
            ] += 1
            st.latency_sum_ms += lat
            lmin = st.latency_min_ms
            if lmin is None or lat < lmin:
                st.latency_min_ms = lat
            st.messages += 1
            st.bytes += len(frame)
            st.last_receive_ns = ns
            # bytes.find of one byte is memchr, about 2.5x cheaper than ``in`` on a 1.4 KB frame
            if frame.find(b"\n") >= 0 or frame.find(b"\r") >= 0:
                if parts:
                    self._spool_depth_lines(conn, parts, frames, start, i)
                    parts = []
                    push = parts.append
                start = i + 1
                self._malformed(conn, frame, "frame contains CR or LF", st)
                continue
            if st.d_prefix_ns != ns:
                st.d_prefix_ns = ns
                st.d_prefix = b"%s%d%s" % (st.head, ns, st.tag_d)
            push(st.d_prefix)
            push(frame)
            push(b"\n")
        if parts:
            self._spool_depth_lines(conn, parts, frames, start, len(frames))

    def _spool_depth_lines(
        self,
        conn: Connection,
        parts: list[bytes],
        frames: list[bytes] | tuple[bytes, ...],
        start: int,
        end: int,
    ) -> None:
        """One spool entry for the depth lines of ``frames[start:end]`` (``parts``: prefix, frame, LF of
        each); if the spool refuses it (disk budget), each line is counted as not spooled for its
        symbol."""
        if self.spool.append(b"".join(parts), len(parts) // 3):
            return
        match = self._depth_head_re.match
        for frame in frames[start:end]:
            m = match(frame)
            assert m is not None
            conn.streams[m[1]].state.dropped_lines += 1

    def _on_frame_general(self, conn: Connection, frame: bytes, ns: int) -> None:
        """Any frame the fast match of :meth:`on_frames` refused."""
        cs = None
        end = -1
        if frame.startswith(STREAM_PREFIX):
            end = frame.find(b'"', _PREFIX_LEN, 128)
            cs = conn.streams.get(frame[_PREFIX_LEN:end])
        if cs is None:
            self._on_other_frame(conn, frame, ns)
            return
        st = cs.state
        if cs.is_depth:
            head = depth_head(frame, end, self.usdm)
            if head is None:
                self._on_other_frame(conn, frame, ns, st)
                return
            first, last, prev, event_ms = head
            tag = st.tag_d
            if self.usdm:
                assert prev is not None
                first = prev + 1
            if cs.first_start is None:
                cs.first_start = first
            cs.last_id = last
            if conn.primary:
                gap = st.continuity.observe(first, last)
                if gap is not None:
                    self._on_gap(conn, st, gap, first, last)
            st.observe_latency(ns // 1_000_000, event_ms)
            st.messages += 1
            st.bytes += len(frame)
        else:
            tag = st.tag_b
            st.book_ticker_messages += 1
            st.book_ticker_bytes += len(frame)
        st.last_receive_ns = ns
        # bytes.find of one byte is memchr, about 2.5x cheaper than ``in`` on a 1.4 KB frame
        if frame.find(b"\n") >= 0 or frame.find(b"\r") >= 0:
            self._malformed(conn, frame, "frame contains CR or LF", st)
            return
        if not self.spool.append(b"%s%d%s%s\n" % (st.head, ns, tag, frame)):
            st.dropped_lines += 1

    def _track(self, conn: Connection, cs: ConnStream, start: int, last: int) -> None:
        if cs.first_start is None:
            cs.first_start = start
        cs.last_id = last
        if not conn.primary:
            return
        gap = cs.state.continuity.observe(start, last)
        if gap is not None:
            self._on_gap(conn, cs.state, gap, start, last)

    def _on_gap(self, conn: Connection, st: SymbolState, gap: tuple[int, int], start: int, last: int) -> None:
        fields = {
            "from_id": gap[0],
            "to_id": gap[1],
            "next_first_id": start,
            "next_last_id": last,
            "conn": conn.conn_id,
        }
        logs.warning("gap", symbol=st.symbol, **fields)
        self.note(st, "gap", **fields)
        self.request_snapshot(st, "gap")

    def _on_other_frame(
        self, conn: Connection, frame: bytes, ns: int, hint: SymbolState | None = None
    ) -> None:
        """The slow path: control messages, unusual layouts, malformed frames (noted, never dropped)."""
        env = parse_slow(frame)
        if env is None:
            self._malformed(conn, frame, "not a JSON object", hint)
            return
        if env.event == "serverShutdown":
            self._server_shutdown(conn, frame)
            return
        if env.stream is not None and env.stream in conn.streams:
            # a known stream in an unusual field order: same handling, slower parse
            cs = conn.streams[env.stream]
            st = cs.state
            if cs.is_depth:
                start = (env.prev_id + 1 if env.prev_id is not None else None) if self.usdm else env.first_id
                if start is not None and env.last_id is not None:
                    self._track(conn, cs, start, env.last_id)
                else:
                    st.malformed += 1
                    self.malformed_frames += 1
                st.messages += 1
                st.bytes += len(frame)
            else:
                st.book_ticker_messages += 1
                st.book_ticker_bytes += len(frame)
            st.last_receive_ns = ns
            if b"\n" in frame or b"\r" in frame:
                self._malformed(conn, frame, "frame contains CR or LF", st)
                return
            tag = st.tag_d if cs.is_depth else st.tag_b
            if not self.spool.append(b"%s%d%s%s\n" % (st.head, ns, tag, frame)):
                st.dropped_lines += 1
            return
        self.other_frames += 1
        if b"serverShutdown" in frame:
            self._server_shutdown(conn, frame)
            return
        states = conn.states
        if self.layout == 2:
            self.note_all(states, "ws_message", conn=conn.conn_id, text=frame.decode(errors="replace"))
        elif states:
            self.note(states[0], "ws_message", conn=conn.conn_id, text=frame.decode(errors="replace"))

    def _server_shutdown(self, conn: Connection, frame: bytes) -> None:
        """The exchange announced a disconnect: note it and replace the connection make-before-break."""
        self.server_shutdowns += 1
        logs.warning("server_shutdown_notice", conn=conn.conn_id, group=conn.group)
        self.note_all(conn.states, "server_shutdown", conn=conn.conn_id, text=frame.decode(errors="replace"))
        conn.shutdown_notice = True
        group = self.groups[conn.group]
        if group.current is conn:
            group.replace_reason = "server_shutdown"
            group.replace_requested.set()
            group.wake.set()

    def _malformed(self, conn: Connection, frame: bytes, reason: str, st: SymbolState | None) -> None:
        self.malformed_frames += 1
        target = st or (conn.states[0] if conn.states else None)
        if st is not None:
            st.malformed += 1
        if self.malformed_frames <= 10 or self.malformed_frames % 1000 == 0:
            logs.warning(
                "malformed_frame",
                conn=conn.conn_id,
                reason=reason,
                bytes=len(frame),
                total=self.malformed_frames,
            )
        try:
            text: dict[str, str] = {"text": frame.decode()}
        except UnicodeDecodeError:  # keep the exact bytes where the text cannot hold them
            text = {"text_b64": base64.b64encode(frame).decode()}
        if st is None and self.layout == 2:  # not attributable to a symbol: a note about the connection
            self.note_all(conn.states, "malformed_frame", conn=conn.conn_id, reason=reason, **text)
        elif target is not None:
            self.note(target, "malformed_frame", conn=conn.conn_id, reason=reason, **text)

    # ---- connections ----------------------------------------------------------------------------

    async def _connect_slot(self) -> None:
        """Wait for a connection attempt slot within Binance's per-IP attempt limit."""
        while True:
            now = time.monotonic()
            while self._connect_attempts and now - self._connect_attempts[0] > 300:
                self._connect_attempts.popleft()
            if len(self._connect_attempts) < CONNECT_ATTEMPTS_PER_5MIN:
                self._connect_attempts.append(now)
                return
            wait = 300 - (now - self._connect_attempts[0]) + 0.01
            logs.warning("connect_attempts_limited", wait_s=round(wait, 1))
            await asyncio.sleep(wait)

    async def _open(self, group: ConnectionGroup) -> Connection:
        await self._connect_slot()
        self._conn_seq += 1
        url = group.url
        conn = Connection(self._conn_seq, group.index, url, self._stream_map(group))
        conn.ws = await connect(
            url,
            compression=None,
            max_size=2**25,
            max_queue=4096,
            ping_interval=20,
            ping_timeout=30,
            open_timeout=15,
            close_timeout=3,
            user_agent_header="depth-collector/0.1",
            create_connection=FastTextConnection,
        )
        conn.opened_monotonic = time.monotonic()
        conn.last_frame_ns = time.time_ns()
        return conn

    async def _read(self, conn: Connection) -> None:
        """The receive loop of one connection; returns when it closes (never raises).

        Plain text frames reach :meth:`on_frame` straight from the connection's ``data_received``
        (:class:`FastTextConnection`); whatever websockets reads itself (after an unusual frame) comes
        out of ``recv()`` here, in order after them.
        """
        ws = conn.ws
        assert ws is not None
        recv = ws.recv
        on_frame = self.on_frame
        if isinstance(ws, FastTextConnection):
            ws.set_sink(functools.partial(self.on_frames, conn))
            ws.read_flow = self.read_flow
            self.read_flow.add(ws)
        try:
            while True:
                frame = await recv(decode=False)
                on_frame(conn, frame if isinstance(frame, bytes) else frame.encode())
        except ConnectionClosed as exc:
            sink_error = ws.sink_error if isinstance(ws, FastTextConnection) else None
            if sink_error is not None:
                conn.close_reason = conn.close_reason or f"error: {sink_error!r}"
                logs.error("reader_failed", conn=conn.conn_id, error=repr(sink_error))
            conn.close_reason = conn.close_reason or f"closed: {exc}"
        except asyncio.CancelledError:
            conn.close_reason = conn.close_reason or "cancelled"
        except Exception as exc:
            conn.close_reason = conn.close_reason or f"error: {exc!r}"
            logs.error("reader_failed", conn=conn.conn_id, error=repr(exc))
        finally:
            if isinstance(ws, FastTextConnection):
                self.read_flow.discard(ws)
                ws.read_flow = None
            conn.closed.set()
            self.groups[conn.group].wake.set()

    async def _close(self, conn: Connection, reason: str) -> None:
        conn.close_reason = conn.close_reason or reason
        if conn.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(), 5)

    def _connected(self, group: ConnectionGroup, conn: Connection, reason: str) -> None:
        fields = {"conn": conn.conn_id, "group": group.index, "reason": reason, "symbols": len(group.symbols)}
        logs.info("connect", **fields)
        self.note_all(group.symbols, "connect", **fields)

    async def _reap(
        self, group: ConnectionGroup, conn: Connection, reader: asyncio.Task[None], planned: bool
    ) -> None:
        """Cancel the connection's reader, wait for it to end, then log and note the disconnect."""
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        self._disconnected(group, conn, planned=planned)

    def _disconnected(self, group: ConnectionGroup, conn: Connection, planned: bool) -> None:
        fields = {
            "conn": conn.conn_id,
            "group": group.index,
            "reason": conn.close_reason,
            "planned": planned,
            "frames": conn.frames,
            "age_s": round(time.monotonic() - conn.opened_monotonic, 3),
        }
        ws = conn.ws
        # how many frames the fast reader took (the rest came through websockets' recv())
        in_place, reads = (ws.fast_frames, ws.fast_reads) if isinstance(ws, FastTextConnection) else (0, 0)
        (logs.info if planned else logs.warning)(
            "disconnect", **fields, frames_read_in_place=in_place, socket_reads=reads
        )
        self.note_all(group.symbols, "disconnect", **fields)

    async def _run_group_forever(self, group: ConnectionGroup) -> None:
        """A bug in one group's loop must not silently end its capture: log it and start the loop again."""
        while not self.stop_event.is_set():
            try:
                await self._run_group(group)
            except Exception as exc:
                logs.error("group_loop_failed", group=group.index, error=repr(exc))
                if group.current is not None and group.current.ws is not None:
                    await self._close(group.current, "group loop failed")
                group.current = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), 1.0)

    async def _run_group(self, group: ConnectionGroup) -> None:
        """Keep one connection of this group open until stop, replacing it as needed."""
        failures = 0
        reason = "start"
        reader: asyncio.Task[None] | None = None
        conn: Connection | None = None
        while not self.stop_event.is_set():
            if conn is None and not group.symbols:  # every symbol of this group was delisted
                group.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(group.wake.wait(), 5.0)
                continue
            if conn is None:
                try:
                    conn = await self._open(group)
                except Exception as exc:  # refused, DNS, TLS, handshake, timeout...: all retried
                    failures += 1
                    self.connect_failures += 1
                    delay = 0.0 if failures == 1 else min(60.0, 0.5 * 2 ** min(failures - 2, 8))
                    delay *= random.uniform(0.5, 1.0)
                    if failures <= 3 or failures % 10 == 0:
                        logs.warning(
                            "connect_failed",
                            group=group.index,
                            error=repr(exc),
                            attempt=failures,
                            retry_in_s=round(delay, 2),
                        )
                    if failures == 3 and reason == "start":
                        # never connected: ask REST about these symbols, so an unknown one (-1121) ends
                        # the process with exit 2 naming it instead of reconnecting forever
                        self.request_snapshots(group.symbols, "connect_failed")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop_event.wait(), delay or 0.001)
                    continue
                conn.primary = True
                group.current = conn
                self._connected(group, conn, reason)
                reader = asyncio.create_task(self._read(conn), name=f"reader-{conn.conn_id}")
                self.request_snapshots(group.symbols, reason)
                if all(g.current is not None for g in self.groups):
                    self.ready.set()
            assert conn is not None and reader is not None
            outcome = await self._supervise(group, conn)
            if outcome == "stop":
                break
            if outcome == "empty":
                conn.close_reason = "no symbols left"
                await self._close(conn, "no symbols left")
                await self._reap(group, conn, reader, planned=True)
                group.current = None
                conn = None
                reader = None
                continue
            if outcome in ("max_age", "server_shutdown"):
                new_conn, new_reader = await self._make_before_break(group, conn, reader, outcome)
                if new_conn is not None and new_reader is not None:
                    conn, reader = new_conn, new_reader
                    failures = 0
                    continue
                # the new connection could not be opened: keep the old one if it still lives
                if not conn.closed.is_set():
                    continue
            # unplanned: the connection dropped or stalled
            if outcome == "stall":
                conn.close_reason = "stall"
                await self._close(conn, "stall")
            await self._reap(group, conn, reader, planned=False)
            self.reconnects["unplanned"] += 1
            group.current = None
            reason = "reconnect"
            if conn.frames > 0:
                failures = 0  # it worked for a while: reconnect at once
            else:  # accepted, then dropped without data: back off like a failed attempt
                failures += 1
                delay = min(60.0, 0.5 * 2 ** min(failures - 1, 8)) * random.uniform(0.5, 1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
            conn = None
            reader = None
        if conn is not None and reader is not None:
            conn.close_reason = "shutdown"
            await self._close(conn, "shutdown")
            await self._reap(group, conn, reader, planned=True)
            group.current = None

    async def _supervise(self, group: ConnectionGroup, conn: Connection) -> str:
        """Wait until the connection needs attention: stop, closed, stall, max age or shutdown notice."""
        stall = self.config.stall_timeout
        while True:
            if self.stop_event.is_set():
                return "stop"
            if conn.closed.is_set():
                return "closed"
            if not group.symbols:
                return "empty"
            if group.replace_requested.is_set():
                group.replace_requested.clear()
                return group.replace_reason or "server_shutdown"
            now = time.monotonic()
            if now - conn.opened_monotonic >= self.config.max_connection_age:
                return "max_age"
            silent = (time.time_ns() - conn.last_frame_ns) / 1e9
            if stall > 0 and silent >= stall:
                logs.warning("stall", conn=conn.conn_id, group=group.index, silent_s=round(silent, 1))
                return "stall"
            group.wake.clear()
            timeout = min(1.0, max(0.01, self.config.max_connection_age - (now - conn.opened_monotonic)))
            if stall > 0:
                timeout = min(timeout, max(0.01, stall - silent))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(group.wake.wait(), timeout)

    def _overlapped(
        self, old: Connection, new: Connection, baseline: dict[bytes, int | None], quiet: bool
    ) -> bool:
        """True when, for every symbol, the new connection's first event chains onto the old one's ids.

        A symbol with no event on either connection since the new one opened (``baseline``: the old
        one's last ids then) has nothing in flight once ``quiet`` (a grace period has passed), so it
        does not hold the switch up.
        """
        for name, new_cs in new.streams.items():
            if not new_cs.is_depth:
                continue
            old_cs = old.streams.get(name)
            old_last = old_cs.last_id if old_cs is not None else None
            if old_last is None:
                continue  # the old connection never saw this symbol: nothing to hand over
            if new_cs.first_start is None:
                if quiet and old_last == baseline.get(name):
                    continue
                return False
            if new_cs.first_start > old_last + 1:
                return False
        return True

    async def _make_before_break(
        self, group: ConnectionGroup, old: Connection, old_reader: asyncio.Task[None], reason: str
    ) -> tuple[Connection | None, asyncio.Task[None] | None]:
        """Open a new connection, wait until it overlaps the old one's last ids, then close the old."""
        logs.info("planned_reconnect", conn=old.conn_id, group=group.index, reason=reason)
        try:
            new = await self._open(group)
        except Exception as exc:
            logs.warning("planned_reconnect_failed", conn=old.conn_id, error=repr(exc))
            old.opened_monotonic = time.monotonic() - self.config.max_connection_age + 5.0  # retry in 5 s
            return None, None
        new.primary = False
        self._connected(group, new, f"planned_{reason}")
        new_reader = asyncio.create_task(self._read(new), name=f"reader-{new.conn_id}")
        opened = time.monotonic()
        deadline = opened + self.config.overlap_timeout
        quiet_after = opened + min(2.0, self.config.overlap_timeout / 2)
        baseline = {name: cs.last_id for name, cs in old.streams.items()}
        overlapped = False
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if self._overlapped(old, new, baseline, time.monotonic() >= quiet_after):
                overlapped = True
                break
            if new.closed.is_set():
                break
            if old.closed.is_set() and new.frames > 0:
                break
            await asyncio.sleep(0.01)
        if new.closed.is_set():
            await self._reap(group, new, new_reader, planned=False)
            old.opened_monotonic = time.monotonic() - self.config.max_connection_age + 5.0
            return None, None
        # promote: from now on the new connection feeds continuity; the old one stops
        old.primary = False
        new.primary = True
        for cs in new.streams.values():
            # feed the new connection's progress into continuity (its events were not tracked yet)
            if cs.is_depth and cs.last_id is not None and cs.first_start is not None:
                gap = cs.state.continuity.observe(cs.first_start, cs.last_id)
                if gap is not None:
                    self._on_gap(new, cs.state, gap, cs.first_start, cs.last_id)
        group.current = new
        joined = [st for st in group.symbols if group.stream_names(st)[0].encode() not in new.streams]
        if joined:  # listed while the new connection was opening
            self._subscribe(group, new, joined)
        await self._close(old, f"planned_{reason}")
        old_reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await old_reader
        old.close_reason = f"planned_{reason}"
        self._disconnected(group, old, planned=True)
        self.reconnects["planned"] += 1
        logs.info(
            "planned_reconnect_done", old=old.conn_id, new=new.conn_id, overlapped=overlapped, reason=reason
        )
        if not overlapped:
            logs.warning(
                "planned_reconnect_without_overlap",
                old=old.conn_id,
                new=new.conn_id,
                waited_s=self.config.overlap_timeout,
            )
        if not overlapped:
            # the hand-over is not proven: re-anchor every symbol of the group (a proven overlap needs none;
            # a symbol whose ids did not chain on was reported as a gap above and has its snapshot queued)
            self.request_snapshots(group.symbols, f"planned_{reason}")
        return new, new_reader

    # ---- snapshots ------------------------------------------------------------------------------

    def request_snapshot(self, st: SymbolState, reason: str) -> None:
        """Queue a snapshot (collectors.snapshots): a symbol already waiting gets one for every reason."""
        if self.symbols.get(st.symbol) is st:  # not for a symbol that left the stream
            self.snapshots.request(st, reason)

    def request_snapshots(self, states: list[SymbolState], reason: str) -> None:
        for st in states:
            self.request_snapshot(st, reason)

    # ---- live symbol set (--symbols-from exchange) ------------------------------------------------

    def _start_groups(self) -> None:
        """Start the connection loop of every group that has none yet."""
        for g in self.groups:
            if g.task is None and g.symbols:
                g.task = asyncio.create_task(self._run_group_forever(g), name=f"group-{g.index}")

    async def _follow_exchange(self) -> None:
        """Take the symbols from exchangeInfo, then refresh every ``--symbols-refresh`` seconds."""
        failures = 0
        first = True
        while not self.stop_event.is_set():
            try:
                wanted = await self.rest.trading_symbols(self.config.quote_asset)
            except RestError as exc:
                failures += 1
                (logs.error if first else logs.warning)(
                    "exchange_info_failed",
                    error=str(exc)[:300],
                    attempt=failures,
                    message="cannot read the symbol list; retrying"
                    + (" (nothing is captured yet)" if first else ""),
                )
                delay = min(60.0, 2.0 * failures) if first else min(self.config.symbols_refresh, 30.0)
            else:
                failures = 0
                if not wanted:
                    logs.error(
                        "exchange_info_no_symbols",
                        quote_asset=self.config.quote_asset,
                        message="exchangeInfo lists no TRADING symbol of this quote asset; "
                        "keeping the current set",
                    )
                else:
                    self.apply_symbol_set(wanted, initial=first)
                    first = False
                delay = self.config.symbols_refresh
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)

    def apply_symbol_set(self, wanted: list[str], *, initial: bool = False) -> None:
        """Start the symbols that are new, stop the ones that left: no restart, and snapshots only of new
        ones."""
        keep = set(wanted)
        gone = [sym for sym in self.symbols if sym not in keep]
        new = [sym for sym in dict.fromkeys(wanted) if sym not in self.symbols]
        for sym in gone:
            self._remove_symbol(sym)
        added: dict[int, list[SymbolState]] = {}
        for sym in new:
            st = SymbolState(sym, self.layout)
            self.symbols[sym] = st
            self.snapshots.add_symbol(st)
            group = self._group_for(st)
            group.add(st)
            added.setdefault(group.index, []).append(st)
        for index, states in added.items():
            group = self.groups[index]
            conn = group.current
            if conn is not None and conn.ws is not None:
                self._subscribe(group, conn, states)
                self.note_all(states, "listed", conn=conn.conn_id, group=group.index)
                self.request_snapshots(states, "listed")
            # else: a group not yet connected (new, or reconnecting) asks for every snapshot when it connects
            group.wake.set()
        self._start_groups()
        self.listed += len(new) if not initial else 0
        self.delisted += len(gone)
        if new or gone:
            logs.info(
                "symbols",
                listed=len(new),
                delisted=len(gone),
                total=len(self.symbols),
                initial=initial,
                connections=len(self.groups),
                new=new[:20],
                gone=gone[:20],
            )

    def _remove_symbol(self, sym: str) -> None:
        st = self.symbols.pop(sym)
        self.snapshots.forget(sym)
        st.next_periodic = None
        for group in self.groups:
            if st in group.symbols:
                group.remove(st)
                conn = group.current
                if conn is not None and conn.ws is not None:
                    # frames still in flight are recorded as usual (its streams stay known to this connection)
                    self._send_control(conn, "UNSUBSCRIBE", group.stream_names(st))
        self.note(st, "delisted")

    def _subscribe(self, group: ConnectionGroup, conn: Connection, states: list[SymbolState]) -> None:
        names: list[str] = []
        for st in states:
            for name in group.stream_names(st):
                if name.encode() not in conn.streams:
                    conn.streams[name.encode()] = ConnStream(st, not name.endswith("@bookTicker"))
                    names.append(name)
        if names:
            self._send_control(conn, "SUBSCRIBE", names)

    def _send_control(self, conn: Connection, method: str, names: list[str]) -> None:
        """SUBSCRIBE/UNSUBSCRIBE in messages of at most 200 streams, at most 4 a second (Binance allows 5)."""
        ws = conn.ws
        assert ws is not None

        async def send() -> None:
            for i in range(0, len(names), 200):
                self._ws_request_id += 1
                msg = orjson.dumps(
                    {"method": method, "params": names[i : i + 200], "id": self._ws_request_id}
                )
                try:
                    await ws.send(msg.decode())
                except ConnectionClosed:
                    return  # the next connection's URL holds the group's current symbols
                await asyncio.sleep(0.25)

        task = asyncio.create_task(send(), name=f"ws-{method.lower()}-{conn.conn_id}")
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    def _periodic_candidates(self) -> list[SymbolState]:
        return [st for st in self.symbols.values() if not st.unknown]

    @property
    def snapshots_pending(self) -> int:
        """Snapshots queued or in flight (0 when the REST side is idle)."""
        return self.snapshots.queue_length + self.snapshots.in_flight

    def _retry_later(self, st: SymbolState, reason: str, delay: float) -> None:
        def again() -> None:
            if not self.stop_event.is_set() and self.symbols.get(st.symbol) is st:
                self.request_snapshot(st, reason)

        asyncio.get_running_loop().call_later(delay, again)

    async def _take_snapshot(self, st: SymbolState, reason: str) -> None:
        """One snapshot (its weight already spent): the body as an S line after its note; failures are
        noted and retried (an unknown symbol rarely)."""
        limit = self.config.snapshot_depth
        try:
            resp = await self.rest.snapshot(st.symbol, limit, charged=True)
        except InvalidSymbolError as exc:
            st.snapshot_errors += 1
            st.unknown_errors += 1
            first = not st.unknown
            st.unknown = True
            self.note(st, "snapshot_error", reason=reason, error=str(exc), code=exc.code, status=exc.status)
            (logs.error if first else logs.warning)(
                "symbol_unknown",
                symbol=st.symbol,
                reason=reason,
                error=str(exc),
                retry_in_s=self.unknown_symbol_retry_s,
                message="the exchange does not know this symbol (unknown or delisted): it has no snapshot "
                "and is asked about again later; the other symbols go on",
            )
            self._check_any_symbol_known()
            self._retry_later(st, reason, self.unknown_symbol_retry_s)
            return
        except RestError as exc:
            st.snapshot_errors += 1
            self.note(st, "snapshot_error", reason=reason, error=str(exc), code=exc.code, status=exc.status)
            logs.warning(
                "snapshot_failed", symbol=st.symbol, reason=reason, error=str(exc), status=exc.status
            )
            # after a 429/418 the budget is paused until Retry-After: queue again at once, it waits there
            self._retry_later(st, reason, 2.0 if exc.status not in (429, 418) else 0.0)
            return
        st.unknown = False
        body = resp.body.rstrip(b"\r\n")
        last_update_id = int_field(body, b'"lastUpdateId":')
        if b"\n" in body or b"\r" in body:
            # kept whole (JSON-escaped) in the note: a raw line cannot hold it, and nothing is dropped
            self.note(
                st,
                "snapshot_error",
                reason=reason,
                error="snapshot body contains CR or LF",
                text=body.decode(errors="replace"),
            )
            return
        self.note(
            st,
            "snapshot",
            reason=reason,
            limit=limit,
            sent_ns=resp.sent_ns,
            received_ns=resp.received_ns,
            last_update_id=last_update_id,
            bytes=len(body),
        )
        # the line's time is taken now, on the loop thread, so journal times never go backwards (the
        # converter relies on it); the HTTP round trip's own times are in the note above
        if not self.spool.append(b"%s%d%s%s\n" % (st.head, time.time_ns(), st.tag_s, body)):
            # the spool is over its disk budget: a snapshot that is not stored anchors nothing (the line
            # is counted in the spool's dropped lines; the per-symbol count is of depth frames)
            st.snapshot_errors += 1
            logs.warning(
                "snapshot_not_spooled", symbol=st.symbol, reason=reason, message="spool full: retried in 2 s"
            )
            self._retry_later(st, reason, 2.0)
            return
        now = time.monotonic()
        st.snapshots += 1
        st.last_snapshot_ok = now
        first = not st.first_snapshot_done
        if first:
            st.first_snapshot_done = True
            st.first_snapshot_s = now - st.added_monotonic
        logs.info("snapshot", symbol=st.symbol, reason=reason, last_update_id=last_update_id, bytes=len(body))
        if (
            first
            and not self._all_anchored_logged
            and all(s.first_snapshot_done for s in self.symbols.values())
        ):
            self._all_anchored_logged = True
            logs.info(
                "all_symbols_anchored",
                symbols=len(self.symbols),
                seconds=round(now - self.started_monotonic, 3),
                slowest_s=round(max(s.first_snapshot_s or 0.0 for s in self.symbols.values()), 3),
                rest_429=self.budget.rate_limited,
                rest_418=self.budget.banned,
            )

    def _check_any_symbol_known(self) -> None:
        """Every configured symbol unknown to the exchange and none ever snapshotted: a configuration
        error (exit 2, naming them), not a delisting."""
        states = list(self.symbols.values())
        if self.config.symbols_from is not None:
            return  # the exchange named them: a race with a delisting, which the next refresh settles
        if states and all(st.unknown and not st.first_snapshot_done for st in states):
            names = ",".join(st.symbol for st in states[:10])
            self.fatal(
                EXIT_INVALID_SYMBOL, f"no symbol is known to the exchange: {names} (-1121 invalid symbol)"
            )

    # ---- housekeeping ---------------------------------------------------------------------------

    async def _clock_watch(self) -> None:
        """Estimate the clock offset to the exchange (server time endpoint) and warn when it is large."""
        failures = 0
        while not self.stop_event.is_set():
            delay = 300.0
            try:
                offset, rtt = await self.rest.server_time_offset()
                self.clock_offset_s, self.clock_rtt_s = offset, rtt
                if abs(offset) > self.config.clock_offset_warn:
                    self.clock_warnings += 1
                    logs.warning(
                        "clock_offset",
                        offset_s=round(offset, 4),
                        rtt_s=round(rtt, 4),
                        threshold_s=self.config.clock_offset_warn,
                    )
                delay = 60.0
                failures = 0
            except (RestError, ValueError, KeyError, TypeError) as exc:
                failures += 1
                if failures in (1, 10):
                    logs.info("clock_offset_unavailable", error=str(exc)[:200])
            # events from the future are a clock problem too
            for st in self.symbols.values():
                if (
                    st.latency_min_ms is not None
                    and st.latency_min_ms < -1000 * self.config.clock_offset_warn
                ):
                    self.clock_warnings += 1
                    logs.warning(
                        "clock_behind_exchange",
                        symbol=st.symbol,
                        min_receive_minus_event_ms=st.latency_min_ms,
                    )
                    st.latency_min_ms = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)

    async def _spool_watch(self) -> None:
        """After the spool refused lines (disk budget), note it in every symbol and re-anchor with
        snapshots."""
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), 1.0)
            dropped = self.spool.dropped_lines
            if dropped > self._dropped_seen and self.spool.accepting:
                lost = dropped - self._dropped_seen
                self._dropped_seen = dropped
                logs.error("spool_overflow_lines_lost", lines=lost, total=dropped)
                if self.layout == 2:
                    self.note_all(None, "spool_overflow", lines_lost_all_symbols=lost)
                else:
                    for st in self.symbols.values():
                        self.note(
                            st,
                            "spool_overflow",
                            lines_lost_all_symbols=lost,
                            lines_lost_symbol_total=st.dropped_lines,
                        )
                self.request_snapshots(list(self.symbols.values()), "spool_overflow")
            if self.spool.writer_error is not None:
                self.fatal(1, f"spool write failed: {self.spool.writer_error!r}")

    def _uploaded(self, obj: OutboxObject) -> None:
        self.spool.object_uploaded(obj)

    def fatal(self, code: int, message: str) -> None:
        """Stop the collector with this exit status (after flushing and uploading what it has)."""
        if self.fatal_message is None:
            self.fatal_message = message
            self.exit_code = code
            logs.error("fatal", message=message, exit_code=code)
        self.request_stop()

    def request_stop(self) -> None:
        self.read_flow.stop()  # closing connections read their close handshakes; the final flush takes all
        self.stop_event.set()
        for g in self.groups:
            g.wake.set()

    # ---- run ------------------------------------------------------------------------------------

    def start_storage(self) -> None:
        """Recover the spool (leftovers first in the upload queue) and start the writer and uploaders."""
        leftovers = self.spool.recover()
        for obj in leftovers:
            self.uploader.submit(obj, leftover=True)
        self.uploader.start()
        self.spool.start()

    async def run(self) -> int:
        """Collect until stop; then flush, upload and return the exit status."""
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.read_flow.start(asyncio.get_running_loop())
        self.start_storage()
        logs.info(
            "start",
            collector_id=self.config.collector_id,
            market=self.config.market,
            session=self.session,
            symbols=len(self.symbols),
            connections=len(self.groups),
            ws_url=self.config.ws_url,
            rest_url=self.config.rest_url,
            spool_dir=str(self.config.spool_dir),
        )
        helpers = [
            asyncio.create_task(self.snapshots.run(self.stop_event), name="snapshots"),
            asyncio.create_task(self._clock_watch(), name="clock"),
            asyncio.create_task(self._spool_watch(), name="spool-watch"),
        ]
        if self.config.symbols_from == "exchange":
            helpers.append(asyncio.create_task(self._follow_exchange(), name="symbols-from-exchange"))
        else:
            self._start_groups()
        await self.stop_event.wait()
        logs.info("stopping", reason=self.fatal_message or "signal")
        for t in helpers:
            t.cancel()
        # connections close and note it; one stuck in a handshake is cancelled after a while
        tasks = [g.task for g in self.groups if g.task is not None]
        if not tasks:
            await asyncio.gather(*helpers, return_exceptions=True)
            return await asyncio.to_thread(self.finish)
        _, stuck = await asyncio.wait(tasks, timeout=10)
        for t in stuck:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*helpers, return_exceptions=True)
        return await asyncio.to_thread(self.finish)

    def finish(self) -> int:
        """Blocking: final spool flush, then upload for up to ``shutdown_grace`` seconds."""
        t0 = time.monotonic()
        self.spool.close()
        deadline = t0 + max(self.config.shutdown_grace, 0.0)
        complete = self.uploader.drain(deadline)
        self.uploader.stop()
        pending = self.uploader.pending_count
        self.shutdown_report = {
            "uploaded_all": complete,
            "pending_objects": pending,
            "pending_bytes": self.uploader.pending_bytes,
            "spool_dir": str(self.config.spool_dir),
            "seconds": round(time.monotonic() - t0, 3),
            "exit_code": self.exit_code,
            # the session's totals: every depth frame received is stored unless counted as not spooled
            "symbols": len(self.symbols),
            "depth_frames": sum(st.messages for st in self.symbols.values()),
            "depth_frames_not_spooled": sum(st.dropped_lines for st in self.symbols.values()),
            "snapshots": sum(st.snapshots for st in self.symbols.values()),
            "symbols_anchored": sum(st.first_snapshot_done for st in self.symbols.values()),
            "rest_429": self.budget.rate_limited,
            "rest_418": self.budget.banned,
            # flow control: how often and how long socket reading waited for the spool writer
            "read_pauses": self.read_flow.pauses,
            "read_paused_s": round(self.read_flow.paused_seconds, 3),
            "read_pause_timeouts": self.read_flow.timeouts,
            "uploaded_objects": self.uploader.uploaded_objects,
            "store_requests": self.store_requests.snapshot() if self.store_requests is not None else {},
        }
        if complete:
            logs.info("stopped", **self.shutdown_report)
        else:
            logs.error(
                "stopped_with_spool_left",
                message="the store stayed unreachable: these objects stay in the spool and are uploaded "
                "first by the next start",
                **self.shutdown_report,
            )
        return self.exit_code
