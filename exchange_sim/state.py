"""The simulator's configuration, its per-symbol state, and what its engines may use of it.

The replay and firehose engines and the control API take the simulator as a :class:`SimulatorCore` (or a
protocol extending it), not as ``server.ExchangeSimulator``: the server imports them, so they must not
import it back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from exchange_sim.connection import SimConnection
from exchange_sim.generator import BookGenerator, CanonicalEvent, ClosedCycle, Formatter, SymbolSpec
from exchange_sim.truth import TruthLog


@dataclass
class SimConfig:
    """Everything the simulator can be told; durations are wall-clock seconds (set them short in tests)."""

    market: str = "spot"
    symbols: list[str] = field(default_factory=lambda: ["BTCUSDT"])
    seed: int = 1
    event_interval_ms: int = 100  # exchange time between canonical events (the @depth@100ms cadence)
    speed: float = 1.0  # time compression: exchange time runs this many times faster than wall time
    max_connection_age_s: float = 86400.0
    ping_interval_s: float | None = 20.0
    pong_timeout_s: float | None = 60.0
    shutdown_notice_s: float | None = None  # send serverShutdown this long before the age disconnect
    weight_limit_per_minute: int = 6000
    weight_window_s: float = 60.0
    ban_after_violations: int = 3  # requests answered 429 within one window before the 418 ban
    ban_seconds: float = 120.0
    max_incoming_per_s: int = 5
    max_streams_per_connection: int = 1024
    replay_path: str | None = None
    replay_snapshot_path: str | None = None
    replay_start: str = "on_subscribe"  # on_subscribe | immediate | paused
    firehose_rate: int | None = None  # messages/s per symbol from a pre-encoded pool (benchmarks)
    firehose_pool: int = 2048
    truth_max_events: int = 50_000  # canonical events kept for /_sim/truth and /_sim/book (older: folded)
    start_paused: bool = False
    start_time_ms: int | None = None  # exchange time of the first event (default: now)
    snapshot_mid_event: bool = True  # REST snapshots may land inside the next event's id range
    max_send_buffer_bytes: int = 64 * 1024 * 1024  # a slower consumer is disconnected, as on Binance
    specs: dict[str, SymbolSpec] = field(default_factory=dict)  # per-symbol overrides
    # Served under this path prefix too (e.g. "/x": ws://h:p/x/stream, http://h:p/x/api/v3/depth), to check
    # that clients keep the path of their base URLs.
    path_prefix: str = ""
    request_log_size: int = 10_000  # the last HTTP request paths (with query), upgrades included
    # Per-symbol event rates (events/s, at most one per event_interval_ms): quiet symbols send fewer
    # @depth@100ms messages, as on Binance. A symbol not named publishes every event_interval_ms.
    rates: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.market not in ("spot", "usdm"):
            raise ValueError(f"market must be 'spot' or 'usdm', not {self.market!r}")
        self.symbols = [s.upper() for s in self.symbols]
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if self.event_interval_ms <= 0:
            raise ValueError("event_interval_ms must be > 0")


@dataclass
class SymbolState:
    """One symbol: generator, the next (pending) event, the published truth and its top of book."""

    spec: SymbolSpec
    fmt: Formatter
    gen: BookGenerator
    truth: TruthLog
    pending: CanonicalEvent | None = None
    event_index: int = 0
    group_buffers: dict[int, list[CanonicalEvent]] = field(default_factory=dict)  # canonical grouping
    status: str = "TRADING"  # exchangeInfo status; anything else: not published, REST answers -1121
    rate: float | None = None  # events per second (None: one every event_interval_ms)
    credit: float = 0.0  # events owed at ``rate`` (one is published per whole unit)


class SimulatorCore(Protocol):
    """What the replay and firehose engines use of the simulator: its configuration, symbols, subscribers
    and pause switch."""

    config: SimConfig
    symbols: dict[str, SymbolState]
    subscribers: dict[str, set[SimConnection]]
    paused: asyncio.Event  # set = paused
    firehose: dict[str, ClosedCycle]  # symbol -> pre-encoded pool, in firehose mode
    events_generated: int
