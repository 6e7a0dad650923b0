"""``SimControl``: a small synchronous client of the simulator's ``/_sim/...`` HTTP control API."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class SimControlError(RuntimeError):
    """The control API answered an error."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"simulator control API answered {status}: {body}")
        self.status = status
        self.body = body


class SimControl:
    """Drive a simulator (in this process or another) over HTTP; stdlib only, safe from any thread."""

    def __init__(self, rest_url: str, timeout: float = 10.0) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, name: str, **query: Any) -> Any:
        q = {
            k: (json.dumps(v) if isinstance(v, dict | list) else str(v))
            for k, v in query.items()
            if v is not None
        }
        url = f"{self.rest_url}/_sim/{name}"
        if q:
            url += "?" + urllib.parse.urlencode(q)
        req = urllib.request.Request(
            url, method=method, headers={"Content-Length": "0"} if method == "POST" else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise SimControlError(exc.code, exc.read().decode("utf-8", "replace")) from None

    # -- inspection ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return dict(self._call("GET", "status"))

    def connections(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "connections")["connections"])

    def last_update_id(self, symbol: str) -> int:
        return int(self._call("GET", "last_update_id", symbol=symbol)["last_update_id"])

    def truth(
        self,
        symbol: str,
        from_id: int = 0,
        to_id: int = 2**62,
        *,
        fine: bool = False,
        max_count: int = 100_000,
    ) -> list[dict[str, Any]]:
        """Canonical events (Binance ``data`` objects) overlapping ``[from_id; to_id]``."""
        body = self._call(
            "GET",
            "truth",
            symbol=symbol,
            from_id=from_id,
            to_id=to_id,
            fine=1 if fine else None,
            max=max_count,
        )
        return list(body["events"])

    def book(self, symbol: str, update_id: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """The exact book after update id ``update_id`` (default: the last published): bids, asks best
        first."""
        return dict(self._call("GET", "book", symbol=symbol, update_id=update_id, limit=limit))

    # -- control ----------------------------------------------------------------------------------------
    def fault(self, kind: str, target: int | str = "all", **params: Any) -> list[int]:
        """Arm a fault (close, drop_ids, drop_next, stall, malformed, duplicate, batching, shutdown_notice).

        ``target`` is a connection id, ``"all"`` or ``"next"``; returns the connection ids it hit.
        """
        body = self._call("POST", "fault", kind=kind, target=target, params=params or None)
        return [int(i) for i in body["applied_to"]]

    def pause(self) -> None:
        self._call("POST", "pause")

    def resume(self) -> None:
        self._call("POST", "resume")

    def reset_weights(self) -> None:
        self._call("POST", "reset_weights")

    def list_symbol(self, symbol: str, rate: float | None = None) -> bool:
        """List a symbol while running: it trades (events, snapshots, exchangeInfo TRADING) from now on."""
        return bool(self._call("POST", "list", symbol=symbol, rate=rate)["listed"])

    def delist_symbol(self, symbol: str) -> bool:
        """Delist a symbol: no more events, exchangeInfo status BREAK, REST depth -1121."""
        return bool(self._call("POST", "delist", symbol=symbol)["delisted"])
