"""REST calls through one request-weight budget that follows Binance's published weights.

Every REST call waits for weight in a rolling one-minute window (by default half of the exchange's
per-IP limit), also respects the exchange's own ``X-MBX-USED-WEIGHT-1M`` count (a request that would
take this minute's count over the exchange's limit waits for the next minute), and on 429 or 418 stops
*all* REST calls until ``Retry-After`` has passed: an IP ban (418) would cost every symbol its
snapshots, so nothing is retried early. Requests use ``urllib`` in a worker thread, so plain
``https://`` endpoints work without extra dependencies.
"""

from __future__ import annotations

import asyncio
import collections
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import orjson

from collectors import logs
from depth_core.names import SYMBOL_RE, Market


def depth_weight(market: Market, limit: int) -> int:
    """Binance's published request weight of one depth snapshot."""
    if market == "spot":
        # deliberately repeated in exchange_sim/weights.py spot_weight: the simulator keeps its own table
        if limit <= 100:
            return 5
        if limit <= 500:
            return 25
        if limit <= 1000:
            return 50
        return 250
    if limit <= 50:
        return 2
    if limit <= 100:
        return 5
    if limit <= 500:
        return 10
    return 20


def depth_path(market: Market) -> str:
    return "/api/v3/depth" if market == "spot" else "/fapi/v1/depth"


def exchange_info_path(market: Market) -> str:
    return "/api/v3/exchangeInfo" if market == "spot" else "/fapi/v1/exchangeInfo"


# Binance's weight of a full exchangeInfo: 20 on spot, 1 on USD-M
EXCHANGE_INFO_WEIGHT: dict[str, int] = {"spot": 20, "usdm": 1}


def time_path(market: Market) -> str:
    return "/api/v3/time" if market == "spot" else "/fapi/v1/time"


class RestError(Exception):
    """A REST call that did not return a usable body."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class InvalidSymbolError(RestError):
    """The exchange answered -1121 (invalid symbol)."""


@dataclass(frozen=True)
class RestResponse:
    status: int
    body: bytes
    headers: dict[str, str]
    sent_ns: int
    received_ns: int


class WeightBudget:
    """Our own rolling 60 s weight window, the exchange's count of this minute, and a pause after 429/418.

    ``delay(weight)`` says how long a request of that weight must wait (0: go now); ``charge`` spends
    it. The exchange counts weight per IP and calendar minute and tells us the count in
    ``X-MBX-USED-WEIGHT-1M``: a request that would take that count over the exchange's limit waits for
    the next minute, whoever else on this IP spent the weight.
    """

    def __init__(self, per_minute: int, exchange_limit: int) -> None:
        self.per_minute = per_minute
        self.exchange_limit = exchange_limit
        self._spent: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = asyncio.Lock()
        self.paused_until = 0.0  # monotonic
        self.exchange_used: int | None = None
        self.exchange_minute = 0  # wall-clock minute (epoch seconds // 60) of that count
        self.rate_limited = 0  # 429 count
        self.banned = 0  # 418 count
        self.exchange_waits = 0  # times a request waited because the exchange's count was near its limit

    def _used(self, now: float) -> int:
        while self._spent and now - self._spent[0][0] >= 60.0:
            self._spent.popleft()
        return sum(w for _, w in self._spent)

    def used(self) -> int:
        """Weight spent in the last 60 s."""
        return self._used(time.monotonic())

    def delay(self, weight: int, *, reserve: int = 0) -> float:
        """Seconds until ``weight`` may be spent while leaving ``reserve`` of our budget unused (0 = now).

        A weight larger than the whole budget goes when the window is empty.
        """
        now = time.monotonic()
        if now < self.paused_until:
            return self.paused_until - now
        used = self._used(now)
        room = self.per_minute - reserve
        if self._spent and used + weight > room:
            need = used + weight - room
            freed = 0
            for t, w in self._spent:
                freed += w
                if freed >= need:
                    return max(0.01, t + 60.0 - now)
            return max(0.01, self._spent[-1][0] + 60.0 - now)
        if self.exchange_used is not None:
            wall = time.time()
            minute = int(wall // 60)
            if minute == self.exchange_minute and self.exchange_used + weight > self.exchange_limit:
                self.exchange_waits += 1
                return (minute + 1) * 60.0 - wall + 0.25
        return 0.0

    def charge(self, weight: int) -> None:
        self._spent.append((time.monotonic(), weight))

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` fits, then spend it."""
        async with self._lock:
            while (wait := self.delay(weight)) > 0:
                await asyncio.sleep(min(wait, 1.0))
            self.charge(weight)

    def note_headers(self, headers: dict[str, str]) -> None:
        used = headers.get("x-mbx-used-weight-1m")
        if used and used.isdigit():
            self.exchange_used = int(used)
            self.exchange_minute = int(time.time() // 60)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


def _retry_after(headers: dict[str, str], default: float) -> float:
    value = headers.get("retry-after", "")
    try:
        return max(1.0, float(value))
    except ValueError:
        return default


class RestClient:
    """Snapshots and server time for one market, all through :class:`WeightBudget`."""

    def __init__(self, base_url: str, market: Market, budget: WeightBudget, *, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.market = market
        self.budget = budget
        self.timeout = timeout
        self.user_agent = "depth-collector/0.1"

    def _get(self, url: str) -> RestResponse:
        req = urllib.request.Request(
            url, headers={"User-Agent": self.user_agent, "Accept": "application/json"}
        )
        sent = time.time_ns()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
                status = resp.status
                headers = {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as exc:
            body = exc.read() if exc.fp is not None else b""
            status = exc.code
            headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        return RestResponse(status, body, headers, sent, time.time_ns())

    async def get(self, path: str, weight: int, *, charged: bool = False) -> RestResponse:
        """One budgeted GET (``charged``: the caller already spent its weight); raises RestError for
        anything but 200 (after pausing on 429/418)."""
        if not charged:
            await self.budget.acquire(weight)
        url = f"{self.base_url}{path}"
        try:
            resp = await asyncio.to_thread(self._get, url)
        except (OSError, urllib.error.URLError) as exc:
            raise RestError(f"GET {path} failed: {exc}") from exc
        self.budget.note_headers(resp.headers)
        if resp.status == 200:
            return resp
        code: int | None = None
        msg = resp.body[:300].decode(errors="replace")
        try:
            doc = orjson.loads(resp.body)
            if isinstance(doc, dict) and isinstance(doc.get("code"), int):
                code = doc["code"]
                msg = str(doc.get("msg", msg))
        except orjson.JSONDecodeError:
            pass
        if resp.status in (429, 418):
            pause = _retry_after(resp.headers, 60.0 if resp.status == 429 else 120.0)
            self.budget.pause(pause)
            if resp.status == 429:
                self.budget.rate_limited += 1
            else:
                self.budget.banned += 1
            logs.error(
                "rest_rate_limited" if resp.status == 429 else "rest_ip_banned",
                status=resp.status,
                retry_after_s=pause,
                path=path.split("?")[0],
                message="all REST calls paused until Retry-After has passed",
            )
            raise RestError(
                f"GET {path}: HTTP {resp.status}, paused {pause:g} s", status=resp.status, code=code
            )
        if code == -1121:
            raise InvalidSymbolError(f"GET {path}: {msg}", status=resp.status, code=code)
        raise RestError(f"GET {path}: HTTP {resp.status}: {msg}", status=resp.status, code=code)

    async def snapshot(self, symbol: str, limit: int, *, charged: bool = False) -> RestResponse:
        path = f"{depth_path(self.market)}?symbol={symbol}&limit={limit}"
        return await self.get(path, depth_weight(self.market, limit), charged=charged)

    async def trading_symbols(self, quote_asset: str) -> list[str]:
        """Every symbol ``exchangeInfo`` lists as TRADING with this quote asset (canonical names only)."""
        resp = await self.get(exchange_info_path(self.market), EXCHANGE_INFO_WEIGHT[self.market])
        try:
            doc = orjson.loads(resp.body)
            entries = doc["symbols"]
            out = [
                str(e["symbol"])
                for e in entries
                if e.get("status") == "TRADING" and e.get("quoteAsset") == quote_asset
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RestError(f"exchangeInfo: unexpected body ({exc!r})") from exc
        return [s for s in out if SYMBOL_RE.fullmatch(s)]

    async def server_time_offset(self) -> tuple[float, float]:
        """(offset seconds = server - local at the midpoint, round trip seconds)."""
        resp = await self.get(time_path(self.market), 1)
        doc = orjson.loads(resp.body)
        server_ms = int(doc["serverTime"])
        mid_ns = (resp.sent_ns + resp.received_ns) // 2
        return server_ms / 1e3 - mid_ns / 1e9, (resp.received_ns - resp.sent_ns) / 1e9
