"""The ``/_sim/...`` HTTP control API, so a simulator in another process can be driven and inspected.

Request bodies are not accepted by the websockets HTTP parser, so every parameter is a query
parameter (``params`` may carry a JSON object of extra fault parameters).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from websockets.http11 import Response

from exchange_sim.generator import BID, depth_data, partial_of
from exchange_sim.responses import json_response
from exchange_sim.state import SimulatorCore
from exchange_sim.truth import top_levels

if TYPE_CHECKING:
    from exchange_sim.connection import SimConnection
    from exchange_sim.replay import ReplayEngine
    from exchange_sim.weights import WeightBudget


class ControlledSimulator(SimulatorCore, Protocol):
    """What the control API uses of the simulator (``server.ExchangeSimulator``, which imports this
    module)."""

    connections: dict[int, SimConnection]
    replay: ReplayEngine | None
    weights: WeightBudget

    def inject_fault(
        self, target: str | int, kind: str, params: dict[str, Any] | None = None
    ) -> list[int]: ...
    def list_symbol(self, symbol: str, rate: float | None = None) -> bool: ...
    def delist_symbol(self, symbol: str) -> bool: ...
    def book_at(self, symbol: str, update_id: int) -> tuple[dict[int, int], dict[int, int]]: ...


class ControlError(Exception):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


def _int(query: dict[str, str], name: str, default: int | None = None) -> int:
    text = query.get(name)
    if text is None or text == "":
        if default is None:
            raise ControlError(400, f"missing parameter {name!r}")
        return default
    try:
        return int(text)
    except ValueError:
        raise ControlError(400, f"parameter {name!r} must be an integer, not {text!r}") from None


def _symbol(sim: ControlledSimulator, query: dict[str, str]) -> str:
    sym = query.get("symbol", "").upper()
    known = sim.replay.symbols if sim.replay is not None else sim.symbols
    if sym not in known:
        raise ControlError(404, f"unknown symbol {sym!r}; simulated: {', '.join(known)}")
    return sym


def handle_control(sim: ControlledSimulator, method: str, route: str, query: dict[str, str]) -> Response:
    """Dispatch one control request; errors answer ``{"error": msg}`` with a 4xx status."""
    try:
        return json_response(200, _dispatch(sim, method, route, query))
    except ControlError as exc:
        return json_response(exc.status, {"error": str(exc)})
    except (ValueError, KeyError, LookupError) as exc:
        return json_response(400, {"error": str(exc)})


def _dispatch(sim: ControlledSimulator, method: str, route: str, query: dict[str, str]) -> Any:
    name = route[len("/_sim/") :]
    if name == "status":
        cfg = sim.config
        return {
            "market": cfg.market,
            "symbols": list(sim.replay.symbols if sim.replay else sim.symbols),
            "seed": cfg.seed,
            "speed": cfg.speed,
            "event_interval_ms": cfg.event_interval_ms,
            "paused": sim.paused.is_set(),
            "connections": len(sim.connections),
            "events_generated": sim.events_generated,
            "mode": _mode(sim),
            "replay_done": bool(sim.replay and sim.replay.done.is_set()),
            "time_ms": int(time.time() * 1000),
        }
    if name == "connections":
        return {"connections": [c.info() for c in sim.connections.values()]}
    if name == "fault":
        if method not in ("POST", "GET"):
            raise ControlError(405, "use POST")
        kind = query.get("kind", "")
        target: str | int = query.get("target", query.get("connection", "all"))
        params: dict[str, Any] = {}
        if query.get("params"):
            loaded = orjson.loads(query["params"])
            if not isinstance(loaded, dict):
                raise ControlError(400, "params must be a JSON object")
            params.update(loaded)
        for k, v in query.items():
            if k not in ("kind", "target", "connection", "params"):
                params[k] = v
        applied = sim.inject_fault(target, kind, params)
        return {"applied_to": applied, "kind": kind, "target": target, "params": params}
    if name == "pause":
        sim.paused.set()
        return {"paused": True}
    if name == "resume":
        sim.paused.clear()
        if sim.replay is not None:
            sim.replay.start_now()
        return {"paused": False}
    if name == "reset_weights":
        sim.weights.used.clear()
        sim.weights.violations.clear()
        sim.weights.banned_until.clear()
        return {"reset": True}
    if name in ("list", "delist"):
        if method not in ("POST", "GET"):
            raise ControlError(405, "use POST")
        sym = query.get("symbol", "").upper()
        if not re.fullmatch(r"[A-Z0-9]{2,30}", sym):
            raise ControlError(400, f"invalid symbol {sym!r}")
        if name == "list":
            rate = float(query["rate"]) if query.get("rate") else None
            return {"symbol": sym, "listed": sim.list_symbol(sym, rate)}
        return {"symbol": sym, "delisted": sim.delist_symbol(sym)}
    if name == "last_update_id":
        sym = _symbol(sim, query)
        if sim.replay is not None:
            return {"symbol": sym, "last_update_id": sim.replay.last_update_id(sym)}
        if sim.firehose:
            return {"symbol": sym, "last_update_id": sim.firehose[sym].last_u}
        return {"symbol": sym, "last_update_id": sim.symbols[sym].truth.last_id}
    if name == "truth":
        sym = _symbol(sim, query)
        from_id = _int(query, "from_id", 0)
        to_id = _int(query, "to_id", 2**62)
        max_count = min(_int(query, "max", 100_000), 1_000_000)
        if sim.replay is not None:
            return {"symbol": sym, "events": sim.replay.truth_events(sym, from_id, to_id, max_count)}
        if sim.config.firehose_rate:
            raise ControlError(409, "the firehose mode keeps no event log; use book or last_update_id")
        st = sim.symbols[sym]
        fine = query.get("fine") in ("1", "true")
        out = []
        for ev in st.truth.events_between(from_id, to_id, max_count):
            part = partial_of([ev])
            part.prev_last_id = st.truth.prev_last_id(ev)
            item = depth_data(part, st.fmt, sim.config.market)
            if fine:
                f = st.fmt
                item["changes"] = [
                    [uid, "b" if ev.sides[i] == BID else "a", f.price(ev.prices[i]), f.qty(ev.qtys[i])]
                    for i, uid in enumerate(ev.ids)
                ]
            out.append(item)
        return {"symbol": sym, "base_id": st.truth.base_id, "events": out}
    if name == "book":
        sym = _symbol(sim, query)
        update_id = _int(query, "update_id", -1)
        limit = _int(query, "limit", 10**9)
        if sim.replay is not None:
            return sim.replay.book_body(sym, update_id, limit)
        st = sim.symbols[sym]
        if sim.config.firehose_rate:
            pool = sim.firehose[sym]
            if update_id >= 0 and update_id != pool.last_u:
                raise ControlError(409, "the firehose mode answers the book at the current id only")
            update_id = pool.last_u
            bids, asks = pool.book_after(pool.k)
        else:
            if update_id < 0:
                update_id = st.truth.last_id
            bids, asks = sim.book_at(sym, update_id)
        f = st.fmt
        return {
            "symbol": sym,
            "update_id": update_id,
            "bids": [[f.price(p), f.qty(q)] for p, q in top_levels(bids, limit, True)],
            "asks": [[f.price(p), f.qty(q)] for p, q in top_levels(asks, limit, False)],
        }
    raise ControlError(404, f"unknown control endpoint {route}")


def _mode(sim: ControlledSimulator) -> str:
    if sim.replay is not None:
        return "replay"
    if sim.config.firehose_rate:
        return "firehose"
    return "generated"
