"""Pipeline configuration read from the environment (docs/pipeline.md, "Configuration"), once, at
code-location load.

The stream list shapes the asset graph, so it must be known when the definitions are built. The symbols of
a day are not configuration: they are whatever the day's raw data holds (``DEPTH_SYMBOLS`` only filters
them). Everything else (store URL, thresholds, notifier, fan-out) is also read here so one place documents
every variable the pipeline honours.
"""

from __future__ import annotations

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
DEFAULT_SCHEDULE_TIME = "00:30"
DEFAULT_PARALLEL_STEPS = max(1, os.cpu_count() or 1)


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
    ``symbols`` an optional filter of the symbols merged (empty: every symbol the day's raw data holds);
    ``market`` spot or usdm; ``start_date`` the first ``date`` partition (None: the first date the store
    holds data for, see ``depth_pipeline.daydata.first_date``); ``schedule_hour``/``schedule_minute`` when
    (UTC) the daily run for the previous day starts; ``silence_seconds`` how long a stream may deliver nothing
    before the gap sensor alerts; ``retention_days`` how long cleanup keeps merged raw objects;
    ``late_lookback_days`` how far back the late-data sensor compares raw objects with manifests
    (every ``late_interval_seconds``);
    ``alert_webhook_url`` where alerts are POSTed besides the log; ``derived_assets`` whether the
    top-25 book and quality report are built in the same runs (``DEPTH_DERIVED_ASSETS=0`` leaves them out);
    ``symbols_per_step`` how many symbols one merge (or derive) step takes, 0 for "auto" (the default:
    ``depth_pipeline.assets.merged.step_size``, 2 steps per parallel step, 25 to 100 symbols each);
    ``max_parallel_steps`` how many steps of a run the multiprocess executor runs at once (1: in-process);
    ``lease_seconds`` how long the store lease of a day stays valid without renewal; ``executor``
    ``multiprocess`` (one box) or ``k8s`` (a pod per step, deploy/k8s/); ``step_cpu``, ``step_memory``,
    ``step_memory_limit`` the requests and limit of each step pod (``k8s`` only).
    """

    store_url: str = DEFAULT_STORE_URL
    streams: tuple[str, ...] = ("eu-1", "ap-1")
    symbols: tuple[str, ...] = ()
    market: Market = "spot"
    start_date: str | None = None
    schedule_hour: int = 0
    schedule_minute: int = 30
    silence_seconds: float = 60.0
    sensor_interval_seconds: int = 30
    retention_days: float = 0.0
    late_lookback_days: int = 7
    late_interval_seconds: int = 300
    alert_webhook_url: str | None = None
    derived_assets: bool = True
    symbols_per_step: int = 0
    max_parallel_steps: int = DEFAULT_PARALLEL_STEPS
    lease_seconds: float = 600.0
    executor: str = "multiprocess"
    step_cpu: str = "1"
    step_memory: str = "2Gi"
    step_memory_limit: str = "3Gi"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineConfig:
        """Read ``DEPTH_*`` variables; anything invalid raises ConfigError naming the variable."""
        e = os.environ if env is None else env
        try:
            hour, minute = parse_schedule_time(e.get("DEPTH_SCHEDULE_TIME", DEFAULT_SCHEDULE_TIME))
            return cls(
                store_url=e.get("DEPTH_STORE_URL", DEFAULT_STORE_URL) or DEFAULT_STORE_URL,
                streams=tuple(parse_streams(e.get("DEPTH_STREAMS", DEFAULT_STREAMS))),
                symbols=tuple(parse_symbols(e.get("DEPTH_SYMBOLS", "")))
                if e.get("DEPTH_SYMBOLS", "").strip()
                else (),
                market=validate_market(e.get("DEPTH_MARKET", "spot") or "spot"),
                start_date=validate_date(e["DEPTH_START_DATE"])
                if e.get("DEPTH_START_DATE", "").strip()
                else None,
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
                symbols_per_step=_symbols_per_step(e),
                max_parallel_steps=_positive_int(e, "DEPTH_MAX_PARALLEL_STEPS", DEFAULT_PARALLEL_STEPS),
                lease_seconds=float(e.get("DEPTH_LEASE_SECONDS", "600")),
                executor=_executor(e.get("DEPTH_EXECUTOR", "multiprocess")),
                step_cpu=e.get("DEPTH_STEP_CPU", "1") or "1",
                step_memory=e.get("DEPTH_STEP_MEMORY", "2Gi") or "2Gi",
                step_memory_limit=e.get("DEPTH_STEP_MEMORY_LIMIT", "3Gi") or "3Gi",
            )
        except ValueError as exc:
            raise ConfigError(f"invalid pipeline configuration: {exc}") from exc

    def wants(self, symbol: str) -> bool:
        """Whether ``DEPTH_SYMBOLS`` (when set) lets ``symbol`` through."""
        return not self.symbols or symbol in self.symbols


def _executor(value: str) -> str:
    value = (value or "multiprocess").strip().lower()
    if value not in ("multiprocess", "k8s"):
        raise ConfigError(f"DEPTH_EXECUTOR must be multiprocess or k8s, not {value!r}")
    return value


def _symbols_per_step(env: Mapping[str, str]) -> int:
    """``DEPTH_SYMBOLS_PER_STEP``: ``auto`` (default, 0) or a positive number."""
    if env.get("DEPTH_SYMBOLS_PER_STEP", "").strip().lower() in ("", "auto"):
        return 0
    return _positive_int(env, "DEPTH_SYMBOLS_PER_STEP", 1)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = int(env.get(name, str(default)) or default)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, not {value}")
    return value


def load_config() -> PipelineConfig:
    """The configuration of this process (read from ``os.environ`` at each call)."""
    return PipelineConfig.from_env()
