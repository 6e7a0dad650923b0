"""Binance's REST request weights as the simulator charges them (per IP, per wall-clock window)."""

from __future__ import annotations

import time

#: USD-M ``/fapi/v1/depth``: the legal ``limit`` values and their weights.
USDM_LIMITS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}


def spot_weight(limit: int) -> int:
    # deliberately repeats collectors/rest.py depth_weight: the simulator must not share the client's table
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


class WeightBudget:
    """Binance's per-IP request-weight budget: 429 over the limit, 418 (banned) for who keeps going."""

    def __init__(self, limit: int, window_s: float, ban_after: int, ban_s: float) -> None:
        self.limit, self.window_s, self.ban_after, self.ban_s = limit, window_s, ban_after, ban_s
        self.t0 = time.monotonic()
        self.used: dict[str, tuple[int, int]] = {}  # ip -> (window index, weight used)
        self.violations: dict[str, tuple[int, int]] = {}
        self.banned_until: dict[str, float] = {}

    def charge(self, ip: str, weight: int) -> tuple[int, int, float]:
        """Returns (status, used weight, retry-after seconds): status 200, 429 or 418."""
        now = time.time()  # windows are wall-clock intervals (Binance: calendar minutes)
        window = int(now // self.window_s)
        window_end = (window + 1) * self.window_s
        ban = self.banned_until.get(ip, 0.0)
        if ban > now:
            return 418, self.used.get(ip, (window, 0))[1], ban - now
        w, used = self.used.get(ip, (window, 0))
        if w != window:
            used = 0
        used += weight
        self.used[ip] = (window, used)
        if used <= self.limit:
            return 200, used, 0.0
        vw, count = self.violations.get(ip, (window, 0))
        count = count + 1 if vw == window else 1
        self.violations[ip] = (window, count)
        if count > self.ban_after:
            self.banned_until[ip] = now + self.ban_s
            return 418, used, self.ban_s
        return 429, used, window_end - now
