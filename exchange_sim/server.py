"""A local Binance-compatible market-data server: websocket streams and REST depth on one port.

One ``websockets`` asyncio server answers both: websocket upgrades on ``/ws``, ``/stream`` (also
under ``/public`` and ``/market``, like the USD-M routes) and plain HTTP requests (REST depth,
the ``/_sim/...`` control API) through the ``process_request`` hook. See ``docs/simulator.md``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import re
import time
import urllib.parse
from collections.abc import Coroutine
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from exchange_sim.connection import SimConnection, StreamName
from exchange_sim.control_api import handle_control
from exchange_sim.faults import FaultKind, apply_fault, check_fault, new_batcher
from exchange_sim.firehose import firehose_snapshot, run_firehose
from exchange_sim.generator import (
    BookGenerator,
    CanonicalEvent,
    ClosedCycle,
    Formatter,
    Partial,
    depth_data,
    partial_of,
    spec_for,
)
from exchange_sim.replay import ReplayEngine
from exchange_sim.responses import binance_error, json_response
from exchange_sim.state import SimConfig, SymbolState
from exchange_sim.truth import TruthLog, top_levels
from exchange_sim.weights import USDM_LIMITS, WeightBudget, spot_weight

__all__ = ["ExchangeSimulator", "SimConfig"]

log = logging.getLogger("exchange_sim")

SPOT_DEPTH_PATH = "/api/v3/depth"
USDM_DEPTH_PATH = "/fapi/v1/depth"
_WS_PREFIXES = ("/public", "/market")


_QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


class ExchangeSimulator:
    """The simulator. ``await start()``, then clients use ``ws_url`` / ``rest_url``; ``await stop()``."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        cfg = self.config
        self.port = 0
        self.host = "127.0.0.1"
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._background_tasks: set[asyncio.Task[Any]] = set()
        self.connections: dict[int, SimConnection] = {}
        self._next_conn_id = 1
        self._next_faults: list[tuple[FaultKind, dict[str, Any]]] = []
        self.symbols: dict[str, SymbolState] = {}
        self.subscribers: dict[str, set[SimConnection]] = {}
        self.weights = WeightBudget(
            cfg.weight_limit_per_minute, cfg.weight_window_s, cfg.ban_after_violations, cfg.ban_seconds
        )
        self._tick = 0  # ticks of the canonical clock (event_interval_ms each) since the start
        self.paused = asyncio.Event()  # set = paused
        self._snap_rng = random.Random(cfg.seed)
        self.replay: ReplayEngine | None = None
        self.firehose: dict[str, ClosedCycle] = {}  # symbol -> pre-encoded pool in firehose mode
        self.start_ms = cfg.start_time_ms if cfg.start_time_ms is not None else int(time.time() * 1000)
        self._mono0 = time.monotonic()  # wall reference of start_ms for the compressed exchange clock
        self._e_anchor = (
            0,
            self.start_ms,
        )  # (tick, E): an event of tick k gets E = anchor E + (k - tick) * interval
        self.events_generated = 0
        # Every HTTP request path as received (websocket upgrades included), newest last: tests check
        # which URLs a client really asked for.
        self.request_log: collections.deque[str] = collections.deque(maxlen=cfg.request_log_size)
        if cfg.replay_path is None:
            for sym in cfg.symbols:
                self._new_symbol(sym, cfg.rates.get(sym))

    def _new_symbol(self, sym: str, rate: float | None) -> SymbolState:
        cfg = self.config
        spec = cfg.specs.get(sym) or spec_for(sym, cfg.market)
        gen = BookGenerator(spec, cfg.market, cfg.seed)
        bids, asks = gen.snapshot_levels()
        truth = TruthLog(sym, bids, asks, gen.last_update_id, cfg.truth_max_events)
        st = self.symbols[sym] = SymbolState(spec, Formatter(spec), gen, truth, rate=rate)
        self.subscribers.setdefault(sym, set())
        return st

    def list_symbol(self, symbol: str, rate: float | None = None) -> bool:
        """List a symbol while running (generated mode): it trades from now on. False if already trading."""
        if self.replay is not None or self.config.firehose_rate:
            raise ValueError("symbols can be listed at runtime only in generated mode")
        sym = symbol.upper()
        st = self.symbols.get(sym)
        if st is not None and st.status == "TRADING":
            return False
        if st is None:
            st = self._new_symbol(sym, rate)
            st.pending = st.gen.next_event(self.now_ms())
        else:
            st.status = "TRADING"  # a relisting resumes the same book and ids
        return True

    def delist_symbol(self, symbol: str) -> bool:
        """Delist: no more events, exchangeInfo says BREAK, REST depth answers -1121. False if not trading."""
        st = self.symbols.get(symbol.upper())
        if st is None or st.status != "TRADING":
            return False
        st.status = "BREAK"
        return True

    def exchange_info(self) -> dict[str, Any]:
        """``exchangeInfo``: every symbol with its status and assets (spot ``/api/v3``, usdm ``/fapi/v1``)."""
        usdm = self.config.market == "usdm"
        names = list(self.replay.symbols) if self.replay is not None else list(self.symbols)
        out = []
        for sym in names:
            st = self.symbols.get(sym)
            quote = next((q for q in _QUOTE_ASSETS if sym.endswith(q) and len(sym) > len(q)), "USDT")
            entry: dict[str, Any] = {
                "symbol": sym,
                "status": st.status if st is not None else "TRADING",
                "baseAsset": sym[: -len(quote)] if sym.endswith(quote) else sym,
                "quoteAsset": quote,
            }
            if usdm:
                entry["contractType"] = "PERPETUAL"
            out.append(entry)
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.config.weight_limit_per_minute,
                }
            ],
            "symbols": out,
        }

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        cfg = self.config
        self.host = host
        if cfg.start_paused or (cfg.replay_path is not None and cfg.replay_start == "paused"):
            self.paused.set()
        if cfg.replay_path is not None:
            self.replay = ReplayEngine(self, cfg.replay_path, cfg.replay_snapshot_path)
            for sym in self.replay.symbols:
                self.subscribers.setdefault(sym, set())
        self._server = await serve(
            self._handle_ws,
            host,
            port,
            process_request=self._process_request,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.pong_timeout_s,
            compression=None,
            max_queue=64,
            write_limit=2**20,
            close_timeout=2,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        if self.replay is not None:
            self._tasks.append(asyncio.create_task(self.replay.run()))
        elif cfg.firehose_rate:
            self._tasks.append(asyncio.create_task(run_firehose(self)))
        else:
            for st in self.symbols.values():
                st.pending = st.gen.next_event(self.start_ms)
            self._tasks.append(asyncio.create_task(self._ticker()))
        log.info("exchange simulator listening on %s", self.ws_url)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    # -- event generation -----------------------------------------------------------------------
    async def _ticker(self) -> None:
        """Publish one canonical event per symbol every ``event_interval_ms / speed`` of wall time."""
        cfg = self.config
        period = cfg.event_interval_ms / 1000.0 / cfg.speed
        loop = asyncio.get_running_loop()
        next_t = loop.time() + period
        while True:
            if self.paused.is_set():
                while self.paused.is_set():
                    await asyncio.sleep(0.01)
                next_t = loop.time() + period
                # exchange time went on during the pause: the next event carries the current time
                self._e_anchor = (self._tick, self.now_ms())
            delay = next_t - loop.time()
            # always yield: a simulator that cannot keep up (many symbols, a busy machine) must still answer
            # REST and send frames, never monopolise the loop catching up
            await asyncio.sleep(max(delay, 0.0))
            if self.paused.is_set():
                continue
            behind = int((loop.time() - next_t) / period)
            steps = 1 + min(max(behind, 0), 10)  # catch up a little when the loop was busy
            full_rate = 1000.0 / cfg.event_interval_ms
            for _ in range(steps):
                for st in list(self.symbols.values()):
                    if st.status != "TRADING":
                        continue
                    if st.rate is not None and st.rate < full_rate:
                        st.credit += st.rate / full_rate
                        if st.credit < 1.0:
                            continue
                        st.credit -= 1.0
                    self._publish(st)
                self._tick += 1
            next_t += period * steps

    def _publish(self, st: SymbolState) -> None:
        """Publish ``st.pending`` to the truth and every subscriber, then generate the next one."""
        cfg = self.config
        ev = st.pending
        assert ev is not None
        k = st.event_index
        anchor_tick, anchor_ms = self._e_anchor
        e_ms = anchor_ms + (self._tick - anchor_tick) * cfg.event_interval_ms
        ev.transaction_time_ms = e_ms - (ev.event_time_ms - ev.transaction_time_ms)
        ev.event_time_ms = e_ms
        st.truth.append(ev)
        st.event_index += 1
        self.events_generated += 1
        top = (
            st.gen.best_bid,
            st.gen.bids.get(st.gen.best_bid, 0),
            st.gen.best_ask,
            st.gen.asks.get(st.gen.best_ask, 0),
        )
        st.pending = st.gen.next_event(e_ms + cfg.event_interval_ms)
        subs = self.subscribers.get(st.spec.symbol)
        if not subs:
            st.group_buffers.clear()
            return
        # canonical groupings for each speed in use, computed once and shared by all connections
        groups = {
            self._group_of(s)
            for c in subs
            for s in c.streams.values()
            if s.kind == "depth" and s.symbol == st.spec.symbol
        }
        canonical: dict[int, Partial] = {}
        for g in groups:
            buf = st.group_buffers.get(g)
            if buf is None:
                # a speed newly listened to: the exchange's group began before anyone listened, so seed it
                # from the truth log (ev is its last entry); every @depth/@500ms event is then the whole
                # group and its pu the previous group's u, whenever the first subscriber came
                buf = st.group_buffers[g] = st.truth.events[-(k % g + 1) :]
            else:
                buf.append(ev)
            if (k + 1) % g == 0:
                part = partial_of(buf)
                part.prev_last_id = st.truth.prev_last_id(buf[0])  # u of the canonical event before the group
                canonical[g] = part
                st.group_buffers[g] = []
        for g in list(st.group_buffers):
            if g not in groups:
                del st.group_buffers[g]
        data_cache: dict[int, bytes] = {}
        ticker_data: bytes | None = None
        for conn in list(subs):
            for stream in conn.streams.values():
                if stream.symbol != st.spec.symbol or stream.kind == "other":
                    continue
                if stream.kind == "bookTicker":
                    if conn.is_dropped(stream.symbol, ev.last_id, ev.last_id):
                        continue
                    if ticker_data is None:
                        ticker_data = self._book_ticker(st, ev, top)
                    conn.enqueue(conn.wrap(stream.name, ticker_data))
                    continue
                g = self._group_of(stream)
                batcher = conn.batchers.get(stream.name)
                if batcher is not None:
                    for part in batcher.feed(ev, (k + 1) % g == 0):
                        part.prev_last_id = conn.prev_u.get(stream.name, -1)
                        if part.prev_last_id < 0:
                            part.prev_last_id = self._prev_u_before(st, part.first_id)
                        conn.prev_u[stream.name] = part.last_id
                        if conn.drops_depth(stream.symbol, part.first_id, part.last_id):
                            conn.dropped += 1
                            continue
                        data = orjson.dumps(depth_data(part, st.fmt, cfg.market))
                        conn.enqueue(conn.wrap(stream.name, data))
                    continue
                shared = canonical.get(g)
                if shared is None:
                    continue
                conn.prev_u[stream.name] = shared.last_id
                if conn.drops_depth(stream.symbol, shared.first_id, shared.last_id):
                    conn.dropped += 1
                    continue
                encoded = data_cache.get(g)
                if encoded is None:
                    encoded = orjson.dumps(depth_data(shared, st.fmt, cfg.market))
                    data_cache[g] = encoded
                conn.enqueue(conn.wrap(stream.name, encoded))

    @staticmethod
    def _prev_u_before(st: SymbolState, first_id: int) -> int:
        """The last canonical id before ``first_id`` (a new connection's first ``pu``)."""
        for ev in reversed(st.truth.events[-50:]):
            if ev.first_id <= first_id <= ev.last_id:
                i = ev.ids.index(first_id)
                return ev.ids[i - 1] if i > 0 else st.truth.prev_last_id(ev)
        return first_id - 1

    def _group_of(self, stream: StreamName) -> int:
        return max(1, round(stream.interval_ms / self.config.event_interval_ms))

    def _book_ticker(self, st: SymbolState, ev: CanonicalEvent, top: tuple[int, int, int, int]) -> bytes:
        f = st.fmt
        bb, bq, ba, aq = top
        # two literal bodies on purpose: each is one market's wire format, built once a message
        if self.config.market == "usdm":
            return orjson.dumps(
                {
                    "e": "bookTicker",
                    "u": ev.last_id,
                    "s": st.spec.symbol,
                    "b": f.price(bb),
                    "B": f.qty(bq),
                    "a": f.price(ba),
                    "A": f.qty(aq),
                    "T": ev.transaction_time_ms,
                    "E": ev.event_time_ms,
                }
            )
        return orjson.dumps(
            {
                "u": ev.last_id,
                "s": st.spec.symbol,
                "b": f.price(bb),
                "B": f.qty(bq),
                "a": f.price(ba),
                "A": f.qty(aq),
            }
        )

    def now_ms(self) -> int:
        """Exchange time now (compressed by ``speed``)."""
        return self.start_ms + int((time.monotonic() - self._mono0) * 1000 * self.config.speed)

    # -- websocket side -------------------------------------------------------------------------
    def _parse_ws_path(self, path: str) -> tuple[bool, list[str]] | None:
        """(combined, initial streams) for a websocket path, or None if it is not a stream route."""
        parsed = urllib.parse.urlsplit(self._strip_path_prefix(path))
        route = parsed.path.rstrip("/") or "/"
        for prefix in _WS_PREFIXES:
            if route.startswith(prefix + "/"):
                route = route[len(prefix) :]
                break
        if route == "/stream":
            qs = urllib.parse.parse_qs(parsed.query)
            streams = [s for s in "/".join(qs.get("streams", [])).split("/") if s]
            return True, streams
        if route == "/ws":
            return False, []
        if route.startswith("/ws/"):
            return False, [s for s in route[4:].split("/") if s]
        return None

    async def _handle_ws(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parsed = self._parse_ws_path(ws.request.path)
        if parsed is None:  # process_request already refused it
            return
        combined, streams = parsed
        conn = SimConnection(
            self._next_conn_id,
            ws,
            combined,
            ws.request.path,
            max_send_buffer_bytes=self.config.max_send_buffer_bytes,
        )
        self._next_conn_id += 1
        self.connections[conn.id] = conn
        for name in streams:
            self._subscribe(conn, name)
        for kind, params in self._next_faults:
            apply_fault(conn, kind, params, sim_seed=self.config.seed, background=self._background)
        self._next_faults.clear()
        sender = asyncio.create_task(conn.sender())
        age = asyncio.create_task(self._age_guard(conn))
        try:
            async for message in ws:
                if not conn.rate_ok(self.config.max_incoming_per_s):
                    conn.closed_reason = "too many incoming messages"
                    await conn.drain(1.0)  # answers to the messages within the limit go out first
                    await ws.close(1008, "Too many requests")
                    break
                reply = self._control_message(conn, message)
                if reply is not None:
                    conn.enqueue(orjson.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            age.cancel()
            for name in list(conn.streams):
                self._unsubscribe(conn, name)
            self.connections.pop(conn.id, None)

    async def _age_guard(self, conn: SimConnection) -> None:
        cfg = self.config
        age = cfg.max_connection_age_s
        notice = cfg.shutdown_notice_s
        if notice is not None and 0 <= notice < age:
            await asyncio.sleep(age - notice)
            conn.send_shutdown_notice()
            await asyncio.sleep(notice)
        else:
            await asyncio.sleep(age)
        conn.closed_reason = "max connection age"
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.close(1001, "Max connection age reached")

    def _subscribe(self, conn: SimConnection, name: str) -> bool:
        if name in conn.streams:
            return True
        if len(conn.streams) >= self.config.max_streams_per_connection:
            return False
        stream = StreamName.parse(name)
        if stream is None:
            return True  # Binance accepts any name and then sends nothing for it
        conn.streams[name] = stream
        self.subscribers.setdefault(stream.symbol, set()).add(conn)
        batching = conn.faults.batching
        if batching is not None and stream.kind == "depth":
            conn.batchers[name] = new_batcher(conn, batching, name, self.config.seed)
        if self.replay is not None:
            self.replay.on_subscribe()
        return True

    def _unsubscribe(self, conn: SimConnection, name: str) -> None:
        stream = conn.streams.pop(name, None)
        conn.batchers.pop(name, None)
        if stream is not None and not any(s.symbol == stream.symbol for s in conn.streams.values()):
            self.subscribers.get(stream.symbol, set()).discard(conn)

    def _control_message(self, conn: SimConnection, message: str | bytes) -> dict[str, Any] | None:
        """Answer SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY like Binance."""
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            return {
                "error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"},
                "id": None,
            }
        if not isinstance(req, dict):
            return {"error": {"code": 2, "msg": "Invalid request: request must be an object"}, "id": None}
        req_id = req.get("id")
        method = req.get("method")
        params = req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return {
                    "error": {"code": 1, "msg": "Invalid value type: expected array of strings"},
                    "id": req_id,
                }
            if method == "SUBSCRIBE":
                new = [p for p in params if p not in conn.streams]
                if len(conn.streams) + len(set(new)) > self.config.max_streams_per_connection:
                    return {
                        "error": {
                            "code": 2,
                            "msg": "Invalid request: too many streams (max "
                            f"{self.config.max_streams_per_connection} per connection)",
                        },
                        "id": req_id,
                    }
                for p in params:
                    self._subscribe(conn, p)
            else:
                for p in params:
                    self._unsubscribe(conn, p)
            return {"result": None, "id": req_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": req_id}
        if method == "SET_PROPERTY":
            if params and params[0] == "combined" and len(params) == 2 and isinstance(params[1], bool):
                conn.combined = params[1]
                return {"result": None, "id": req_id}
            return {"error": {"code": 2, "msg": "Invalid request: unknown property"}, "id": req_id}
        if method == "GET_PROPERTY":
            if params == ["combined"]:
                return {"result": conn.combined, "id": req_id}
            return {"error": {"code": 2, "msg": "Invalid request: unknown property"}, "id": req_id}
        return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": req_id}

    # -- faults -----------------------------------------------------------------------------------
    def inject_fault(self, target: str | int, kind: str, params: dict[str, Any] | None = None) -> list[int]:
        """Arm a fault (``faults.py``) on a connection id, on ``"all"`` connections or on the ``"next"`` one
        to open; returns the connection ids it was applied to."""
        params = params or {}
        fault = check_fault(kind, params)
        if target == "next":
            self._next_faults.append((fault, params))
            return []
        if target == "all":
            conns = list(self.connections.values())
        else:
            conn = self.connections.get(int(target))
            if conn is None:
                raise KeyError(f"no connection {target}")
            conns = [conn]
        for conn in conns:
            apply_fault(conn, fault, params, sim_seed=self.config.seed, background=self._background)
        return [c.id for c in conns]

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task that is kept referenced until done and whose errors are logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background_tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background_tasks.discard(t)
            if (
                not t.cancelled()
                and t.exception() is not None
                and not isinstance(t.exception(), ConnectionClosed)
            ):
                log.warning("background task failed: %r", t.exception())

        task.add_done_callback(done)

    # -- HTTP side -------------------------------------------------------------------------------
    def _strip_path_prefix(self, path: str) -> str:
        """``path`` without the configured ``path_prefix`` (unchanged when it does not start with it)."""
        prefix = self.config.path_prefix.rstrip("/")
        if prefix and path.startswith(prefix + "/"):
            return path[len(prefix) :]
        return path

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.request_log.append(request.path)
        parsed = urllib.parse.urlsplit(self._strip_path_prefix(request.path))
        route = parsed.path
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        is_upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if is_upgrade:
            ws_route = self._parse_ws_path(request.path)
            if ws_route is None:
                return binance_error(404, -1, f"Unknown websocket path {route}")
            if len(ws_route[1]) > self.config.max_streams_per_connection:
                return binance_error(
                    400, -1, f"Too many streams (max {self.config.max_streams_per_connection})"
                )
            return None
        try:
            if route.startswith("/_sim/"):
                return handle_control(self, request.method, route, query)
            if route in (SPOT_DEPTH_PATH, USDM_DEPTH_PATH):
                remote = connection.remote_address
                return self._rest_depth(route, query, remote[0] if remote else "?")
            if route == "/api/v3/ping" or route == "/fapi/v1/ping":
                return json_response(200, {})
            if route == "/api/v3/time" or route == "/fapi/v1/time":
                return json_response(200, {"serverTime": int(time.time() * 1000)})
            if route in ("/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo"):
                remote = connection.remote_address
                weight = 20 if route.startswith("/api/") else 1
                status, used, retry = self.weights.charge(remote[0] if remote else "?", weight)
                hdr = {"X-MBX-USED-WEIGHT-1M": str(used)}
                if status != 200:
                    hdr["Retry-After"] = str(max(1, math.ceil(retry)))
                    return binance_error(status, -1003, "Too many requests.", hdr)
                return json_response(200, self.exchange_info(), hdr)
            return binance_error(404, -1, f"Unknown path {route}")
        except Exception as exc:  # a bug here must answer 500, never kill the server
            log.exception("request %s failed", request.path)
            return json_response(500, {"code": -1000, "msg": f"internal error: {exc}"})

    def _rest_depth(self, route: str, query: dict[str, str], ip: str) -> Response:
        cfg = self.config
        usdm = cfg.market == "usdm"
        if route != (USDM_DEPTH_PATH if usdm else SPOT_DEPTH_PATH):
            return binance_error(404, -1, f"This simulator serves the {cfg.market} market; no {route}")
        limit_text = query.get("limit", "500" if usdm else "100")
        weight = 5 if not usdm else 10
        limit = -1
        if re.fullmatch(r"[0-9]{1,20}", limit_text):
            limit = int(limit_text)
            weight = USDM_LIMITS.get(limit, 10) if usdm else spot_weight(limit)
        status, used, retry = self.weights.charge(ip, weight)
        hdr = {"X-MBX-USED-WEIGHT-1M": str(used)}
        if status == 418:
            hdr["Retry-After"] = str(max(1, math.ceil(retry)))
            return binance_error(
                418, -1003, f"Way too many requests; IP banned for {hdr['Retry-After']} s.", hdr
            )
        if status == 429:
            hdr["Retry-After"] = str(max(1, math.ceil(retry)))
            return binance_error(
                429,
                -1003,
                "Too many requests; current limit of IP is "
                f"{cfg.weight_limit_per_minute} request weight per 1 MINUTE.",
                hdr,
            )
        if limit < 0:
            return binance_error(
                400,
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
                hdr,
            )
        if (usdm and limit not in USDM_LIMITS) or (not usdm and not 1 <= limit <= 5000):
            legal = ",".join(map(str, USDM_LIMITS)) if usdm else "1-5000"
            return binance_error(
                400, -1100, f"Illegal value for parameter 'limit'; legal values are {legal}.", hdr
            )
        symbol = query.get("symbol", "")
        if not symbol:
            return binance_error(
                400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.", hdr
            )
        if self.replay is not None:
            body = self.replay.snapshot_body(symbol, limit)
            if body is None:
                return binance_error(400, -1121, "Invalid symbol.", hdr)
            return json_response(200, body, hdr)
        st = self.symbols.get(symbol)
        if st is None or st.status != "TRADING":
            return binance_error(400, -1121, "Invalid symbol.", hdr)
        if cfg.firehose_rate:
            pool = self.firehose.get(symbol)
            if pool is None:
                return binance_error(503, -1008, "Server is busy (firehose pool not ready yet).", hdr)
            return json_response(200, firehose_snapshot(pool, limit, st.fmt, cfg.market, self.now_ms()), hdr)
        return json_response(200, self.snapshot(st, limit), hdr)

    def snapshot(self, st: SymbolState, limit: int) -> dict[str, Any]:
        """The REST depth body: the published book, maybe plus a prefix of the next event."""
        cut = st.truth.last_id
        pending = st.pending
        if self.config.snapshot_mid_event and pending is not None and self._snap_rng.random() < 0.5:
            cut = self._snap_rng.choice(pending.ids)
        bids, asks = st.truth.book_at(cut, pending)
        f = st.fmt
        body: dict[str, Any] = {"lastUpdateId": cut}
        if self.config.market == "usdm":
            now = self.now_ms()
            body["E"] = now
            body["T"] = now - 3
        body["bids"] = [[f.price(p), f.qty(q)] for p, q in top_levels(bids, limit, True)]
        body["asks"] = [[f.price(p), f.qty(q)] for p, q in top_levels(asks, limit, False)]
        return body

    def book_at(self, symbol: str, update_id: int) -> tuple[dict[int, int], dict[int, int]]:
        st = self.symbols[symbol]
        return st.truth.book_at(update_id, st.pending)
