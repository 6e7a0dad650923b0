"""The sensors' raw scan: StartAfter head + bounded sweep; O(streams) requests, nothing missed, nothing
twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from depth_core.raw_format import LineKind
from depth_pipeline.raw_scan import Deadline, NewObject, StreamScan, rewind, scan_stream
from depth_store import ObjectStore, open_store
from depth_store.counting import CountingStore
from tests.pipeline.rawgen import write_object
from tests.pipeline.v2gen import write_v2

S = 10**9


def _tick(
    store: ObjectStore, state: StreamScan | None, now: float, **kw: object
) -> tuple[list[NewObject], StreamScan]:
    new, state = scan_stream(
        store,
        "spot",
        "eu-1",
        state,
        now=now,
        initial_lookback_seconds=3600,
        deadline=Deadline(30),
        **kw,  # type: ignore[arg-type]
    )
    # the state goes through JSON as in a sensor cursor
    restored = StreamScan.from_json(state.to_json())
    assert restored is not None
    return new, restored


def test_head_reports_each_new_object_once_and_the_sweep_the_leftovers(any_store: ObjectStore) -> None:
    now = time.time()
    base = int((now - 1800) * S)
    for i in range(5):
        write_v2(any_store, "eu-1", base + i * 10 * S, seq=i)
    new, state = _tick(any_store, None, now)
    assert len(new) == 5 and {o.found_by for o in new} == {"head"}
    assert _tick(any_store, state, now + 1)[0] == []

    # out of order by less than the lag window (a retried upload): the head finds it
    write_v2(any_store, "eu-1", base + 45 * S, seq=99)
    write_v2(any_store, "eu-1", base + 35 * S, seq=98)
    new, state = _tick(any_store, state, now + 2)
    assert sorted(o.key.seq for o in new) == [98, 99]

    # a restarted collector uploads spool leftovers received long before the newest key
    for i in range(10):
        write_v2(any_store, "eu-1", base + (2000 + i) * S, session="next", seq=i)
    new, state = _tick(any_store, state, now + 3)
    assert len(new) == 10
    leftover = write_v2(any_store, "eu-1", base - 7200 * S, session="old", seq=7)  # 2 h before the head
    v1 = write_object(any_store, "eu-1", "BTCUSDT", [(base, LineKind.DEPTH, b"{}")], session="v1", seq=1)
    seen: list[NewObject] = []
    for k in range(3):  # found within two sweep passes (here a pass is one tick)
        new, state = _tick(any_store, state, now + 10 + k)
        seen += new
    assert sorted(o.info.key for o in seen) == sorted([leftover.key, v1.key])
    assert {o.found_by for o in seen} == {"sweep"}
    for k in range(3):
        assert _tick(any_store, state, now + 20 + k)[0] == []


def test_requests_per_tick_do_not_grow_with_retained_objects(tmp_path: Path) -> None:
    """Same LIST count per tick with 100 or 3,000 retained objects: the head lists only the new keys."""
    now = time.time()
    counts = []
    for retained in (100, 3000):
        store = CountingStore(open_store(str(tmp_path / f"s{retained}")))
        base = int((now - 86400) * S)
        for i in range(retained):
            write_v2(store, "eu-1", base + i * S, symbols=("BTCUSDT",), seq=i)
        _new, state = _tick(store, None, now, sweep_keys=1000)
        for _ in range(5):  # let the sweep finish its first pass
            _new, state = _tick(store, state, now, sweep_keys=1000)
        write_v2(store, "eu-1", int(now * S), seq=retained + 1)
        store.reset()
        new, state = _tick(store, state, now + 30, sweep_keys=1000)
        assert [o.found_by for o in new] == ["head"]
        snapshot = store.snapshot()
        counts.append((snapshot["LIST"], snapshot["GET"], snapshot["HEAD"]))
    assert counts[0] == counts[1] == (2, 0, 0)  # one head listing + one sweep page


def test_rewound_objects_come_first_next_tick(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s"))
    now = time.time()
    for i in range(3):
        write_v2(store, "eu-1", int((now - 100 + i) * S), seq=i)
    new, state = _tick(store, None, now)
    rewind(state, new[1:])
    state = StreamScan.from_json(state.to_json())  # type: ignore[assignment]
    again, state = _tick(store, state, now + 1)
    assert [o.info.key for o in again] == [o.info.key for o in new[1:]]
    assert {o.found_by for o in again} == {"retry"}
    assert _tick(store, state, now + 2)[0] == []


@pytest.mark.parametrize("edge", [True, False])
def test_sweep_collects_date_folders_and_midnight_neighbours(tmp_path: Path, edge: bool) -> None:
    store = open_store(str(tmp_path / "s"))
    midnight = 1_795_000_000 - 1_795_000_000 % 86400  # a UTC midnight
    write_v2(store, "eu-1", (midnight + 30) * S)  # 30 s after midnight: may hold the day before's events
    write_v2(store, "eu-1", (midnight + 7200) * S, seq=1)
    _new, state = scan_stream(
        store,
        "spot",
        "eu-1",
        None,
        now=time.time(),
        initial_lookback_seconds=0,
        deadline=Deadline(30),
        head=False,
        edge_seconds=120 if edge else 0,
    )
    assert state.passes == 1
    import datetime as dt

    day = dt.datetime.fromtimestamp(midnight, tz=dt.UTC).date()
    expected = {day.isoformat()} | ({(day - dt.timedelta(days=1)).isoformat()} if edge else set())
    assert set(state.dates) == expected
