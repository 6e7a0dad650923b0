"""Command-line flags and environment variables of ``depth-collector``
(docs/collector.md, "Flags and environment").

Every flag has an environment variable (``DEPTH_...``); a flag given on the command line wins. Every
value is checked here, before anything starts, so a bad value ends the process with exit status 2 and a
message naming the flag, never half-way through a run.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from depth_core.names import InvalidNameError, Market, parse_symbols, validate_collector_id, validate_market

DEFAULT_WS_URL: dict[Market, str] = {
    "spot": "wss://stream.binance.com:9443",
    "usdm": "wss://fstream.binance.com/public",
}
DEFAULT_REST_URL: dict[Market, str] = {
    "spot": "https://api.binance.com",
    "usdm": "https://fapi.binance.com",
}
# spot 1000 weighs 50: 400 symbols anchor in under 7 minutes on half of the 6,000 a minute (5000 weighs 250)
DEFAULT_SNAPSHOT_DEPTH: dict[Market, int] = {"spot": 1000, "usdm": 1000}
# Binance's published REQUEST_WEIGHT limit per minute and IP; the collector uses half by default so that
# a second process on the same IP (or a person with curl) never pushes it into a 429.
EXCHANGE_WEIGHT_LIMIT: dict[Market, int] = {"spot": 6000, "usdm": 2400}
VALID_DEPTH_LIMITS: dict[Market, tuple[int, ...]] = {
    "spot": tuple(range(1, 5001)),
    "usdm": (5, 10, 20, 50, 100, 500, 1000),
}


# layout 2: one object per stream per flush (docs/raw-format.md); v1 stays selectable for old readers
DEFAULT_RAW_LAYOUT = 2


class ConfigError(ValueError):
    """A flag or environment value that cannot be used; the CLI turns it into exit status 2."""


@dataclass(frozen=True)
class Flag:
    """One option: its flag, environment variable, and how to parse it."""

    name: str  # attribute name in CollectorConfig
    flag: str
    env: str
    help: str
    metavar: str = "VALUE"
    is_switch: bool = False


FLAGS: tuple[Flag, ...] = (
    Flag(
        "collector_id",
        "--collector-id",
        "DEPTH_COLLECTOR_ID",
        "stream name, ^[a-z0-9][a-z0-9_-]{0,31}$ (required)",
        "ID",
    ),
    Flag(
        "symbols",
        "--symbols",
        "DEPTH_SYMBOLS",
        "comma-separated symbols, e.g. BTCUSDT,ETHUSDT (this or --symbols-from)",
        "LIST",
    ),
    Flag(
        "symbols_from",
        "--symbols-from",
        "DEPTH_SYMBOLS_FROM",
        "'exchange': every TRADING symbol of --quote-asset from exchangeInfo, followed while running "
        "(instead of --symbols)",
        "SOURCE",
    ),
    Flag(
        "quote_asset",
        "--quote-asset",
        "DEPTH_QUOTE_ASSET",
        "quote asset of --symbols-from exchange (default USDT)",
        "ASSET",
    ),
    Flag(
        "symbols_refresh",
        "--symbols-refresh",
        "DEPTH_SYMBOLS_REFRESH",
        "seconds between exchangeInfo refreshes with --symbols-from exchange (default 300)",
        "S",
    ),
    Flag(
        "store",
        "--store",
        "DEPTH_STORE_URL",
        "s3://bucket/prefix, a local path or file:///abs/path (required)",
        "URL",
    ),
    Flag("market", "--market", "DEPTH_MARKET", "spot (default) or usdm", "MARKET"),
    Flag(
        "ws_url", "--ws-url", "DEPTH_WS_URL", "websocket base URL (default: Binance's public endpoint)", "URL"
    ),
    Flag(
        "rest_url",
        "--rest-url",
        "DEPTH_REST_URL",
        "REST base URL (default: Binance's public endpoint)",
        "URL",
    ),
    Flag("speed", "--speed", "DEPTH_SPEED", "100ms (default) or 1000ms", "SPEED"),
    Flag(
        "flush_seconds",
        "--flush-seconds",
        "DEPTH_FLUSH_SECONDS",
        "spool segment length in seconds (default 10)",
        "S",
    ),
    Flag(
        "snapshot_interval",
        "--snapshot-interval",
        "DEPTH_SNAPSHOT_INTERVAL",
        "periodic REST snapshot per symbol, seconds; 0 = off (default 3600)",
        "S",
    ),
    Flag(
        "snapshot_depth",
        "--snapshot-depth",
        "DEPTH_SNAPSHOT_DEPTH",
        "REST snapshot limit (default 5000 spot, 1000 usdm)",
        "N",
    ),
    Flag(
        "spool_dir",
        "--spool-dir",
        "DEPTH_SPOOL_DIR",
        "local spool folder (default: per collector id under the user state dir)",
        "DIR",
    ),
    Flag(
        "spool_max_bytes",
        "--spool-max-bytes",
        "DEPTH_SPOOL_MAX_BYTES",
        "disk budget of the spool in bytes, suffixes K/M/G allowed (default 10G)",
        "BYTES",
    ),
    Flag(
        "spool_max_pending_bytes",
        "--spool-max-pending-bytes",
        "DEPTH_SPOOL_MAX_PENDING_BYTES",
        "received lines not yet taken by the spool writer, past which socket reading pauses until it "
        "catches up (flow control; default 8M)",
        "BYTES",
    ),
    Flag(
        "segment_max_bytes",
        "--segment-max-bytes",
        "DEPTH_SEGMENT_MAX_BYTES",
        "roll a spool segment at this size (default 64M)",
        "BYTES",
    ),
    Flag(
        "fsync_interval",
        "--fsync-interval",
        "DEPTH_FSYNC_INTERVAL",
        "seconds between spool flush+fsync, at most 0.2 (default 0.1)",
        "S",
    ),
    Flag(
        "metrics_port",
        "--metrics-port",
        "DEPTH_METRICS_PORT",
        "serve /metrics and /healthz on this port (default off; 0 = any free port)",
        "PORT",
    ),
    Flag(
        "metrics_host",
        "--metrics-host",
        "DEPTH_METRICS_HOST",
        "address for the metrics server (default 127.0.0.1)",
        "HOST",
    ),
    Flag(
        "shutdown_grace",
        "--shutdown-grace",
        "DEPTH_SHUTDOWN_GRACE",
        "seconds to keep retrying uploads after SIGTERM (default 120)",
        "S",
    ),
    Flag(
        "max_streams_per_connection",
        "--max-streams-per-connection",
        "DEPTH_MAX_STREAMS_PER_CONNECTION",
        "streams per websocket connection (default 1024)",
        "N",
    ),
    Flag(
        "max_connection_age",
        "--max-connection-age",
        "DEPTH_MAX_CONNECTION_AGE",
        "planned make-before-break reconnect after this many seconds (default 84600 = 23.5 h)",
        "S",
    ),
    Flag(
        "overlap_timeout",
        "--overlap-timeout",
        "DEPTH_OVERLAP_TIMEOUT",
        "longest wait for the new connection to overlap the old one (default 30)",
        "S",
    ),
    Flag(
        "stall_timeout",
        "--stall-timeout",
        "DEPTH_STALL_TIMEOUT",
        "reconnect a connection silent this many seconds (default 60; 0 = off)",
        "S",
    ),
    Flag(
        "rest_weight_per_minute",
        "--rest-weight-per-minute",
        "DEPTH_REST_WEIGHT_PER_MINUTE",
        "REST weight budget per minute (default half of Binance's limit)",
        "N",
    ),
    Flag(
        "upload_concurrency",
        "--upload-concurrency",
        "DEPTH_UPLOAD_CONCURRENCY",
        "parallel uploads (default 4)",
        "N",
    ),
    Flag(
        "gzip_level",
        "--gzip-level",
        "DEPTH_GZIP_LEVEL",
        "gzip level of raw objects, 1-9 (default 1: cheapest CPU per message)",
        "N",
    ),
    Flag(
        "book_ticker",
        "--book-ticker",
        "DEPTH_BOOK_TICKER",
        "also record <symbol>@bookTicker (env: 1/true)",
        is_switch=True,
    ),
    Flag(
        "raw_layout",
        "--raw-layout",
        "DEPTH_RAW_LAYOUT",
        "raw object layout: v2 = one object per stream per flush holding every symbol, "
        "v1 = one object per symbol (default v2)",
        "v1|v2",
    ),
    Flag("log_format", "--log-format", "DEPTH_LOG_FORMAT", "json (default) or kv (key=value)", "FMT"),
    Flag("log_level", "--log-level", "DEPTH_LOG_LEVEL", "DEBUG, INFO (default), WARNING", "LEVEL"),
    Flag(
        "clock_offset_warn",
        "--clock-offset-warn",
        "DEPTH_CLOCK_OFFSET_WARN",
        "warn when the clock offset to the exchange exceeds this many seconds (default 1.0)",
        "S",
    ),
)


@dataclass(frozen=True)
class CollectorConfig:
    """Everything one collector process needs, validated."""

    collector_id: str
    symbols: tuple[str, ...]  # empty with symbols_from="exchange" (the exchange names them at start)
    store: str
    symbols_from: str | None = None  # "exchange": follow exchangeInfo
    quote_asset: str = "USDT"
    symbols_refresh: float = 300.0
    market: Market = "spot"
    ws_url: str = ""
    rest_url: str = ""
    speed: str = "100ms"
    flush_seconds: float = 10.0
    snapshot_interval: float = 3600.0
    snapshot_depth: int = 0
    spool_dir: Path = field(default_factory=lambda: Path("."))
    spool_max_bytes: int = 10 * 1024**3
    spool_max_pending_bytes: int = 8 * 1024**2
    segment_max_bytes: int = 64 * 1024**2
    fsync_interval: float = 0.1
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    shutdown_grace: float = 120.0
    max_streams_per_connection: int = 1024
    max_connection_age: float = 84600.0
    overlap_timeout: float = 30.0
    stall_timeout: float = 60.0
    rest_weight_per_minute: int = 0
    upload_concurrency: int = 4
    gzip_level: int = 1
    book_ticker: bool = False
    raw_layout: int = DEFAULT_RAW_LAYOUT
    log_format: str = "json"
    log_level: str = "INFO"
    clock_offset_warn: float = 1.0

    @property
    def depth_stream_suffix(self) -> str:
        return "@depth@100ms" if self.speed == "100ms" else "@depth"

    @property
    def streams_per_symbol(self) -> int:
        return 2 if self.book_ticker else 1


def default_spool_dir(collector_id: str, env: Mapping[str, str]) -> Path:
    """Per collector id under the user's state directory (XDG_STATE_HOME or ~/.local/state)."""
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "depth-collector" / collector_id


def parse_size(text: str, flag: str) -> int:
    """``10G``, ``512M``, ``64k`` or plain bytes."""
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", 1024), ("M", 1024**2), ("G", 1024**3), ("T", 1024**4)):
        if s.endswith(suffix):
            s, mult = s[:-1], m
            break
    try:
        value = float(s) * mult
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a size (bytes, or with K/M/G/T)") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{flag}: {text!r} must be a positive size")
    return int(value)


def _number(
    text: str, flag: str, *, minimum: float, maximum: float = math.inf, integer: bool = False
) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{flag}: {text!r} is not {kind}") from None
    if not math.isfinite(value) or value < minimum or value > maximum:
        raise ConfigError(f"{flag}: {text!r} must be between {minimum:g} and {maximum:g}")
    return value


def _truthy(text: str, flag: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{flag}: {text!r} is not a boolean (1/0, true/false)")


def _check_url(text: str, flag: str, schemes: tuple[str, ...]) -> str:
    url = text.strip().rstrip("/")
    if not any(url.startswith(s + "://") for s in schemes) or len(url) <= len(url.split("://")[0]) + 3:
        raise ConfigError(f"{flag}: {text!r} must be a {'/'.join(schemes)} URL")
    return url


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of exiting, so every bad input shares one path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="depth-collector",
        description="Capture Binance diff-depth streams into an object store (one process = one stream). "
        "Every flag also reads its environment variable; the flag wins.",
    )
    for f in FLAGS:
        help_text = f"{f.help} [env {f.env}]"
        if f.is_switch:
            p.add_argument(f.flag, dest=f.name, action="store_const", const="1", default=None, help=help_text)
        else:
            p.add_argument(f.flag, dest=f.name, default=None, metavar=f.metavar, help=help_text)
    return p


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> CollectorConfig:
    """Flags over environment over defaults; raises ConfigError with a message naming the flag."""
    env = os.environ if env is None else env
    ns = build_parser().parse_args(list(argv) if argv is not None else None)
    raw: dict[str, str] = {}
    for f in FLAGS:
        value = getattr(ns, f.name)
        if value is None:
            value = env.get(f.env)
        if value is not None:
            raw[f.name] = value

    def need(name: str) -> str:
        if name not in raw or not raw[name].strip():
            f = next(f for f in FLAGS if f.name == name)
            raise ConfigError(f"{f.flag} (or {f.env}) is required")
        return raw[name]

    try:
        collector_id = validate_collector_id(need("collector_id"))
    except InvalidNameError as exc:
        raise ConfigError(f"--collector-id: {exc}") from None
    # --symbols or --symbols-from: a flag beats the other's environment variable; two flags are an error
    symbols_from: str | None = None
    symbols: tuple[str, ...] = ()
    from_flag, symbols_flag = ns.symbols_from is not None, ns.symbols is not None
    if from_flag and symbols_flag:
        raise ConfigError("give --symbols or --symbols-from, not both")
    use_from = from_flag or (not symbols_flag and bool(raw.get("symbols_from", "").strip()))
    if use_from:
        symbols_from = raw["symbols_from"].strip().lower()
        if symbols_from != "exchange":
            raise ConfigError(f"--symbols-from: {raw['symbols_from']!r} must be 'exchange'")
    else:
        if "symbols" not in raw or not raw["symbols"].strip():
            raise ConfigError("--symbols (or DEPTH_SYMBOLS) or --symbols-from exchange is required")
        try:
            symbols = tuple(parse_symbols(raw["symbols"]))
        except InvalidNameError as exc:
            raise ConfigError(f"--symbols: {exc}") from None
    quote_asset = raw.get("quote_asset", "USDT").strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{2,12}", quote_asset):
        raise ConfigError(f"--quote-asset: {quote_asset!r} is not an asset name (e.g. USDT)")
    store = need("store").strip()
    try:
        market = validate_market(raw.get("market", "spot").strip().lower())
    except InvalidNameError as exc:
        raise ConfigError(f"--market: {exc}") from None
    speed = raw.get("speed", "100ms").strip()
    if speed not in ("100ms", "1000ms"):
        raise ConfigError(f"--speed: {speed!r} must be 100ms or 1000ms")
    ws_url = _check_url(raw.get("ws_url") or DEFAULT_WS_URL[market], "--ws-url", ("ws", "wss"))
    rest_url = _check_url(raw.get("rest_url") or DEFAULT_REST_URL[market], "--rest-url", ("http", "https"))

    def num(name: str, default: float, **kw: float) -> float:
        flag = next(f.flag for f in FLAGS if f.name == name)
        return _number(raw[name], flag, **kw) if name in raw else default  # type: ignore[arg-type]

    depth = int(num("snapshot_depth", DEFAULT_SNAPSHOT_DEPTH[market], minimum=1, maximum=5000, integer=True))
    if depth not in VALID_DEPTH_LIMITS[market]:
        raise ConfigError(
            f"--snapshot-depth: {depth} is not a valid {market} depth limit "
            f"({', '.join(map(str, VALID_DEPTH_LIMITS[market]))})"
        )
    metrics_port: int | None = None
    if raw.get("metrics_port", "").strip():
        metrics_port = int(
            _number(raw["metrics_port"], "--metrics-port", minimum=0, maximum=65535, integer=True)
        )
    log_format = raw.get("log_format", "json").strip().lower()
    if log_format not in ("json", "kv"):
        raise ConfigError(f"--log-format: {log_format!r} must be json or kv")
    log_level = raw.get("log_level", "INFO").strip().upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"--log-level: {log_level!r} must be DEBUG, INFO, WARNING or ERROR")
    spool_dir = (
        Path(raw["spool_dir"]).expanduser() if raw.get("spool_dir") else default_spool_dir(collector_id, env)
    )
    weight = int(num("rest_weight_per_minute", EXCHANGE_WEIGHT_LIMIT[market] // 2, minimum=1, integer=True))
    max_streams = int(num("max_streams_per_connection", 1024, minimum=1, maximum=1024, integer=True))
    book_ticker = _truthy(raw["book_ticker"], "--book-ticker") if "book_ticker" in raw else False
    if book_ticker and max_streams < 2:
        raise ConfigError("--max-streams-per-connection must be at least 2 with --book-ticker")

    layout_text = raw.get("raw_layout", f"v{DEFAULT_RAW_LAYOUT}").strip().lower()
    if layout_text not in ("v1", "v2", "1", "2"):
        raise ConfigError(f"--raw-layout: {layout_text!r} must be v1 or v2")
    raw_layout = int(layout_text.removeprefix("v"))

    return CollectorConfig(
        collector_id=collector_id,
        symbols=symbols,
        store=store,
        symbols_from=symbols_from,
        quote_asset=quote_asset,
        symbols_refresh=num("symbols_refresh", 300.0, minimum=0.1),
        market=market,
        ws_url=ws_url,
        rest_url=rest_url,
        speed=speed,
        flush_seconds=num("flush_seconds", 10.0, minimum=0.2, maximum=3600),
        snapshot_interval=num("snapshot_interval", 3600.0, minimum=0),
        snapshot_depth=depth,
        spool_dir=spool_dir,
        spool_max_bytes=parse_size(raw["spool_max_bytes"], "--spool-max-bytes")
        if "spool_max_bytes" in raw
        else 10 * 1024**3,
        spool_max_pending_bytes=parse_size(raw["spool_max_pending_bytes"], "--spool-max-pending-bytes")
        if "spool_max_pending_bytes" in raw
        else 8 * 1024**2,
        segment_max_bytes=parse_size(raw["segment_max_bytes"], "--segment-max-bytes")
        if "segment_max_bytes" in raw
        else 64 * 1024**2,
        fsync_interval=num("fsync_interval", 0.1, minimum=0.005, maximum=0.2),
        metrics_port=metrics_port,
        metrics_host=raw.get("metrics_host", "127.0.0.1").strip() or "127.0.0.1",
        shutdown_grace=num("shutdown_grace", 120.0, minimum=0),
        max_streams_per_connection=max_streams,
        max_connection_age=num("max_connection_age", 84600.0, minimum=1, maximum=86400),
        overlap_timeout=num("overlap_timeout", 30.0, minimum=0.1),
        stall_timeout=num("stall_timeout", 60.0, minimum=0),
        rest_weight_per_minute=weight,
        upload_concurrency=int(num("upload_concurrency", 4, minimum=1, maximum=64, integer=True)),
        gzip_level=int(num("gzip_level", 1, minimum=1, maximum=9, integer=True)),
        book_ticker=book_ticker,
        raw_layout=raw_layout,
        log_format=log_format,
        log_level=log_level,
        clock_offset_warn=num("clock_offset_warn", 1.0, minimum=0),
    )
