"""The local spool: every line reaches disk (fsync'd) before anything else happens to it.

Layout under the spool dir::

    .lock                                   flock held by the one collector using this dir
    journal/{market}.{id}.{session}.{seq:08d}.v2gz.jnl
                                            layout 2 segment: one gzip stream of raw lines
                                            "<receive_ns> <kind> <SYMBOL> <text>\\n",
                                            sync-flushed at every fsync
    journal/{market}.{id}.{session}.{seq:08d}.v2.jnl
                                            layout 2 segment as plain text (written by earlier collectors)
    journal/{market}.{id}.{session}.{seq:08d}.jnl
                                            layout 1 segment: "<SYMBOL> <receive_ns> <kind> <text>\\n"
    outbox/raw/market=/stream=/date=/<name>.ndjson.gz            (layout 2)
    outbox/raw/market=/stream=/symbol=/date=/<name>.ndjson.gz    (layout 1)
                                            finished raw objects (key = path), waiting for upload

One journal for all symbols keeps the durability cost at one write and one fsync per flush interval,
whatever the symbol count. A segment rolls every ``segment_seconds``, at ``segment_max_bytes`` (of
lines) and when the UTC hour changes.

Layout 2 (the default) compresses on the writer thread: every batch of lines goes through the
segment's gzip compressor and ends at a sync-flush point before the fsync, so all that was fsync'd
decodes even if the process dies. A segment holds one UTC hour (a batch across the hour is split), so
when it rolls the writer ends the gzip stream and renames the journal into the outbox: the journal *is*
the raw object, hashed as it was written, never read back or copied. The converter thread only handles
journals of earlier processes and segments whose write failed.

A layout-1 segment (``--raw-layout v1``, or left by an older collector) is split by the converter into
one object per symbol and UTC hour; a plain layout-2 journal is gzipped as it is into one object per
UTC hour it holds. Either way no object spans two receive days; objects are written to the outbox
(fsync'd), and only then is the journal deleted. A journal left by a killed process is converted the
same way at the next start, with the session and sequence in its name, so the objects get the same
keys as they would have had.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from collectors import logs
from depth_core.names import InvalidNameError, Market, validate_collector_id, validate_market
from depth_core.raw_format import SESSION_RE, RawObjectKey

HOUR_NS = 3_600_000_000_000
JOURNAL_SUFFIX = ".jnl"
OBJECT_SUFFIX = ".ndjson.gz"
FILL_WARN_LEVELS = (0.5, 0.75, 0.9, 1.0)


class SpoolLockedError(RuntimeError):
    """Another process holds the spool dir."""


class SpoolLock:
    """An exclusive ``flock`` on ``<spool>/.lock``; released by the kernel when the process dies."""

    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpoolLockedError(
                    f"spool dir {self.path.parent} is in use by another collector"
                    + (f" (pid {holder})" if holder else "")
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class JournalName:
    market: Market
    collector_id: str
    session: str
    seq: int
    layout: int = 1  # the raw layout its lines are written in (1: the name has no ".v2" part)
    # the journal is one gzip stream of its raw lines, sync-flushed at every fsync (".v2gz"; layout 2)
    compressed: bool = False

    @property
    def filename(self) -> str:
        layout = (".v2gz" if self.compressed else ".v2") if self.layout == 2 else ""
        return f"{self.market}.{self.collector_id}.{self.session}.{self.seq:08d}{layout}{JOURNAL_SUFFIX}"

    @classmethod
    def parse(cls, filename: str) -> JournalName:
        parts = filename.removesuffix(JOURNAL_SUFFIX).split(".")
        layout = 1
        compressed = False
        if len(parts) == 5 and parts[4] in ("v2", "v2gz"):
            parts, layout, compressed = parts[:4], 2, parts[4] == "v2gz"
        if len(parts) != 4 or not filename.endswith(JOURNAL_SUFFIX):
            raise ValueError(f"not a journal file name: {filename!r}")
        market, cid, session, seq = parts
        if not SESSION_RE.fullmatch(session) or not seq.isdigit():
            raise ValueError(f"not a journal file name: {filename!r}")
        try:
            return cls(
                validate_market(market), validate_collector_id(cid), session, int(seq), layout, compressed
            )
        except InvalidNameError as exc:
            raise ValueError(f"not a journal file name: {filename!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class OutboxObject:
    """A finished raw object waiting for upload."""

    key: str
    path: Path
    size: int
    first_receive_ns: int
    md5: str | None = None  # hex MD5 of the file's bytes, known when we wrote them (saves a re-read)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dir_bytes(path: Path, suffix: str) -> int:
    total = 0
    for p in path.rglob(f"*{suffix}"):
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


CONVERT_CHUNK = 4 * 1024 * 1024
# the writer's backlog past which the event loop stops reading sockets (collectors.flow): about 30 ms of a
# 180 k msg/s firehose, 2 s of 400 symbols at their real rates, drained by the writer in ~20 ms
DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024
COMPRESS_PIECE_BYTES = 96 * 1024  # input of one compress() call on the writer (~64 real depth lines)

_isal_zlib: ModuleType | None
try:  # ISA-L's deflate: standard gzip output at about a quarter of zlib's CPU (levels 0-3)
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - the pinned install has it; zlib is the fallback
    _isal_zlib = None


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self, mode: int = ..., /) -> bytes: ...


Z_SYNC_FLUSH = zlib.Z_SYNC_FLUSH  # the same constant in ISA-L's zlib API


def gzip_compressor(level: int) -> Compressor:
    """A compressor writing one gzip member (fixed header: mtime 0, no name). Levels 1-3 use ISA-L
    when installed (faster, and smaller than zlib level 1); higher levels use zlib."""
    if _isal_zlib is not None and level <= 3:
        comp: Compressor = _isal_zlib.compressobj(level, _isal_zlib.DEFLATED, 16 + _isal_zlib.MAX_WBITS)
        return comp
    return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


def _ns_of(line: bytes) -> int | None:
    sp1 = line.find(b" ")
    sp2 = line.find(b" ", sp1 + 1)
    text = line[sp1 + 1 : sp2]
    return int(text) if sp1 > 0 and text.isdigit() else None


def _group_chunk(block: bytes) -> dict[tuple[bytes, int], list[bytes]] | None:
    """Group complete journal lines by (symbol, UTC hour); values are raw-format lines with their LF.

    Journal times never go backwards (every line is stamped on the event loop as it is appended), so
    when a chunk's first and last lines share an hour, all its lines do, and the hot loop only splits
    off the symbol. A chunk of one symbol (the usual case at high rates) is handled by one ``replace``.
    Returns None when a line does not look like ``SYMBOL ns ...`` (the caller then goes line by line).
    """
    first_nl = block.find(b"\n")
    last_start = block.rfind(b"\n", 0, len(block) - 1) + 1
    first_ns, last_ns = _ns_of(block[:first_nl]), _ns_of(block[last_start:-1])
    if first_ns is None or last_ns is None or first_ns // HOUR_NS != last_ns // HOUR_NS:
        return None
    hour = first_ns // HOUR_NS
    prefix = block[: block.find(b" ") + 1]
    n_lines = block.count(b"\n")
    # strip the symbol from every line at once: split + join is one search pass (replace makes two);
    # lines hold no LF, so "\n" + prefix only matches at line starts
    pieces = block[len(prefix) :].split(b"\n" + prefix)
    if len(pieces) == n_lines:  # every line is this symbol's
        return {(prefix[:-1], hour): [b"\n".join(pieces)]}
    groups: dict[tuple[bytes, int], list[bytes]] = {}
    for line in block.split(b"\n")[:-1]:
        sp = line.find(b" ")
        if sp <= 0:
            return None
        key = (line[:sp], hour)
        lst = groups.get(key)
        if lst is None:
            if not line[sp + 1 : line.find(b" ", sp + 1)].isdigit():  # a group's first time must parse
                return None
            groups[key] = lst = []
        lst.append(line[sp + 1 :] + b"\n")
    return groups


def _group_chunk_slow(block: bytes) -> tuple[dict[tuple[bytes, int], list[bytes]], int]:
    """Line by line, each with its own hour; lines that do not parse are counted, not kept."""
    groups: dict[tuple[bytes, int], list[bytes]] = {}
    bad = 0
    for line in block.split(b"\n"):
        if not line:
            continue
        ns = _ns_of(line)
        if ns is None:
            bad += 1
            continue
        sp = line.find(b" ")
        key = (line[:sp], ns // HOUR_NS)
        lst = groups.get(key)
        if lst is None:
            groups[key] = lst = []
        lst.append(line[sp + 1 :] + b"\n")
    return groups, bad


def _ns_v2(line: bytes) -> int | None:
    sp = line.find(b" ")
    text = line[:sp]
    return int(text) if sp > 0 and text.isdigit() else None


def _group_chunk_v2(block: bytes) -> dict[tuple[bytes, int], list[bytes]] | None:
    """Layout 2: complete journal lines are raw lines already; the whole chunk is one group when its
    first and last lines share a UTC hour (journal times never go backwards). None otherwise."""
    first_nl = block.find(b"\n")
    last_start = block.rfind(b"\n", 0, len(block) - 1) + 1
    first_ns, last_ns = _ns_v2(block[:first_nl]), _ns_v2(block[last_start:-1])
    if first_ns is None or last_ns is None or first_ns // HOUR_NS != last_ns // HOUR_NS:
        return None
    return {(b"", first_ns // HOUR_NS): [block]}


def _group_chunk_v2_slow(block: bytes) -> tuple[dict[tuple[bytes, int], list[bytes]], int]:
    """Layout 2, line by line, each with its own hour; lines that do not parse are counted, not kept."""
    groups: dict[tuple[bytes, int], list[bytes]] = {}
    bad = 0
    for line in block.split(b"\n"):
        if not line:
            continue
        ns = _ns_v2(line)
        if ns is None or line.count(b" ", 0, 64) < 3:
            bad += 1
            continue
        groups.setdefault((b"", ns // HOUR_NS), []).append(line + b"\n")
    return groups, bad


def journal_chunks(journal: Path, compressed: bool) -> Iterator[bytes]:
    """The journal's bytes in chunks of about ``CONVERT_CHUNK``, decompressed when ``compressed``.

    A compressed journal left by a killed process ends at a sync-flush point or inside the write that
    followed it: everything up to the cut is returned (the cut line is incomplete and the caller counts
    it). Bytes that do not decode (a torn write after a power loss) end the journal there, logged.
    """
    with open(journal, "rb") as f:
        if not compressed:
            while chunk := f.read(CONVERT_CHUNK):
                yield chunk
            return
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while chunk := f.read(CONVERT_CHUNK // 4):
            while chunk:
                before = dec.copy()
                try:
                    out = dec.decompress(chunk)
                except zlib.error as exc:
                    # decode again from before this chunk in ever smaller steps, keeping every byte
                    # that decodes ahead of the damage
                    yield _decode_until_damage(before, chunk)
                    logs.error(
                        "spool_journal_damaged",
                        journal=journal.name,
                        error=str(exc),
                        message="the journal is kept up to the damaged bytes; the rest did not decode",
                    )
                    return
                if out:
                    yield out
                chunk = b""
                if dec.eof:  # a finished member; another may follow
                    chunk = dec.unused_data
                    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)


def _decode_until_damage(dec: Any, data: bytes) -> bytes:
    """What ``dec`` outputs for ``data`` up to the first byte it refuses (4 KB steps, then single bytes)."""
    out: list[bytes] = []
    step = 4096
    i = 0
    while i < len(data) and step:
        before = dec.copy()
        try:
            out.append(dec.decompress(data[i : i + step]))
            i += step
        except zlib.error:
            dec = before
            step = 0 if step == 1 else 1
        if dec.eof:
            break
    return b"".join(out)


def convert_journal(
    journal: Path, name: JournalName, outbox: Path, gzip_level: int
) -> tuple[list[OutboxObject], int]:
    """Turn one journal into gzip raw objects in the outbox: one per UTC hour (layout 2) or one per
    symbol and UTC hour (layout 1).

    Returns the objects and the number of lines that could not be used (a line cut by a crash, which
    never completed its write). Streams the journal in chunks into one compressor per object, so memory
    stays near the compressed size however large the segment. Deterministic: converting the same
    journal twice gives the same keys and bytes, so a crash mid-conversion is repaired by converting
    again.
    """
    bad = 0
    fast, slow = (
        (_group_chunk_v2, _group_chunk_v2_slow) if name.layout == 2 else (_group_chunk, _group_chunk_slow)
    )
    compressors: dict[tuple[bytes, int], Compressor] = {}
    parts: dict[tuple[bytes, int], list[bytes]] = {}
    first_ns: dict[tuple[bytes, int], int] = {}
    carry = b""
    for chunk in journal_chunks(journal, name.compressed):
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1 :]
        groups = fast(data[: cut + 1])
        if groups is None:  # the chunk crosses a UTC hour, or a line is damaged: line by line
            groups, chunk_bad = slow(data[: cut + 1])
            bad += chunk_bad
        for gk, lines in groups.items():
            if gk not in first_ns:
                first_line = lines[0]
                first_ns[gk] = int(
                    first_line[: first_line.find(b" ")]
                )  # raw lines of both layouts start with it
        for gk, lines in groups.items():
            comp = compressors.get(gk)
            if comp is None:
                compressors[gk] = comp = gzip_compressor(gzip_level)
                parts[gk] = []
            out = comp.compress(b"".join(lines))
            if out:
                parts[gk].append(out)
    if carry:
        bad += 1  # a line whose write never completed (the process died mid-write)
    result: list[OutboxObject] = []
    for gk, comp in compressors.items():
        symbol = gk[0].decode("ascii", errors="replace")
        parts[gk].append(comp.flush())
        try:
            if name.layout == 2:
                key = RawObjectKey.for_stream_segment(
                    name.market, name.collector_id, first_ns[gk], name.session, name.seq
                ).key
            else:
                key = RawObjectKey.for_segment(
                    name.market, name.collector_id, symbol, first_ns[gk], name.session, name.seq
                ).key
        except (InvalidNameError, ValueError):
            bad += 1
            logs.error("spool_bad_symbol", journal=journal.name, symbol=symbol)
            continue
        path = outbox / key
        if path.exists():
            # converted before a crash (written atomically, so complete): keep those exact bytes, which
            # may already be in the store; never replace an object with a different encoding of it
            result.append(OutboxObject(key, path, path.stat().st_size, first_ns[gk]))
            parts[gk] = []
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        size = 0
        digest = hashlib.md5(usedforsecurity=False)
        with open(tmp, "wb") as out_file:
            for piece in parts[gk]:
                out_file.write(piece)
                digest.update(piece)
                size += len(piece)
            out_file.flush()
            os.fsync(out_file.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        result.append(OutboxObject(key, path, size, first_ns[gk], digest.hexdigest()))
        parts[gk] = []
    return result, bad


def scan_outbox(outbox: Path) -> list[OutboxObject]:
    """Every finished object in the outbox (leftovers of an earlier run), oldest first."""
    found: list[OutboxObject] = []
    if not outbox.exists():
        return found
    for tmp in outbox.rglob("*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
    for p in outbox.rglob(f"*{OBJECT_SUFFIX}"):
        key = p.relative_to(outbox).as_posix()
        try:
            parsed = RawObjectKey.parse(key)
        except ValueError:
            logs.error("spool_foreign_file", path=str(p))
            continue
        found.append(OutboxObject(key, p, p.stat().st_size, parsed.first_receive_ns))
    found.sort(key=lambda o: (o.first_receive_ns, o.key))
    return found


class ReadFlowHook(Protocol):
    """What the writer sees of the event loop's read flow control (collectors.flow.ReadFlow)."""

    @property
    def paused(self) -> bool: ...
    @property
    def pause_gen(self) -> int: ...
    def drained(self, gen: int) -> None:
        """Called on the writer thread: the backlog of pause ``gen`` is taken; resume reading."""
        ...


class Spool:
    """Journal writer (one thread: flush + fsync every ``fsync_interval``) and converter (one thread).

    The hot path calls :meth:`append` from the event loop; ``collections.deque`` appends and pops are
    atomic, so the writer thread drains it without a lock. The backlog in bytes is bounded by the event
    loop's read flow control (:mod:`collectors.flow`, ``max_pending_bytes``): the writer, woken early when
    reading pauses, resumes reading once it has taken the backlog. While the spool is over its disk budget
    ``accepting`` is False and callers count what they could not spool instead of appending.
    """

    def __init__(
        self,
        spool_dir: Path,
        *,
        market: Market,
        collector_id: str,
        session: str,
        segment_seconds: float,
        segment_max_bytes: int,
        max_bytes: int,
        fsync_interval: float,
        gzip_level: int,
        on_object: Callable[[OutboxObject], None],
        clock_ns: Callable[[], int] = time.time_ns,
        layout: int = 1,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self.dir = spool_dir
        self.journal_dir = spool_dir / "journal"
        self.outbox_dir = spool_dir / "outbox"
        self.market = market
        self.collector_id = collector_id
        self.session = session
        self.segment_seconds = segment_seconds
        self.segment_max_bytes = segment_max_bytes
        self.max_bytes = max_bytes
        self.fsync_interval = fsync_interval
        self.gzip_level = gzip_level
        self.on_object = on_object
        self.clock_ns = clock_ns
        self.layout = layout
        # layout 2 compresses on the writer thread: the journal is the raw object being written
        self.compress_journal = layout == 2
        self.pending: collections.deque[bytes] = collections.deque()
        # the writer's backlog in bytes is appended_bytes - taken_bytes: each counter has one writing thread
        # (the event loop appends, the writer takes), so neither needs a lock
        self.appended_bytes = 0
        self.taken_bytes = 0
        # flow control (collectors.flow): past this backlog the event loop stops reading sockets until the
        # writer has taken the lines (the low-water mark is half of it)
        self.max_pending_bytes = max_pending_bytes
        self.read_flow: ReadFlowHook | None = None
        self._resumed_gen = 0  # the last pause the writer asked the loop to end (writer thread only)
        self._wake = threading.Event()  # set by the loop when it pauses reading: flush now
        self.accepting = True
        self.dropped_lines = 0  # lines refused while over budget (incremented by callers too)
        self.bad_journal_lines = 0
        self.segments_rolled = 0
        self.fsyncs = 0
        self.write_errors = 0
        self.last_fsync_ns = 0
        self._lock = threading.Lock()
        self._journal_bytes = 0  # closed-but-unconverted + current segment
        self._outbox_bytes = 0
        self._seq = 0
        self._segment: tuple[Path, JournalName] | None = None
        self._segment_file: int | None = None
        self._segment_opened_ns = 0
        self._segment_bytes = 0  # line bytes (uncompressed) in the current segment
        # the current compressed segment: its compressor, MD5 of the bytes written, first line's time,
        # UTC hour of its lines, and bytes on disk (every one of them fsync'd)
        self._gz: Compressor | None = None
        self._gz_md5 = hashlib.md5(usedforsecurity=False)
        self._gz_first_ns = 0
        self._gz_hour = 0
        self._gz_size = 0
        self._stop = threading.Event()
        self._roll_request = threading.Event()
        self._convert_q: queue.Queue[tuple[Path, JournalName] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._converter: threading.Thread | None = None
        self._warned_level = 0.0
        self._last_full_warning = 0.0
        self._writer_error: BaseException | None = None

    # ---- start-up -----------------------------------------------------------------------------

    def recover(self) -> list[OutboxObject]:
        """Convert journals left by an earlier process, then list everything in the outbox."""
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        for journal in sorted(self.journal_dir.glob(f"*{JOURNAL_SUFFIX}")):
            try:
                name = JournalName.parse(journal.name)
            except ValueError:
                logs.error("spool_foreign_file", path=str(journal))
                continue
            objs, bad = convert_journal(journal, name, self.outbox_dir, self.gzip_level)
            self.bad_journal_lines += bad
            logs.info("spool_recovered_journal", journal=journal.name, objects=len(objs), cut_lines=bad)
            journal.unlink()
            fsync_dir(self.journal_dir)
        leftovers = scan_outbox(self.outbox_dir)
        with self._lock:
            self._outbox_bytes = sum(o.size for o in leftovers)
        if leftovers:
            logs.info("spool_leftovers", objects=len(leftovers), bytes=self._outbox_bytes)
        return leftovers

    def start(self) -> None:
        self._writer = threading.Thread(target=self._writer_loop, name="spool-writer", daemon=True)
        self._converter = threading.Thread(target=self._converter_loop, name="spool-converter", daemon=True)
        self._writer.start()
        self._converter.start()

    # ---- hot path -------------------------------------------------------------------------------

    def append(self, data: bytes, lines: int = 1) -> bool:
        """Queue ``lines`` complete journal lines in this spool's layout (one line, or the lines of one
        socket read: one receive time, so an entry never spans two UTC hours); False (and the lines
        counted as dropped) when over budget."""
        if self.accepting:
            self.pending.append(data)
            self.appended_bytes += len(data)
            return True
        self.dropped_lines += lines
        return False

    # ---- accounting -----------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes of lines appended and not yet taken by the writer (the backlog flow control bounds)."""
        return self.appended_bytes - self.taken_bytes

    def wake_writer(self) -> None:
        """Make the writer take what is pending now instead of at the end of its fsync interval."""
        self._wake.set()

    def _take_pending(self) -> list[bytes]:
        """Every pending line (writer thread); then, if the loop paused reading and the backlog is back
        under the low-water mark, ask it to resume (once per pause)."""
        n = len(self.pending)
        pop = self.pending.popleft
        lines = [pop() for _ in range(n)]
        if lines:
            self.taken_bytes += sum(map(len, lines))
        self._maybe_resume_reading()
        return lines

    def _maybe_resume_reading(self) -> None:
        flow = self.read_flow
        if flow is None or not flow.paused:
            return
        gen = flow.pause_gen
        if gen != self._resumed_gen and self.pending_bytes <= self.max_pending_bytes // 2:
            self._resumed_gen = gen
            flow.drained(gen)

    @property
    def bytes_on_disk(self) -> int:
        with self._lock:
            return self._journal_bytes + self._outbox_bytes

    def object_uploaded(self, obj: OutboxObject) -> None:
        """The uploader deleted ``obj`` locally: give its bytes back to the budget."""
        with self._lock:
            self._outbox_bytes -= obj.size
        self._update_budget()

    def _update_budget(self) -> None:
        used = self.bytes_on_disk
        fill = used / self.max_bytes
        was = self.accepting
        self.accepting = fill < 1.0
        if not self.accepting and was:
            logs.error(
                "spool_full",
                used_bytes=used,
                max_bytes=self.max_bytes,
                message="spool disk budget exhausted: new messages are NOT being recorded "
                "until uploads drain it",
            )
        elif self.accepting and not was:
            logs.warning("spool_accepting_again", used_bytes=used, dropped_lines=self.dropped_lines)
        level = max((lv for lv in FILL_WARN_LEVELS if fill >= lv), default=0.0)
        now = time.monotonic()
        if level > self._warned_level or (level >= 0.75 and now - self._last_full_warning > 30):
            self._last_full_warning = now
            logs.warning(
                "spool_filling",
                fill=round(fill, 3),
                used_bytes=used,
                max_bytes=self.max_bytes,
                message="the store is not keeping up (down?); the spool is filling",
            )
        self._warned_level = level

    # ---- writer thread --------------------------------------------------------------------------

    def _open_segment(self, now_ns: int, first_ns: int = 0) -> None:
        self._seq += 1
        name = JournalName(
            self.market, self.collector_id, self.session, self._seq, self.layout, self.compress_journal
        )
        path = self.journal_dir / name.filename
        self._segment_file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fsync_dir(self.journal_dir)
        self._segment = (path, name)
        self._segment_opened_ns = now_ns
        self._segment_bytes = 0
        if self.compress_journal:
            self._gz = gzip_compressor(self.gzip_level)
            self._gz_md5 = hashlib.md5(usedforsecurity=False)
            self._gz_first_ns = first_ns
            self._gz_hour = first_ns // HOUR_NS
            self._gz_size = 0

    def _roll(self) -> None:
        if self._segment is None or self._segment_file is None:
            return
        if self._gz is not None:
            self._finish_compressed()
        else:
            os.close(self._segment_file)
            self._convert_q.put(self._segment)
        self._segment = None
        self._segment_file = None
        self.segments_rolled += 1

    def _finish_compressed(self) -> None:
        """End the segment's gzip stream, fsync, and move the file into the outbox as its raw object.

        The journal is the object: no second read, copy or hash of it. If finishing fails (disk full),
        the journal goes to the converter instead, which decodes it (every fsync'd line is there) and
        writes the object itself.
        """
        assert self._segment is not None and self._segment_file is not None and self._gz is not None
        path, name = self._segment
        fd, comp = self._segment_file, self._gz
        self._gz = None
        key = RawObjectKey.for_stream_segment(
            name.market, name.collector_id, self._gz_first_ns, name.session, name.seq
        ).key
        target = self.outbox_dir / key
        try:
            tail = comp.flush()
            self._write_all(fd, tail)
            os.fsync(fd)
            os.close(fd)
            if target.exists():  # never replace an object (keys are unique per session and sequence)
                raise FileExistsError(f"outbox object {key} exists")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
            fsync_dir(target.parent)
            fsync_dir(self.journal_dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(fd)
            logs.error(
                "spool_finish_failed",
                journal=path.name,
                error=repr(exc),
                message="the segment is converted from its journal instead",
            )
            self._convert_q.put((path, name))
            return
        self._gz_md5.update(tail)
        size = self._gz_size + len(tail)
        with self._lock:
            self._journal_bytes -= self._gz_size
            self._outbox_bytes += size
        self.on_object(OutboxObject(key, target, size, self._gz_first_ns, self._gz_md5.hexdigest()))

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(data):
            done += os.write(fd, view[done:])

    def _hour_blocks(self, lines: list[bytes]) -> list[tuple[int, int, list[bytes]]]:
        """Consecutive runs of entries in one UTC hour, as (hour, first line's ns, entries).

        An entry is one line or the lines of one socket read, which share one receive time. Journal
        times never go backwards (every entry is stamped on the event loop as it is appended), so when
        the first and last entries share an hour, all do: the usual case is one run, no scan. Only a
        batch across an hour boundary is read entry by entry; an entry whose time does not parse (none
        is written so) is dropped and counted, as the conversion of a plain journal does.
        """
        first, last = _ns_v2(lines[0]), _ns_v2(lines[-1])
        if first is not None and last is not None and first // HOUR_NS == last // HOUR_NS:
            return [(first // HOUR_NS, first, lines)]
        blocks: list[tuple[int, int, list[bytes]]] = []
        for line in lines:
            ns = _ns_v2(line)
            if ns is None:
                self.bad_journal_lines += 1
                continue
            if not blocks or blocks[-1][0] != ns // HOUR_NS:
                blocks.append((ns // HOUR_NS, ns, []))
            blocks[-1][2].append(line)
        return blocks

    def _flush_compressed(self, lines: list[bytes], now_ns: int) -> int:
        """Compress, write and fsync a batch of raw lines into the current segment (one per UTC hour).

        Each write ends at a sync-flush point of the gzip stream, so everything fsync'd decodes even if
        the process dies before the stream is finished.
        """
        written = 0
        blocks = self._hour_blocks(lines)
        for i, (hour, first_ns, block) in enumerate(blocks):
            if self._segment is not None and hour != self._gz_hour:
                self._roll()
            size = 0
            try:
                if self._segment is None:
                    self._open_segment(now_ns, first_ns)
                assert self._segment_file is not None and self._gz is not None
                # compressed in pieces of ~100 KB (an entry of one socket read's lines alone): small
                # buffers are reused by the allocator and stay in cache (one join of a whole interval
                # measured twice the CPU per line)
                compress = self._gz.compress
                outs: list[bytes] = []
                piece: list[bytes] = []
                piece_bytes = 0
                for entry in block:
                    piece.append(entry)
                    piece_bytes += len(entry)
                    if piece_bytes >= COMPRESS_PIECE_BYTES:
                        outs.append(compress(entry if len(piece) == 1 else b"".join(piece)))
                        size += piece_bytes
                        piece = []
                        piece_bytes = 0
                if piece:
                    outs.append(compress(b"".join(piece)))
                    size += piece_bytes
                outs.append(self._gz.flush(Z_SYNC_FLUSH))
                out = b"".join(outs)
                self._write_all(self._segment_file, out)
                os.fsync(self._segment_file)
            except OSError as exc:
                self._compressed_write_failed(
                    exc, sum(entry.count(b"\n") for b in blocks[i:] for entry in b[2])
                )
                return written
            self._gz_md5.update(out)
            self._gz_size += len(out)
            self.fsyncs += 1
            self.last_fsync_ns = time.time_ns()
            written += size
            self._segment_bytes += size
            with self._lock:
                self._journal_bytes += len(out)
            if self._segment_bytes >= self.segment_max_bytes:
                self._roll()
        return written

    def _compressed_write_failed(self, exc: OSError, lost_lines: int) -> None:
        """Cut the journal back to its last fsync'd sync point (what failed never happened), hand it to
        the converter, and count the batch's lines as lost; the next batch starts a fresh segment."""
        fd = self._segment_file
        on_disk = self._gz_size
        if fd is not None:
            try:
                os.ftruncate(fd, self._gz_size)
            except OSError:  # the torn tail stays; the conversion stops at it
                with contextlib.suppress(OSError):
                    on_disk = os.fstat(fd).st_size
            with contextlib.suppress(OSError):
                os.close(fd)
        self._gz = None
        if self._segment is not None and self._gz_size > 0:
            self._convert_q.put(self._segment)
            self.segments_rolled += 1
        elif self._segment is not None:  # nothing of it reached the disk
            with contextlib.suppress(OSError):
                self._segment[0].unlink()
        self._segment = None
        self._segment_file = None
        self._write_failed(exc, lost_lines, on_disk - self._gz_size)

    def flush_once(self, *, force_roll: bool = False) -> int:
        """Write and fsync what is pending; roll the segment when due. Returns bytes written."""
        lines = self._take_pending()
        n = len(lines)
        written = 0
        now_ns = self.clock_ns()
        if self._segment is not None and (
            now_ns // HOUR_NS != self._segment_opened_ns // HOUR_NS
            or now_ns - self._segment_opened_ns >= self.segment_seconds * 1e9
        ):
            self._roll()
        if n and self.compress_journal:
            written = self._flush_compressed(lines, now_ns)
        elif n:
            data = b"".join(lines)
            done = 0
            try:
                if self._segment is None:
                    self._open_segment(now_ns)
                assert self._segment_file is not None
                view = memoryview(data)
                while done < len(data):
                    done += os.write(self._segment_file, view[done:])
                os.fsync(self._segment_file)
            except OSError as exc:
                self._write_failed(exc, data.count(b"\n", done), done)  # the lines not wholly written
                return done
            self.fsyncs += 1
            self.last_fsync_ns = time.time_ns()
            written = len(data)
            self._segment_bytes += written
            with self._lock:
                self._journal_bytes += written
            if self._segment_bytes >= self.segment_max_bytes:
                self._roll()
        if force_roll:
            self._roll()
        self._update_budget()
        return written

    def _write_failed(self, exc: OSError, lost_lines: int, written: int) -> None:
        """A full disk or an I/O error: count what could not be written, start a fresh segment, go on.

        The failed segment is rolled at once, so a line cut by the failure is its last line (dropped
        and counted by the conversion) and never glued to the next one.
        """
        self.write_errors += 1
        self.dropped_lines += lost_lines
        with self._lock:
            self._journal_bytes += written
        if self.write_errors <= 3 or self.write_errors % 50 == 0:
            logs.error(
                "spool_write_failed",
                error=repr(exc),
                lines_lost=lost_lines,
                errors=self.write_errors,
                message="the spool disk cannot be written: received messages are being LOST",
            )
        if self._segment_file is not None:
            with contextlib.suppress(OSError):
                self._roll()
        self._segment = None
        self._segment_file = None

    def _writer_loop(self) -> None:
        try:
            while not self._stop.is_set():
                # woken early when the loop pauses reading (the backlog passed max_pending_bytes)
                self._wake.wait(self.fsync_interval)
                self._wake.clear()
                self.flush_once()
            self.flush_once(force_roll=True)
        except BaseException as exc:  # a bug, not I/O (handled in flush_once): say so loudly
            self._writer_error = exc
            logs.error("spool_writer_crashed", error=repr(exc))
            raise
        finally:
            self._convert_q.put(None)

    # ---- converter thread -----------------------------------------------------------------------

    def _converter_loop(self) -> None:
        while True:
            item = self._convert_q.get()
            if item is None:
                return
            path, name = item
            try:
                size = path.stat().st_size
                objs, bad = convert_journal(path, name, self.outbox_dir, self.gzip_level)
                self.bad_journal_lines += bad
                with self._lock:
                    self._outbox_bytes += sum(o.size for o in objs)
                for obj in objs:
                    self.on_object(obj)
                path.unlink()
                fsync_dir(self.journal_dir)
                with self._lock:
                    self._journal_bytes -= size
            except Exception as exc:  # keep the journal; retry soon (the next start converts it too)
                logs.error("spool_convert_failed", journal=path.name, error=repr(exc))
                if not self._stop.wait(2.0):
                    self._convert_q.put(item)

    # ---- shutdown -------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Write everything pending, roll, convert; returns when all is in the outbox."""
        self._stop.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join(timeout)
        if self._converter is not None:
            self._converter.join(timeout)

    @property
    def writer_error(self) -> BaseException | None:
        return self._writer_error
