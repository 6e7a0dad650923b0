"""Validation of every name that ends up in an object key or a partition key.

Keys are built only from parts that passed these checks, so nothing a caller passes can escape the
configured store prefix (no ``/``, ``..``, NUL or unicode ever reaches a key).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

Market = Literal["spot", "usdm"]
MARKETS: tuple[Market, ...] = ("spot", "usdm")

COLLECTOR_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidNameError(ValueError):
    """A name (collector id, symbol, market, date) that may not be used in a key."""


def validate_collector_id(value: str) -> str:
    if not isinstance(value, str) or not COLLECTOR_ID_RE.fullmatch(value):
        raise InvalidNameError(
            f"invalid collector id {value!r}: must match {COLLECTOR_ID_RE.pattern} "
            "(lower-case letters, digits, '-' and '_', at most 32 characters)"
        )
    return value


def validate_symbol(value: str) -> str:
    """Case-fold to upper and check; returns the canonical symbol."""
    if not isinstance(value, str):
        raise InvalidNameError(f"invalid symbol {value!r}: not a string")
    upper = value.strip().upper()
    if not SYMBOL_RE.fullmatch(upper):
        raise InvalidNameError(f"invalid symbol {value!r}: must match {SYMBOL_RE.pattern} after upper-casing")
    return upper


def parse_symbols(value: str) -> list[str]:
    """Parse a comma-separated symbol list (``BTCUSDT,ethusdt``) into unique canonical symbols."""
    out: list[str] = []
    for part in value.split(","):
        if not part.strip():
            continue
        sym = validate_symbol(part)
        if sym not in out:
            out.append(sym)
    if not out:
        raise InvalidNameError("no symbols given")
    return out


def validate_market(value: str) -> Market:
    if value == "spot":
        return "spot"
    if value == "usdm":
        return "usdm"
    raise InvalidNameError(f"invalid market {value!r}: must be one of {', '.join(MARKETS)}")


def validate_date(value: str | dt.date) -> str:
    """Return the ISO date string (``YYYY-MM-DD``) for a date or a string that is one."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str) or not DATE_RE.fullmatch(value):
        raise InvalidNameError(f"invalid date {value!r}: must be YYYY-MM-DD")
    try:
        dt.date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidNameError(f"invalid date {value!r}: {exc}") from exc
    return value
