"""The validated layout: where a validation's output lives and how its report names it.

Apart from ``validate.py`` (which writes this layout) so that its readers — the carry-over
(``carryover.py``), the merge, the quality report, the cleanup — use these names without importing the
validation, and the validation can import the carry-over without a cycle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from depth_core.names import Market, validate_collector_id, validate_date, validate_market, validate_symbol

VALIDATED_ROOT = "validated"
EVENTS_FILE = "events.parquet"
SNAPSHOTS_FILE = "snapshots.parquet"
SNAPSHOT_LEVELS_FILE = "snapshot_levels.parquet"
BOOK_TICKERS_FILE = "book_tickers.parquet"
QUARANTINE_FILE = "quarantine.parquet"
META_FILE = "meta.parquet"
REPORT_FILE = "report.json"
STREAM_DAY_REPORT = "_stream_day.json"
DATA_FILES = (
    EVENTS_FILE,
    SNAPSHOTS_FILE,
    SNAPSHOT_LEVELS_FILE,
    BOOK_TICKERS_FILE,
    QUARANTINE_FILE,
    META_FILE,
)
_PART_RE = re.compile(r"levels-(\d+)\.parquet$")


class MissingStateError(RuntimeError):
    """Validated state that is the only copy of deleted raw objects is missing or unreadable.

    Raised before anything of the symbol-day is deleted: the day is never rebuilt from what raw is left.
    """


# ------------------------------------------------------------------------------------------------ keys


def validated_day_prefix(market: Market, stream: str, symbol: str, date: str) -> str:
    return (
        f"{VALIDATED_ROOT}/market={validate_market(market)}/stream={validate_collector_id(stream)}/"
        f"symbol={validate_symbol(symbol)}/date={validate_date(date)}/"
    )


def validated_stream_day_prefix(market: Market, stream: str, date: str) -> str:
    return (
        f"{VALIDATED_ROOT}/market={validate_market(market)}/stream={validate_collector_id(stream)}/"
        f"date={validate_date(date)}/"
    )


def stream_day_report_key(market: Market, stream: str, date: str) -> str:
    """The stream-day report: every raw object read, the symbols and event dates it holds (cleanup gate)."""
    return validated_stream_day_prefix(market, stream, date) + STREAM_DAY_REPORT


# Since this version of ``_stream_day.json`` an object's ``symbol_event_dates`` leaves out every symbol whose
# event dates are the object's own ``event_dates`` (nearly all of them: a 400-symbol object's entry shrinks
# from ~16 KB to ~5 KB, a full day's report from ~140 MB to ~45 MB per stream); a symbol of ``symbols`` with
# no event (its lines are snapshots or notes only) is listed with ``[]``.
COMPACT_SYMBOL_DATES_VERSION = 3


def compact_symbol_event_dates(
    symbols: list[str], event_dates: list[str], symbol_event_dates: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The ``symbol_event_dates`` written for one object (see ``COMPACT_SYMBOL_DATES_VERSION``)."""
    return {s: list(d) for s in symbols if (d := symbol_event_dates.get(s, [])) != event_dates}


def object_symbol_dates(entry: dict[str, Any], report_version: int) -> dict[str, list[str]]:
    """``{symbol: event dates}`` of one object of a stream-day report, in any version: every symbol the object
    holds lines of, with the event dates of its lines there (``[]``: none). Before the compact form an empty
    or absent map meant every symbol has the object's ``event_dates``."""
    dates = list(entry.get("event_dates", []))
    written: dict[str, list[str]] = entry.get("symbol_event_dates") or {}
    if report_version >= COMPACT_SYMBOL_DATES_VERSION or not written:
        return {s: list(written.get(s, dates)) for s in entry.get("symbols", [])}
    return {s: list(d) for s, d in written.items()}


def object_dates_of(entry: dict[str, Any], symbol: str, report_version: int, absent: list[str]) -> list[str]:
    """The event dates of ``symbol``'s lines in one object of a stream-day report (any version; one lookup);
    ``absent``: what the caller takes a report before the compact form to mean by leaving the symbol out."""
    written: dict[str, list[str]] = entry.get("symbol_event_dates") or {}
    if symbol in written:
        return list(written[symbol])
    if report_version >= COMPACT_SYMBOL_DATES_VERSION:
        return list(entry.get("event_dates", []))
    return absent


def stream_day_report_version(report: dict[str, Any]) -> int:
    return int(report.get("version", 1) or 1)


def validated_file_key(report: dict[str, Any], name: str, prefix: str | None = None) -> str:
    """The key of a validated data file (``events.parquet``, ...) that a symbol-day report names.

    Reports since run-unique names list each file's key (``keys``); older ones used fixed names under their
    ``prefix`` (or the ``prefix`` given).
    """
    keys = report.get("keys") or {}
    if name in keys:
        return str(keys[name])
    return str(report.get("prefix") or prefix) + name


def level_part_keys(report: dict[str, Any]) -> dict[int, str]:
    """Level part number (the ``part`` column of events) -> key, from a symbol-day report."""
    out: dict[int, str] = {}
    for key in report.get("level_parts", []):
        m = _PART_RE.search(key)
        if m:
            out[int(m.group(1))] = key
    return out


@dataclass
class RawObjectRead:
    """One raw object read by validation (the cleanup deletes exactly the ones a merge consumed)."""

    key: str
    size: int
    etag: str | None
    event_dates: list[str]
    events: int = 0  # depth events of this symbol in the object (all days)
    quarantined: int = 0  # its lines in this symbol's quarantine
    carried: bool = (
        False  # deleted from raw/ after a merge: its rows were carried over (depth_core/carryover.py)
    )

    def to_dict(self) -> dict[str, Any]:
        """As ``dataclasses.asdict`` (an entry of ``report.json``'s ``objects``), without its generic deep
        copy (a symbol-day lists ~10^4 objects: 75 ms per report with ``asdict``)."""
        out = {name: getattr(self, name) for name in _RAW_OBJECT_READ_FIELDS}
        out["event_dates"] = list(self.event_dates)
        return out


_RAW_OBJECT_READ_FIELDS = tuple(f.name for f in fields(RawObjectRead))
