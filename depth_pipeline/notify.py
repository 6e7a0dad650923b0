"""Pluggable alert delivery for the stream-gap sensor: the log always, a webhook when configured."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

log = logging.getLogger("depth_pipeline.alerts")


@dataclass(frozen=True)
class Alert:
    """One alert: ``kind`` (``silent``, ``gap``, ``recovered``), the stream, a sentence and details."""

    kind: str
    stream: str
    message: str
    symbol: str | None = None
    silent_seconds: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Notifier(Protocol):
    """Anything that can deliver an alert (pass your own to ``build_gap_sensor``)."""

    def send(self, alert: Alert) -> None: ...


class LogNotifier:
    """Writes alerts to the ``depth_pipeline.alerts`` logger (the default)."""

    def send(self, alert: Alert) -> None:
        log.warning("depth alert [%s] %s: %s", alert.kind, alert.stream, alert.message)


class WebhookNotifier:
    """POSTs each alert as JSON (``{"text": ..., "alert": {...}}``, Slack-compatible) to a URL."""

    def __init__(self, url: str, timeout_seconds: float = 5.0) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds

    def send(self, alert: Alert) -> None:
        body = json.dumps(
            {"text": f"[{alert.kind}] {alert.stream}: {alert.message}", "alert": alert.to_dict()}
        )
        request = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except OSError as exc:  # an unreachable webhook must not stop the sensor (the log still has it)
            log.error("alert webhook %s failed: %s", self.url, exc)


class FanOutNotifier:
    """Sends every alert to each of several notifiers."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = list(notifiers)

    def send(self, alert: Alert) -> None:
        for notifier in self.notifiers:
            notifier.send(alert)


def build_notifier(webhook_url: str | None) -> Notifier:
    """The log, plus the webhook at ``DEPTH_ALERT_WEBHOOK_URL`` when set."""
    notifiers: list[Notifier] = [LogNotifier()]
    if webhook_url:
        notifiers.append(WebhookNotifier(webhook_url))
    return FanOutNotifier(notifiers)
