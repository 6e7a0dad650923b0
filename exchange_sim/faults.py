"""Fault injection: what can go wrong on a connection, checked when asked for and applied to one connection.

Faults are armed through the control API (``/_sim/fault``, docs/simulator.md) on a connection, on all of
them or on the next one to open; :func:`check_fault` refuses a malformed request before anything is armed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal, get_args

from exchange_sim.batching import BATCHING_MODES, Batcher
from exchange_sim.connection import SimConnection

#: What a fault does to a connection: ``close`` it (abort, or a close frame with ``code``); ``drop_ids``
#: (events touching ``from_id..to_id``, of ``symbol`` or all); ``drop_next`` ``count`` depth messages (of
#: ``symbol`` or any), whatever their ids, so a test need not race the generator for an id; ``stall``
#: sending for ``seconds``; send ``count`` ``malformed`` frames; ``duplicate`` the next ``count`` frames;
#: re-split events (``batching`` ``mode``); a ``shutdown_notice`` (and a close after ``close_after_s``).
FaultKind = Literal[
    "close", "drop_ids", "drop_next", "stall", "malformed", "duplicate", "batching", "shutdown_notice"
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

Background = Callable[[Coroutine[Any, Any, Any]], None]


def check_fault(kind: str, params: dict[str, Any]) -> FaultKind:
    """``kind`` as a :data:`FaultKind` once it and its ``params`` are known good; ValueError otherwise."""
    for known in FAULT_KINDS:
        if kind == known:
            break
    else:
        raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
    if known == "batching" and str(params.get("mode", "random")) not in BATCHING_MODES:
        raise ValueError(f"batching mode must be one of {', '.join(BATCHING_MODES)}")
    if known == "drop_ids" and ("from_id" not in params or "to_id" not in params):
        raise ValueError("drop_ids needs from_id and to_id")
    return known


def new_batcher(conn: SimConnection, batching: dict[str, Any], name: str, sim_seed: int) -> Batcher:
    """The batcher re-splitting stream ``name`` of ``conn`` (seeded per connection and stream)."""
    seed = int(batching.get("seed", sim_seed * 1_000_003 + conn.id))
    return Batcher(
        str(batching.get("mode", "random")),
        hash((seed, name)) & 0xFFFFFFFF,
        int(batching.get("max_parts", 3)),
        int(batching.get("max_hold", 3)),
    )


def apply_fault(
    conn: SimConnection, kind: FaultKind, params: dict[str, Any], *, sim_seed: int, background: Background
) -> None:
    """Arm (or, for close/malformed/shutdown_notice, do) ``kind`` on ``conn``; ``background`` runs what
    has to happen later (a close) as a task the simulator keeps."""
    f = conn.faults
    if kind == "close":
        conn.closed_reason = "fault: close"
        code = params.get("code")
        if code is None:
            if conn.ws.transport is not None:
                conn.ws.transport.abort()
        else:
            background(conn.ws.close(int(code), str(params.get("reason", ""))))
    elif kind == "drop_ids":
        sym = params.get("symbol")
        f.drop_ranges.append(
            (str(sym).upper() if sym else None, int(params["from_id"]), int(params["to_id"]))
        )
    elif kind == "drop_next":
        sym = params.get("symbol")
        f.drop_next.append((str(sym).upper() if sym else None, max(1, int(params.get("count", 1)))))
    elif kind == "stall":
        f.stall_until = time.monotonic() + float(params.get("seconds", 5.0))
    elif kind == "malformed":
        for _ in range(int(params.get("count", 1))):
            conn.queue.append(b'{"stream":"malformed","data":{"e":"depthUpdate","E":')
        conn.wakeup.set()
    elif kind == "duplicate":
        f.duplicate_left += int(params.get("count", 1))
    elif kind == "batching":
        mode = str(params.get("mode", "random"))
        if mode == "canonical":
            f.batching = None
            conn.batchers.clear()
        else:
            f.batching = dict(params, mode=mode)
            for name, stream in conn.streams.items():
                if stream.kind == "depth":
                    conn.batchers[name] = new_batcher(conn, f.batching, name, sim_seed)
    elif kind == "shutdown_notice":
        conn.send_shutdown_notice()
        after = params.get("close_after_s")
        if after is not None:

            async def close_later() -> None:
                await asyncio.sleep(float(after))
                conn.closed_reason = "server shutdown"
                await conn.ws.close(1001, "Server shutdown")

            background(close_later())
