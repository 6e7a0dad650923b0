"""Structured logs: one JSON object (or one key=value line) per event, on stderr.

Only rare events are logged (connect, disconnect, gap, snapshot, upload failure, spool filling, clock
warnings); the per-message path never logs, it only counts (see ``collectors.metrics``).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import orjson

LOGGER_NAME = "depth_collector"
log = logging.getLogger(LOGGER_NAME)


def event(level: int, name: str, **fields: Any) -> None:
    """Log one structured event; ``fields`` become top-level keys."""
    if log.isEnabledFor(level):
        log.log(level, name, extra={"depth_fields": fields})


def info(name: str, **fields: Any) -> None:
    event(logging.INFO, name, **fields)


def warning(name: str, **fields: Any) -> None:
    event(logging.WARNING, name, **fields)


def error(name: str, **fields: Any) -> None:
    event(logging.ERROR, name, **fields)


def _base(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "event": record.getMessage(),
    }
    out.update(getattr(record, "depth_fields", {}))
    if record.exc_info:
        out["exception"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_base(record), default=str).decode()


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for k, v in _base(record).items():
            text = v if isinstance(v, str) else orjson.dumps(v, default=str).decode()
            if not text or any(c in text for c in ' "='):
                text = orjson.dumps(text).decode()
            parts.append(f"{k}={text}")
        return " ".join(parts)


def setup(fmt: str = "json", level: str = "INFO") -> None:
    """Send the collector's events to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
