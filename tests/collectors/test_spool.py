"""The spool: fsync'd journal, segment rolls (time, size, UTC hour), conversion, recovery, budget, lock."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.spool import (
    HOUR_NS,
    JournalName,
    OutboxObject,
    Spool,
    SpoolLock,
    SpoolLockedError,
    convert_journal,
    journal_chunks,
    scan_outbox,
)
from depth_core.raw_format import LineKind, RawObjectKey, read_raw_object

T0 = 1_764_000_000 * 10**9  # 2025-11-24T16:00:00Z, an hour boundary


class Clock:
    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def make_spool(tmp_path: Path, clock: Clock, got: list[OutboxObject], **kw: object) -> Spool:
    args: dict[str, object] = dict(
        market="spot",
        collector_id="eu-1",
        session="abc123",
        segment_seconds=10.0,
        segment_max_bytes=1 << 20,
        max_bytes=1 << 30,
        fsync_interval=0.05,
        gzip_level=1,
        on_object=got.append,
        clock_ns=clock,
    )
    args.update(kw)
    return Spool(tmp_path / "spool", **args)  # type: ignore[arg-type]


def line(symbol: str, ns: int, text: str, kind: str = "D") -> bytes:
    return f"{symbol} {ns} {kind} {text}\n".encode()


def decode(obj: OutboxObject) -> list[tuple[int, LineKind, bytes]]:
    content = read_raw_object(obj.path.read_bytes())
    assert not content.problems
    return [(ln.receive_ns, ln.kind, ln.text) for ln in content.lines]


def test_lines_reach_disk_on_flush_and_roll_by_time(tmp_path: Path) -> None:
    clock = Clock(T0 + 5)
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, clock, got)
    spool.recover()
    spool.append(line("BTCUSDT", T0 + 5, '{"a":1}'))
    spool.append(line("ETHUSDT", T0 + 6, '{"b":2}'))
    spool.append(line("BTCUSDT", T0 + 7, '{"c":3}', "M"))
    assert spool.flush_once() > 0
    journals = list((tmp_path / "spool" / "journal").glob("*.jnl"))
    assert len(journals) == 1
    assert journals[0].read_bytes().count(b"\n") == 3  # on disk before any roll
    clock.ns = T0 + 9 * 10**9
    spool.flush_once()
    assert spool.segments_rolled == 0
    clock.ns = T0 + 10 * 10**9 + 5
    spool.flush_once()
    assert spool.segments_rolled == 1
    spool.close()  # no threads started: drains the converter queue only when started, so convert here
    name = JournalName.parse(journals[0].name)
    objs, bad = convert_journal(journals[0], name, spool.outbox_dir, 1)
    assert bad == 0
    by_symbol = {RawObjectKey.parse(o.key).symbol: o for o in objs}
    assert set(by_symbol) == {"BTCUSDT", "ETHUSDT"}
    assert decode(by_symbol["BTCUSDT"]) == [
        (T0 + 5, LineKind.DEPTH, b'{"a":1}'),
        (T0 + 7, LineKind.META, b'{"c":3}'),
    ]
    key = RawObjectKey.parse(by_symbol["ETHUSDT"].key)
    assert (key.first_receive_ns, key.session, key.seq, key.stream, key.market) == (
        T0 + 6,
        "abc123",
        1,
        "eu-1",
        "spot",
    )


def test_threads_convert_rolled_segments_and_split_at_utc_hours(tmp_path: Path) -> None:
    clock = Clock(T0 - 2 * 10**9)
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, clock, got, segment_seconds=3600.0)
    spool.recover()
    spool.start()
    spool.append(line("BTCUSDT", T0 - 10**9, "before-midnight-hour"))
    spool.append(line("BTCUSDT", T0 + 10**9, "after"))  # same batch, the next UTC hour (and day here)
    spool.close()
    assert not list(spool.journal_dir.glob("*.jnl"))
    keys = sorted(RawObjectKey.parse(o.key) for o in got)
    assert [k.first_receive_ns for k in keys] == [T0 - 10**9, T0 + 10**9]
    assert {k.first_receive_ns // HOUR_NS for k in keys} == {T0 // HOUR_NS - 1, T0 // HOUR_NS}
    for obj in got:
        assert len(decode(obj)) == 1
    assert spool.bytes_on_disk == sum(o.size for o in got)


def test_size_cap_rolls(tmp_path: Path) -> None:
    clock = Clock(T0)
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, clock, got, segment_max_bytes=1000)
    spool.recover()
    spool.start()
    for i in range(50):
        spool.append(line("BTCUSDT", T0 + i, "x" * 100))
        spool.flush_once()
    spool.close()
    assert spool.segments_rolled >= 5
    assert sum(len(decode(o)) for o in got) == 50
    assert len({o.key for o in got}) == len(got)


def test_recovery_after_a_kill_converts_journals_and_drops_only_a_cut_line(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    journal = spool_dir / "journal"
    journal.mkdir(parents=True)
    name = JournalName("usdm", "ap-1", "zz9", 7)
    (journal / name.filename).write_bytes(
        line("BTCUSDT", T0 + 1, "one") + line("BTCUSDT", T0 + 2, "two") + b"BTCUSDT 123 D half-writ"
    )
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, Clock(T0), got)
    leftovers = spool.recover()
    assert spool.bad_journal_lines == 1
    assert len(leftovers) == 1
    key = RawObjectKey.parse(leftovers[0].key)
    assert (key.market, key.stream, key.session, key.seq) == ("usdm", "ap-1", "zz9", 7)
    assert [t for _, _, t in decode(leftovers[0])] == [b"one", b"two"]
    assert not list(journal.glob("*.jnl"))
    # a second scan finds the same outbox object (until it is uploaded)
    assert [o.key for o in scan_outbox(spool.outbox_dir)] == [leftovers[0].key]


def test_conversion_is_deterministic(tmp_path: Path) -> None:
    j = tmp_path / "j.jnl"
    j.write_bytes(line("BTCUSDT", T0 + 1, "a") + line("ETHUSDT", T0 + 2, "b"))
    name = JournalName("spot", "eu-1", "s1", 1)
    a, _ = convert_journal(j, name, tmp_path / "o1", 6)
    b, _ = convert_journal(j, name, tmp_path / "o2", 6)
    assert [o.key for o in a] == [o.key for o in b]
    assert [o.path.read_bytes() for o in a] == [o.path.read_bytes() for o in b]
    assert gzip.decompress(a[0].path.read_bytes()) == f"{T0 + 1} D a\n".encode()


def test_disk_budget_refuses_and_counts(tmp_path: Path) -> None:
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, Clock(T0), got, max_bytes=500)
    spool.recover()
    for i in range(10):
        assert spool.append(line("BTCUSDT", T0 + i, "y" * 100))
    spool.flush_once()
    assert spool.bytes_on_disk > 500
    assert not spool.accepting
    assert not spool.append(line("BTCUSDT", T0 + 99, "z"))
    assert spool.dropped_lines == 1


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    lock = SpoolLock(tmp_path / "spool")
    lock.acquire()
    try:
        # another process, not just another fd: flock is per open file description
        code = (
            "import sys; from pathlib import Path; from collectors.spool import SpoolLock, SpoolLockedError\n"
            f"try:\n    SpoolLock(Path({str(tmp_path / 'spool')!r})).acquire()\n"
            "except SpoolLockedError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert res.returncode == 3, res.stderr
        assert f"pid {os.getpid()}" in res.stdout
        with pytest.raises(SpoolLockedError):
            SpoolLock(tmp_path / "spool").acquire()
    finally:
        lock.release()
    again = SpoolLock(tmp_path / "spool")
    again.acquire()
    again.release()


def test_conversion_streams_in_chunks_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collectors.spool as spool_mod

    j = tmp_path / "j.jnl"
    body = b"".join(line("BTCUSDT" if i % 3 else "ETHUSDT", T0 + i, "x" * (i % 50)) for i in range(500))
    j.write_bytes(body)
    name = JournalName("spot", "eu-1", "s1", 1)
    whole, bad_whole = convert_journal(j, name, tmp_path / "o1", 1)
    monkeypatch.setattr(spool_mod, "CONVERT_CHUNK", 37)  # lines cut across every chunk boundary
    chunked, bad_chunked = convert_journal(j, name, tmp_path / "o2", 1)
    assert bad_whole == bad_chunked == 0
    assert [o.key for o in whole] == [o.key for o in chunked]
    assert [decode(o) for o in whole] == [decode(o) for o in chunked]
    assert sum(len(decode(o)) for o in chunked) == 500


WRITE_FAILURE_SCRIPT = r"""
import resource, signal, sys
from pathlib import Path
from collectors.spool import Spool, JournalName, convert_journal

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
got = []
spool = Spool(Path(sys.argv[1]), market="spot", collector_id="eu-1", session="s1", segment_seconds=3600,
              segment_max_bytes=1 << 30, max_bytes=1 << 30, fsync_interval=0.05, gzip_level=1,
              on_object=got.append)
spool.recover()
line = lambda i: b"BTCUSDT %d D {\"i\":%d,\"pad\":\"%s\"}\n" % (1764000000000000000 + i, i, b"x" * 80)
for i in range(10):
    spool.append(line(i))
spool.flush_once()                      # fine
resource.setrlimit(resource.RLIMIT_FSIZE, (1500, hard))  # the "disk" fills up
for i in range(10, 40):
    spool.append(line(i))
spool.flush_once()                      # fails part-way: counted, segment rolled, no exception
assert spool.write_errors == 1, spool.write_errors
lost = spool.dropped_lines
assert 0 < lost <= 30, lost
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
for i in range(40, 50):
    spool.append(line(i))
spool.flush_once(force_roll=True)
journals = sorted(Path(sys.argv[1], "journal").glob("*.jnl"))
assert len(journals) == 2, journals      # the failed segment and a fresh one
kept = 0
for j in journals:
    objs, bad = convert_journal(j, JournalName.parse(j.name), Path(sys.argv[1], "outbox"), 1)
    for o in objs:
        import gzip
        kept += gzip.decompress(o.path.read_bytes()).count(b"\n")
assert kept + lost == 50, (kept, lost)   # every line is either stored or counted as lost
print("ok", lost)
"""


def test_a_full_disk_is_counted_and_survived(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", WRITE_FAILURE_SCRIPT, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("ok")


def test_conversion_paths_agree(tmp_path: Path) -> None:
    """One symbol (fast replace), several symbols, and a chunk across an hour: same lines, right objects."""
    name = JournalName("spot", "eu-1", "s1", 1)
    cases = {
        "one": [line("BTCUSDT", T0 + i, f"a{i}") for i in range(20)],
        "several": [line(("BTCUSDT", "ETHUSDT", "BTCUSD")[i % 3], T0 + i, f"b{i}") for i in range(30)],
        "hour": [line("BTCUSDT" if i % 2 else "ETHUSDT", T0 - 10 + i, f"c{i}") for i in range(20)],
        "damaged": [line("BTCUSDT", T0 + 1, "ok"), b"BTCUSDT notatime D x\n", line("BTCUSDT", T0 + 3, "ok2")],
    }
    for case, lines_ in cases.items():
        j = tmp_path / f"{case}.jnl"
        j.write_bytes(b"".join(lines_))
        objs, bad = convert_journal(j, name, tmp_path / case, 1)
        got: dict[str, list[tuple[int, LineKind, bytes]]] = {}
        for o in objs:
            k = RawObjectKey.parse(o.key)
            content = read_raw_object(o.path.read_bytes())
            # a damaged journal line is kept for the reader to quarantine, never silently dropped
            assert [p[2] for p in content.problems] == ([b"notatime D x"] if case == "damaged" else [])
            got.setdefault(k.symbol, []).extend((ln.receive_ns, ln.kind, ln.text) for ln in content.lines)
            hours = {ln.receive_ns // HOUR_NS for ln in content.lines}
            assert hours == {k.first_receive_ns // HOUR_NS}, case  # one object, one hour
            assert content.lines[0].receive_ns == k.first_receive_ns
        expected: dict[str, list[tuple[int, LineKind, bytes]]] = {}
        for raw in lines_:
            sym, ns, kind, text = raw.rstrip(b"\n").split(b" ", 3)
            if ns.isdigit():
                expected.setdefault(sym.decode(), []).append((int(ns), LineKind(kind.decode()), text))
        assert got == expected, case
        assert bad == 0
    assert len(list((tmp_path / "hour").rglob("*.ndjson.gz"))) == 4  # 2 symbols x 2 hours


# ---- layout 2: one object per stream per segment, every symbol's lines as they are ----------------


def line_v2(symbol: str, ns: int, text: str, kind: str = "D") -> bytes:
    return f"{ns} {kind} {symbol} {text}\n".encode()


def decode_v2(obj: OutboxObject) -> list[bytes]:
    return gzip.decompress(obj.path.read_bytes()).splitlines(keepends=True)


def test_v2_segment_becomes_one_object_holding_every_symbol(tmp_path: Path) -> None:
    clock = Clock(T0 + 5)
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, clock, got, layout=2)
    spool.recover()
    spool.start()
    written = [line_v2(f"SYM{i:03d}", T0 + 5 + i, f'{{"i":{i}}}') for i in range(400)]
    written.append(line_v2("-", T0 + 1000, '{"event":"disconnect"}', "M"))
    for ln in written:
        spool.append(ln)
    spool.close()
    assert len(got) == 1  # 400 symbols, one object
    key = RawObjectKey.parse(got[0].key)
    assert key.layout == 2 and key.symbol is None
    assert (key.first_receive_ns, key.session, key.seq, key.stream) == (T0 + 5, "abc123", 1, "eu-1")
    assert got[0].key.startswith("raw/market=spot/stream=eu-1/date=2025-11-24/")
    assert decode_v2(got[0]) == written  # byte for byte: no grouping, no rewriting


def test_v2_segment_across_a_utc_hour_splits_in_two(tmp_path: Path) -> None:
    clock = Clock(T0 - 2 * 10**9)
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, clock, got, segment_seconds=3600.0, layout=2)
    spool.recover()
    spool.start()
    before = [line_v2("BTCUSDT", T0 - 10**9, "a"), line_v2("ETHUSDT", T0 - 1, "b")]
    after = [line_v2("BTCUSDT", T0, "c"), line_v2("ETHUSDT", T0 + 10**9, "d")]
    for ln in before + after:
        spool.append(ln)
    spool.close()
    keys = sorted((RawObjectKey.parse(o.key), o) for o in got)
    assert [k.first_receive_ns for k, _ in keys] == [T0 - 10**9, T0]
    assert [decode_v2(o) for _, o in keys] == [before, after]


def test_v2_recovery_keeps_v1_leftovers_in_v1_and_drops_only_a_cut_line(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    journal = spool_dir / "journal"
    journal.mkdir(parents=True)
    old = JournalName("spot", "eu-1", "old1", 3)  # left by a layout-1 collector
    (journal / old.filename).write_bytes(
        line("BTCUSDT", T0 + 1, "v1-one") + line("ETHUSDT", T0 + 2, "v1-two")
    )
    new = JournalName("spot", "eu-1", "new2", 4, layout=2)
    assert new.filename.endswith(".v2.jnl") and JournalName.parse(new.filename) == new
    (journal / new.filename).write_bytes(
        line_v2("BTCUSDT", T0 + 3, "v2-one")
        + line_v2("ETHUSDT", T0 + 4, "v2-two")
        + b"12345 D BTCUSDT half-wr"
    )
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, Clock(T0), got, layout=2)
    leftovers = spool.recover()
    assert spool.bad_journal_lines == 1
    keys = sorted(RawObjectKey.parse(o.key) for o in leftovers)
    assert [(k.layout, k.symbol, k.session) for k in keys] == [
        (2, None, "new2"),
        (1, "BTCUSDT", "old1"),
        (1, "ETHUSDT", "old1"),
    ]
    v2 = next(o for o in leftovers if RawObjectKey.parse(o.key).layout == 2)
    assert decode_v2(v2) == [line_v2("BTCUSDT", T0 + 3, "v2-one"), line_v2("ETHUSDT", T0 + 4, "v2-two")]


def test_v2_conversion_is_deterministic(tmp_path: Path) -> None:
    j = tmp_path / "x.v2.jnl"
    j.write_bytes(b"".join(line_v2(f"S{i % 7}X", T0 + i, "y" * (i % 50)) for i in range(20000)))
    name = JournalName("spot", "eu-1", "d1", 1, layout=2)
    a, bad_a = convert_journal(j, name, tmp_path / "o1", 1)
    b, bad_b = convert_journal(j, name, tmp_path / "o2", 1)
    assert bad_a == bad_b == 0 and len(a) == 1
    assert [o.key for o in a] == [o.key for o in b]
    assert a[0].path.read_bytes() == b[0].path.read_bytes()
    assert gzip.decompress(a[0].path.read_bytes()) == j.read_bytes()


# ---- layout 2's compressed journal: the writer gzips, the journal becomes the object ---------------


def test_v2_journal_is_gzip_fsynced_at_each_flush_and_becomes_the_object(tmp_path: Path) -> None:
    clock = Clock(T0 + 5)
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, clock, got, layout=2)
    spool.recover()
    first = [line_v2("BTCUSDT", T0 + 5, '{"a":1}'), line_v2("ETHUSDT", T0 + 6, '{"b":2}')]
    for ln in first:
        spool.append(ln)
    assert spool.flush_once() > 0
    (journal,) = spool.journal_dir.glob("*.jnl")
    name = JournalName.parse(journal.name)
    assert journal.name.endswith(".v2gz.jnl") and name.compressed and name.layout == 2
    # on disk and decodable before the segment ends: the write stopped at a sync-flush point
    assert b"".join(journal_chunks(journal, True)) == b"".join(first)
    second = [line_v2("-", T0 + 7, '{"event":"x"}', "M")]
    spool.append(second[0])
    spool.flush_once()
    assert b"".join(journal_chunks(journal, True)) == b"".join(first + second)
    clock.ns = T0 + 11 * 10**9
    spool.flush_once()  # the segment's time is up: finished and moved into the outbox
    assert spool.segments_rolled == 1 and not journal.exists()
    (obj,) = got
    assert obj.key == RawObjectKey.for_stream_segment("spot", "eu-1", T0 + 5, "abc123", 1).key
    assert obj.path == spool.outbox_dir / obj.key
    body = obj.path.read_bytes()
    assert obj.size == len(body) and obj.md5 == hashlib.md5(body).hexdigest()  # hashed as written
    assert gzip.decompress(body) == b"".join(first + second)  # one standard gzip member
    assert spool.bytes_on_disk == obj.size


def test_v2_killed_mid_segment_recovers_every_fsynced_line(tmp_path: Path) -> None:
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, Clock(T0), got, layout=2)
    spool.recover()
    written = [line_v2("BTCUSDT", T0 + i, "x" * (i % 40)) for i in range(300)]
    for i, ln in enumerate(written):
        spool.append(ln)
        if i % 50 == 49:
            spool.flush_once()
    (journal,) = spool.journal_dir.glob("*.jnl")
    whole = journal.read_bytes()
    # what a kill -9 can leave: the stream cut anywhere after the last fsync'd sync point
    journal.write_bytes(whole + b"\x00" * 7)  # a torn write: bytes that do not decode
    second: list[OutboxObject] = []
    again = make_spool(tmp_path, Clock(T0), second, layout=2)
    leftovers = again.recover()
    assert again.bad_journal_lines == 0
    (obj,) = leftovers
    assert gzip.decompress(obj.path.read_bytes()) == b"".join(written)
    key = RawObjectKey.parse(obj.key)
    assert (key.first_receive_ns, key.session, key.seq) == (T0, "abc123", 1)
    assert not list(again.journal_dir.glob("*.jnl"))


def test_v2_journal_cut_inside_a_write_keeps_the_lines_before_it(tmp_path: Path) -> None:
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, Clock(T0), got, layout=2)
    spool.recover()
    before = [line_v2("BTCUSDT", T0 + i, f"a{i}") for i in range(20)]
    for ln in before:
        spool.append(ln)
    spool.flush_once()
    (journal,) = spool.journal_dir.glob("*.jnl")
    synced = journal.stat().st_size
    for i in range(20, 40):
        spool.append(line_v2("BTCUSDT", T0 + i, "b" * 3000 + str(i)))
    spool.flush_once()
    cut = synced + (journal.stat().st_size - synced) // 2
    with open(journal, "r+b") as f:
        f.truncate(cut)
    objs, bad = convert_journal(journal, JournalName.parse(journal.name), tmp_path / "out", 1)
    lines_ = gzip.decompress(objs[0].path.read_bytes()).splitlines(keepends=True)
    assert lines_[:20] == before and len(lines_) < 40
    assert bad <= 1  # at most the one line the cut went through


def test_v2_batch_across_an_hour_rolls_between_the_hours(tmp_path: Path) -> None:
    got: list[OutboxObject] = []
    spool = make_spool(tmp_path, Clock(T0 + 10**6), got, layout=2, segment_seconds=3600.0)
    spool.recover()
    before = [line_v2("BTCUSDT", T0 - 2, "a"), line_v2("ETHUSDT", T0 - 1, "b")]
    after = [line_v2("BTCUSDT", T0, "c")]
    for ln in before + after:
        spool.append(ln)
    spool.flush_once(force_roll=True)
    keys = sorted(
        (RawObjectKey.parse(o.key).first_receive_ns, gzip.decompress(o.path.read_bytes())) for o in got
    )
    assert keys == [(T0 - 2, b"".join(before)), (T0, b"".join(after))]


WRITE_FAILURE_SCRIPT_V2 = r"""
import gzip, resource, signal, sys
from pathlib import Path
from collectors.spool import Spool, JournalName, convert_journal

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
got = []
spool = Spool(Path(sys.argv[1]), market="spot", collector_id="eu-1", session="s1", segment_seconds=3600,
              segment_max_bytes=1 << 30, max_bytes=1 << 30, fsync_interval=0.05, gzip_level=1,
              on_object=got.append, layout=2)
spool.recover()
line = lambda i: b"%d D BTCUSDT {\"i\":%d,\"pad\":\"%s\"}\n" % (
    1764000000000000000 + i, i, b"%d" % (i * 7919) * 20)
for i in range(10):
    spool.append(line(i))
spool.flush_once()                      # fine
(failed,) = Path(sys.argv[1], "journal").glob("*.jnl")
synced = failed.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (synced + 200, hard))  # the "disk" fills up
for i in range(10, 400):
    spool.append(line(i))
spool.flush_once()                      # fails part-way: counted, segment closed, no exception
assert spool.write_errors == 1, spool.write_errors
assert spool.dropped_lines == 390, spool.dropped_lines  # exactly the batch: it never happened
assert failed.stat().st_size == synced  # cut back to the last sync point
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
for i in range(400, 410):
    spool.append(line(i))
spool.flush_once(force_roll=True)       # a fresh segment, finished into the outbox
objs, bad = convert_journal(failed, JournalName.parse(failed.name), Path(sys.argv[1], "outbox"), 1)
assert bad == 0, bad
kept = b"".join(gzip.decompress(o.path.read_bytes()) for o in objs + got)
assert kept == b"".join(line(i) for i in [*range(10), *range(400, 410)]), kept[:300]
print("ok", spool.dropped_lines)
"""


def test_a_full_disk_is_counted_and_survived_v2(tmp_path: Path) -> None:
    """A compressed batch reaches the disk whole or not at all: the journal is cut back to its last
    sync point, so the lost count is exact and the failed segment still converts."""
    res = subprocess.run(
        [sys.executable, "-c", WRITE_FAILURE_SCRIPT_V2, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("ok 390")
