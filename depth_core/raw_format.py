"""Raw object key layout and line format: the contract between collectors and the pipeline.

See ``docs/raw-format.md`` for the prose version. Two layouts are valid and readable.

Layout 2 (what collectors write): one object per stream per flush interval, every symbol's lines::

    raw/market={market}/stream={collector_id}/date={YYYY-MM-DD}/
        {first_receive_ns:019d}-{session}-{seq:08d}.ndjson.gz

    lines: <receive_ns> <kind> <SYMBOL> <text>\\n      (SYMBOL is "-" for a stream-wide note)

Layout 1 (earlier collectors): one object per symbol per flush interval::

    raw/market={market}/stream={collector_id}/symbol={SYMBOL}/date={YYYY-MM-DD}/
        {first_receive_ns:019d}-{session}-{seq:08d}.ndjson.gz

    lines: <receive_ns> <kind> <text>\\n

The absence of a ``symbol=`` part is what marks a layout-2 key. ``text`` is the message exactly as
received. Object names sort by the receive time of their first line, are unique (a random
per-process ``session`` plus a sequence number) and are never overwritten. The ``date`` folder is the
UTC day of the first line's receive time; segments roll at UTC hour boundaries so an object never
spans two days of receive time.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from depth_core.names import (
    InvalidNameError,
    Market,
    validate_collector_id,
    validate_date,
    validate_market,
    validate_symbol,
)

_fast_zlib: Any
try:  # ISA-L inflate: the same output as zlib at about half the CPU (a dependency; zlib if it is missing)
    from isal import isal_zlib as _fast_zlib
except ImportError:  # pragma: no cover - isal is in the dependencies
    _fast_zlib = None

RAW_ROOT = "raw"
RAW_SUFFIX = ".ndjson.gz"
SESSION_RE = re.compile(r"^[0-9a-z]{1,16}$")
_NAME_RE = re.compile(r"^(?P<ns>\d{19})-(?P<session>[0-9a-z]{1,16})-(?P<seq>\d{8})\.ndjson\.gz$")
_KEY_RE = re.compile(
    r"^raw/market=(?P<market>[^/]+)/stream=(?P<stream>[^/]+)/symbol=(?P<symbol>[^/]+)/"
    r"date=(?P<date>[^/]+)/(?P<name>[^/]+)$"
)
_KEY_V2_RE = re.compile(
    r"^raw/market=(?P<market>[^/]+)/stream=(?P<stream>[^/]+)/date=(?P<date>[^/]+)/(?P<name>[^/]+)$"
)
#: The symbol field of a layout-2 line that concerns the whole stream (a connection's connect/disconnect).
STREAM_WIDE = "-"


class LineKind(StrEnum):
    """What a raw line holds."""

    #: A diff-depth websocket frame, combined-stream envelope ``{"stream","data"}`` as received.
    DEPTH = "D"
    #: A ``@bookTicker`` websocket frame as received.
    BOOK_TICKER = "B"
    #: A REST depth snapshot response body as received.
    SNAPSHOT = "S"
    #: A collector note (JSON): connect, disconnect, gap seen, snapshot error ...
    META = "M"


class RawFormatError(ValueError):
    """A key or line that does not follow the raw format."""


def utc_date_of_ns(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).date().isoformat()


@functools.total_ordering
@dataclass(frozen=True)
class RawObjectKey:
    """The parts of a raw object's key; the only way raw keys are built or parsed.

    ``symbol`` is the object's one symbol (layout 1) or None (layout 2: the object holds every symbol
    of its stream, each line names its own). Keys order by (market, stream, symbol or "", date, time,
    session, seq), so keys of both layouts sort together.
    """

    market: Market
    stream: str
    symbol: str | None
    date: str
    first_receive_ns: int
    session: str
    seq: int

    def __post_init__(self) -> None:
        _folder_of(self.market, self.stream, self.symbol, self.date)  # checks them
        if not SESSION_RE.fullmatch(self.session):
            raise InvalidNameError(f"invalid session {self.session!r}: must match {SESSION_RE.pattern}")
        if not (0 <= self.first_receive_ns < 10**19):
            raise InvalidNameError(f"receive time {self.first_receive_ns} out of range")
        if not (0 <= self.seq < 10**8):
            raise InvalidNameError(f"sequence {self.seq} out of range")

    @classmethod
    def for_segment(
        cls, market: Market, stream: str, symbol: str, first_receive_ns: int, session: str, seq: int
    ) -> RawObjectKey:
        """The layout-1 key of a one-symbol spool segment whose first line was received at
        ``first_receive_ns``."""
        return cls(market, stream, symbol, utc_date_of_ns(first_receive_ns), first_receive_ns, session, seq)

    @classmethod
    def for_stream_segment(
        cls, market: Market, stream: str, first_receive_ns: int, session: str, seq: int
    ) -> RawObjectKey:
        """The layout-2 key of a stream segment (every symbol) whose first line was received at
        ``first_receive_ns``."""
        return cls(market, stream, None, utc_date_of_ns(first_receive_ns), first_receive_ns, session, seq)

    @property
    def layout(self) -> int:
        """1: one symbol per object (``symbol=`` in the key); 2: every symbol of the stream per object."""
        return 2 if self.symbol is None else 1

    def _sort_key(self) -> tuple[str, str, str, str, int, str, int]:
        return (
            self.market,
            self.stream,
            self.symbol or "",
            self.date,
            self.first_receive_ns,
            self.session,
            self.seq,
        )

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, RawObjectKey):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    @property
    def name(self) -> str:
        return f"{self.first_receive_ns:019d}-{self.session}-{self.seq:08d}{RAW_SUFFIX}"

    @property
    def key(self) -> str:
        return _folder_of(self.market, self.stream, self.symbol, self.date) + self.name

    @classmethod
    def parse(cls, key: str) -> RawObjectKey:
        """Parse a key (either layout) relative to the store prefix; raises RawFormatError for anything
        foreign."""
        m = _KEY_RE.fullmatch(key)
        symbol: str | None
        if m is not None:
            symbol = m["symbol"]
        else:
            m = _KEY_V2_RE.fullmatch(key)
            if m is None:
                raise RawFormatError(f"not a raw object key: {key!r}")
            symbol = None
        n = _NAME_RE.fullmatch(m["name"])
        if not n:
            raise RawFormatError(f"not a raw object name: {m['name']!r} in {key!r}")
        try:
            parsed = cls(
                validate_market(m["market"]),
                m["stream"],
                symbol,
                m["date"],
                int(n["ns"]),
                n["session"],
                int(n["seq"]),
            )
        except InvalidNameError as exc:
            raise RawFormatError(f"invalid raw object key {key!r}: {exc}") from exc
        if parsed.key != key:
            raise RawFormatError(f"raw object key {key!r} is not canonical")
        return parsed


@functools.lru_cache(maxsize=1024)
def _folder_of(market: Market, stream: str, symbol: str | None, date: str) -> str:
    """The folder of a raw object's key (layout 2 without ``symbol``), its parts checked: once per folder,
    not once per object (a stream-day's listing parses ~10^4 keys of one folder)."""
    validate_market(market)
    validate_collector_id(stream)
    if symbol is not None and validate_symbol(symbol) != symbol:
        raise InvalidNameError(f"symbol {symbol!r} is not canonical (upper case)")
    validate_date(date)
    if symbol is None:
        return stream_date_prefix(market, stream, date)
    return stream_day_prefix(market, stream, symbol, date)


def stream_prefix(market: Market, stream: str) -> str:
    validate_market(market)
    validate_collector_id(stream)
    return f"{RAW_ROOT}/market={market}/stream={stream}/"


def stream_date_prefix(market: Market, stream: str, date: str) -> str:
    """One listing of this prefix finds every layout-2 raw object of one stream-day (all symbols)."""
    return f"{stream_prefix(market, stream)}date={validate_date(date)}/"


def stream_symbol_prefix(market: Market, stream: str, symbol: str) -> str:
    return f"{stream_prefix(market, stream)}symbol={validate_symbol(symbol)}/"


def stream_day_prefix(market: Market, stream: str, symbol: str, date: str) -> str:
    """One listing of this prefix finds every layout-1 raw object of one stream-symbol-day."""
    return f"{stream_symbol_prefix(market, stream, symbol)}date={validate_date(date)}/"


LAYOUTS = (1, 2)


@dataclass(frozen=True, slots=True)
class RawLine:
    """One decoded line. ``symbol``: the v2 line's symbol field (``None`` for a v1 line, whose symbol is the
    object key's, and for a stream-wide v2 note ``-``)."""

    receive_ns: int
    kind: LineKind
    text: bytes
    symbol: str | None = None


def encode_line(receive_ns: int, kind: LineKind, text: bytes | str) -> bytes:
    """Encode one raw line. The text must not contain CR or LF (Binance JSON never does)."""
    body = text.encode() if isinstance(text, str) else text
    if b"\n" in body or b"\r" in body:
        raise RawFormatError("raw line text may not contain CR or LF")
    return b"%d %s %s\n" % (receive_ns, kind.value.encode(), body)


def encode_line_v2(receive_ns: int, kind: LineKind, symbol: str, text: bytes | str) -> bytes:
    """Encode one layout-2 line ``<receive_ns> <kind> <SYMBOL> <text>``.

    ``symbol`` must be canonical (upper case) or :data:`STREAM_WIDE` (``-``) for a note about the
    whole stream. The text must not contain CR or LF.
    """
    if symbol != STREAM_WIDE:
        try:
            canonical = validate_symbol(symbol)
        except InvalidNameError as exc:
            raise RawFormatError(str(exc)) from exc
        if canonical != symbol:
            raise RawFormatError(f"symbol {symbol!r} is not canonical (upper case)")
    body = text.encode() if isinstance(text, str) else text
    if b"\n" in body or b"\r" in body:
        raise RawFormatError("raw line text may not contain CR or LF")
    return b"%d %s %s %s\n" % (receive_ns, kind.value.encode(), symbol.encode(), body)


_KINDS = {k.value.encode(): k for k in LineKind}
_SYMBOL_BYTES_RE = re.compile(rb"[A-Z0-9]{2,30}")


@dataclass
class RawObjectContent:
    """Decoded lines of one raw object plus what could not be decoded (for quarantine)."""

    lines: list[RawLine] = field(default_factory=list)
    problems: list[tuple[int, str, bytes]] = field(default_factory=list)  # (line number, reason, text)


def decode_lines(data: bytes, content: RawObjectContent | None = None, layout: int = 1) -> RawObjectContent:
    """Decode uncompressed raw text; malformed lines become problems, never exceptions.

    ``layout``: 1 (``<receive_ns> <kind> <text>``, one symbol per object) or 2 (``<receive_ns> <kind> <SYMBOL>
    <text>``, many symbols per object); it comes from the object's key (:attr:`RawObjectKey.layout`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown raw layout {layout!r}")
    out = content or RawObjectContent()
    n_fields = layout + 2
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw:
            continue
        parts = raw.split(b" ", n_fields - 1)
        if len(parts) != n_fields:
            out.problems.append((lineno, f"line has fewer than {n_fields} space-separated fields", raw))
            continue
        ns_text, kind_text, text = parts[0], parts[1], parts[-1]
        kind = _KINDS.get(kind_text)
        if kind is None:
            out.problems.append((lineno, f"unknown line kind {kind_text[:8]!r}", raw))
            continue
        if not ns_text.isdigit() or len(ns_text) > 19:
            out.problems.append((lineno, "receive time is not a non-negative integer", raw))
            continue
        symbol: str | None = None
        if layout == 2:
            sym_text = parts[2]
            if sym_text == b"-":
                if kind is not LineKind.META:
                    out.problems.append((lineno, "stream-wide line ('-') that is not a collector note", raw))
                    continue
            elif _SYMBOL_BYTES_RE.fullmatch(sym_text):
                symbol = sym_text.decode()
            else:
                out.problems.append((lineno, f"invalid symbol field {sym_text[:40]!r}", raw))
                continue
        out.lines.append(RawLine(int(ns_text), kind, text, symbol))
    return out


_GZIP_MAGIC = b"\x1f\x8b"
_FEED = 1 << 20  # the salvage path feeds a damaged member in pieces, to keep what decoded before the damage


def _gunzip_members(lib: Any, data: bytes) -> tuple[list[bytes], bytes]:
    """Every gzip member of ``data`` in one call each; (outputs, bytes after the last member that are not
    gzip). Raises on a corrupt or truncated member (the caller's salvage path explains it)."""
    out: list[bytes] = []
    rest = data
    while rest:
        if not rest.startswith(_GZIP_MAGIC) and out:
            return out, rest
        d = lib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(d.decompress(rest))
        if not d.eof:
            raise zlib.error("incomplete or truncated stream")
        rest = d.unused_data
    return out, b""


def _trailing_problem(members: int, size: int, trailing: bytes) -> str:
    return (
        f"{len(trailing)} bytes after the last of {members} gzip member(s) are not gzip (at byte "
        f"{size - len(trailing)}, starting {trailing[:16].hex()}); kept every line of the members before them"
    )


def decompress(data: bytes) -> tuple[bytes, str | None]:
    """Gunzip one raw object: **every** gzip member (RFC 1952 allows several: ``cat a.gz b.gz`` is valid).

    A corrupt or truncated member keeps the complete lines decoded before the damage and says why; bytes
    after the last member that are not gzip are reported the same way (validation makes each such reason a
    quarantine entry of the object, so it is visible and the object's valid lines are merged). The fast
    path is ISA-L (same bytes as zlib, ~2x less CPU); any failure is redone with zlib so the salvage of
    complete lines and the reason text do not depend on which library is installed.
    """
    if _fast_zlib is not None:
        try:
            parts, trailing = _gunzip_members(_fast_zlib, data)
        except Exception:  # any ISA-L failure: zlib below decides and explains
            pass
        else:
            text = parts[0] if len(parts) == 1 else b"".join(parts)
            return text, (_trailing_problem(len(parts), len(data), trailing) if trailing else None)
    return _salvage(data)


def _salvage(data: bytes) -> tuple[bytes, str | None]:
    """zlib, member by member and piece by piece: keeps everything decoded before any damage."""
    out: list[bytes] = []
    pos = 0
    members = 0
    while pos < len(data):
        if members and not data.startswith(_GZIP_MAGIC, pos):
            return b"".join(out), _trailing_problem(members, len(data), data[pos:])
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        fed = 0
        problem: str | None = None
        try:
            while pos + fed < len(data) and not d.eof:
                piece = data[pos + fed : pos + fed + _FEED]
                out.append(d.decompress(piece))
                fed += len(piece)
        except zlib.error as exc:
            problem = f"corrupt gzip member {members + 1} at byte {pos} ({exc})"
        if problem is None and not d.eof:
            problem = f"truncated gzip member {members + 1} at byte {pos} (incomplete or truncated stream)"
        if problem is not None:
            text = b"".join(out)
            cut = text.rfind(b"\n")  # drop the last, possibly cut, line
            text = text[: cut + 1] if cut >= 0 else b""
            return text, f"corrupt or truncated gzip: {problem}; kept {len(text)} decoded bytes"
        members += 1
        pos += fed - len(d.unused_data)
    return b"".join(out), None


def read_raw_object(data: bytes, layout: int = 1) -> RawObjectContent:
    """Decompress and decode one raw object (``layout`` of its key). A truncated or corrupt gzip keeps what
    decoded before it."""
    out = RawObjectContent()
    text, problem = decompress(data)
    if problem is not None:
        out.problems.append((0, problem, b""))
    return decode_lines(text, out, layout)


def iter_lines(data: bytes, layout: int = 1) -> Iterator[RawLine]:
    yield from read_raw_object(data, layout).lines
