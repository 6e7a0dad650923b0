"""Pipeline configuration read from the environment (interfaces §2), once, at code-location load.

The stream list and the symbol list shape the asset graph and the partition keys, so they must be known
when the definitions are built; everything else (store URL, thresholds, notifier) is also read here so one
place documents every variable the pipeline honours.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass

from depth_core.names import (
    Market,
    parse_symbols,
    validate_collector_id,
    validate_date,
    validate_market,
)

DEFAULT_STORE_URL = "./depth-store"
DEFAULT_STREAMS = "eu-1,ap-1"
DEFAULT_SYMBOLS = "BTCUSDT"
DEFAULT_START_DATE = "2024-01-01"
DEFAULT_SCHEDULE_TIME = "00:30"


class ConfigError(ValueError):
    """An environment variable that cannot be used."""


def parse_streams(value: str) -> list[str]:
    """Parse ``eu-1,ap-1`` into unique validated collector ids, in the given order."""
    out: list[str] = []
    for part in value.split(","):
        part = part.strip()
        if part and validate_collector_id(part) not in out:
            out.append(part)
    if not out:
        raise ConfigError("DEPTH_STREAMS names no stream")
    return out


def parse_schedule_time(value: str) -> tuple[int, int]:
    """``HH:MM`` (UTC) -> (hour, minute)."""
    try:
        hour_text, minute_text = value.strip().split(":")
        hour, minute = int(hour_text), int(minute_text)
    except ValueError as exc:
        raise ConfigError(f"DEPTH_SCHEDULE_TIME {value!r} is not HH:MM") from exc
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ConfigError(f"DEPTH_SCHEDULE_TIME {value!r} is out of range")
    return hour, minute


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the code location reads from the environment.

    ``store_url`` is where raw objects are and outputs go; ``streams`` the collector ids merged;
    ``symbols`` the keys of the ``symbol`` partition dimension; ``market`` spot or usdm;
    ``start_date`` the first ``date`` partition; ``schedule_hour``/``schedule_minute`` when (UTC) the
    daily run for the previous day starts; ``silence_seconds`` how long a stream may deliver nothing
    before the gap sensor alerts; ``retention_days`` how long cleanup keeps merged raw objects;
    ``late_lookback_days`` how far back the late-data sensor compares raw objects with manifests
    (every ``late_interval_seconds``);
    ``alert_webhook_url`` where alerts are POSTed besides the log; ``derived_assets`` whether the
    top-25 book and quality report are built in the same runs (``DEPTH_DERIVED_ASSETS=0`` leaves them out).
    """

    store_url: str = DEFAULT_STORE_URL
    streams: tuple[str, ...] = ("eu-1", "ap-1")
    symbols: tuple[str, ...] = ("BTCUSDT",)
    market: Market = "spot"
    start_date: str = DEFAULT_START_DATE
    schedule_hour: int = 0
    schedule_minute: int = 30
    silence_seconds: float = 60.0
    sensor_interval_seconds: int = 30
    retention_days: float = 0.0
    late_lookback_days: int = 7
    late_interval_seconds: int = 300
    alert_webhook_url: str | None = None
    derived_assets: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineConfig:
        """Read ``DEPTH_*`` variables; anything invalid raises ConfigError naming the variable."""
        e = os.environ if env is None else env
        try:
            hour, minute = parse_schedule_time(e.get("DEPTH_SCHEDULE_TIME", DEFAULT_SCHEDULE_TIME))
            return cls(
                store_url=e.get("DEPTH_STORE_URL", DEFAULT_STORE_URL) or DEFAULT_STORE_URL,
                streams=tuple(parse_streams(e.get("DEPTH_STREAMS", DEFAULT_STREAMS))),
                symbols=tuple(parse_symbols(e.get("DEPTH_SYMBOLS", DEFAULT_SYMBOLS))),
                market=validate_market(e.get("DEPTH_MARKET", "spot") or "spot"),
                start_date=validate_date(e.get("DEPTH_START_DATE", DEFAULT_START_DATE)),
                schedule_hour=hour,
                schedule_minute=minute,
                silence_seconds=float(e.get("DEPTH_GAP_SILENCE_SECONDS", "60")),
                sensor_interval_seconds=int(e.get("DEPTH_SENSOR_INTERVAL_SECONDS", "30")),
                retention_days=float(e.get("DEPTH_RAW_RETENTION_DAYS", "0")),
                late_lookback_days=int(e.get("DEPTH_LATE_LOOKBACK_DAYS", "7")),
                late_interval_seconds=int(e.get("DEPTH_LATE_SENSOR_INTERVAL_SECONDS", "300")),
                alert_webhook_url=e.get("DEPTH_ALERT_WEBHOOK_URL") or None,
                derived_assets=e.get("DEPTH_DERIVED_ASSETS", "1").strip().lower()
                not in ("0", "false", "no", "off"),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid pipeline configuration: {exc}") from exc

    @property
    def first_date(self) -> dt.date:
        return dt.date.fromisoformat(self.start_date)


def load_config() -> PipelineConfig:
    """The configuration of this process (read from ``os.environ`` at each call)."""
    return PipelineConfig.from_env()
