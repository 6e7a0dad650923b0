"""The canonical generator (deterministic, realistic sizes), the closed cycle, and the firehose mode."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from typing import Any

import orjson
import websockets

from exchange_sim.batching import Batcher
from exchange_sim.generator import (
    BookGenerator,
    ClosedCycle,
    Formatter,
    day_frames,
    generate_events,
    generate_messages,
    partial_of,
    spec_for,
)
from exchange_sim.truth import TruthLog
from tests.sim.helpers import DictBook, http_get


def test_generator_is_deterministic_given_a_seed() -> None:
    a = list(generate_messages("BTCUSDT", 200, seed=5))
    b = list(generate_messages("BTCUSDT", 200, seed=5))
    c = list(generate_messages("BTCUSDT", 200, seed=6))
    assert a == b and a != c


def test_generator_sizes_look_like_real_btcusdt() -> None:
    spec = spec_for("BTCUSDT", "spot")
    gen = BookGenerator(spec, "spot", seed=3)
    counts = []
    for k in range(6000):
        ev = gen.next_event(k * 100)
        part = partial_of([ev])
        counts.append(len(part.bids) + len(part.asks))
        assert gen.best_bid < gen.best_ask
    counts.sort()
    mean = statistics.mean(counts)
    p99 = counts[int(len(counts) * 0.99)]
    assert 30 <= mean <= 50, mean
    assert 250 <= p99 <= 500, p99
    assert counts[len(counts) // 2] < mean / 1.5  # heavy tail: the median is well below the mean
    assert len(gen.bids) >= 300 and len(gen.asks) >= 300
    assert max(gen.bids) == gen.best_bid and min(gen.asks) == gen.best_ask
    fmt = Formatter(spec)
    assert fmt.price(6000012) == "60000.12000000" and fmt.qty(154698) == "1.54698000"
    assert fmt.parse_price("60000.12000000") == 6000012


def test_usdm_ids_skip_and_spot_ids_are_contiguous() -> None:
    spot = list(generate_events("BTCUSDT", 100, market="spot"))
    usdm = list(generate_events("BTCUSDT", 100, market="usdm"))
    assert all(b.first_id == a.last_id + 1 for a, b in itertools.pairwise(spot))
    assert sum(b.first_id != a.last_id + 1 for a, b in itertools.pairwise(usdm)) > 90


def test_any_batching_gives_the_same_book_at_shared_ids() -> None:
    """Pure check of the partial model: split/merge/random regroupings vs the canonical sequence."""
    spec = spec_for("ETHUSDT", "spot")
    gen = BookGenerator(spec, "spot", seed=9)
    truth = TruthLog("ETHUSDT", *gen.snapshot_levels(), gen.last_update_id)
    events = [gen.next_event(k * 100) for k in range(150)]
    for ev in events:
        truth.append(ev)
    for mode in ("split", "merge", "random"):
        batcher = Batcher(mode, seed=4)
        bids, asks = dict(truth.base_bids), dict(truth.base_asks)
        last = truth.base_id
        parts = [p for ev in events for p in batcher.feed(ev, True)]
        assert {(p.first_id, p.last_id) for p in parts} != {(e.first_id, e.last_id) for e in events}
        for part in parts:
            assert part.first_id == last + 1
            for book, changes in ((bids, part.bids), (asks, part.asks)):
                for price, qty in changes.items():
                    if qty:
                        book[price] = qty
                    else:
                        book.pop(price, None)
            last = part.last_id
            assert (bids, asks) == truth.book_at(last)


def test_closed_cycle_is_one_consistent_book_forever() -> None:
    cycle = ClosedCycle(spec_for("BTCUSDT"), "spot", seed=2, size=50)
    n = len(cycle.events)
    assert cycle.book_after(n) == (cycle.start_bids, cycle.start_asks)
    snapshot, frames = day_frames("BTCUSDT", 3 * n + 7, seed=2, pool_size=50)
    book = DictBook(snapshot)
    for _, frame in frames:
        ev = orjson.loads(frame)["data"]
        assert ev["U"] == book.last_update_id + 1
        book.apply(ev)
        assert float(book.best()[0]) < float(book.best()[2])
    fmt = Formatter(cycle.spec)
    bids, asks = cycle.book_after(3 * n + 7)
    assert book.levels("bids", 10**6) == [
        [fmt.price(p), fmt.qty(bids[p])] for p in sorted(bids, reverse=True)
    ]
    assert book.levels("asks", 10**6) == [[fmt.price(p), fmt.qty(asks[p])] for p in sorted(asks)]


def test_firehose_usdm_chains_on_pu(make_simulator: Any) -> None:
    sim = make_simulator(market="usdm", symbols=["BTCUSDT"], firehose_rate=5000, firehose_pool=40)

    async def run() -> list[dict[str, Any]]:
        url = sim.ws_url + "/public/stream?streams=btcusdt@depth@100ms"
        async with websockets.connect(url, max_size=None, max_queue=None) as ws:
            return [orjson.loads(await ws.recv())["data"] for _ in range(300)]

    events = asyncio.run(run())
    assert all(list(e) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"] for e in events)
    assert all(n["pu"] == p["u"] and n["U"] > p["u"] for p, n in itertools.pairwise(events))


def test_firehose_stream_syncs_to_its_snapshots(make_simulator: Any) -> None:
    sim = make_simulator(symbols=["BTCUSDT"], firehose_rate=5000, firehose_pool=40)

    async def run() -> None:
        url = sim.ws_url + "/stream?streams=btcusdt@depth@100ms"
        async with websockets.connect(url, max_size=None, max_queue=None) as ws:
            first = orjson.loads(await ws.recv())["data"]
            _, _, snap = http_get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=5000")
            book = DictBook(snap)
            assert first["u"] <= book.last_update_id
            applied = 0
            while applied < 600:  # several cycles of the closed pool
                ev = orjson.loads(await ws.recv())["data"]
                if ev["u"] <= book.last_update_id:
                    continue
                assert ev["U"] == book.last_update_id + 1
                book.apply(ev)
                applied += 1
            _, _, later = http_get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=5000")
            while book.last_update_id < later["lastUpdateId"]:
                book.apply(orjson.loads(await ws.recv())["data"])
            assert book.last_update_id == later["lastUpdateId"]
            assert book.levels("bids", 5000) == later["bids"] and book.levels("asks", 5000) == later["asks"]

    asyncio.run(run())


def test_truth_log_answers_every_id_after_folding_and_checkpoints() -> None:
    spec = spec_for("BNBUSDT", "spot")
    gen = BookGenerator(spec, "spot", seed=11)
    bids, asks = gen.snapshot_levels()
    truth = TruthLog("BNBUSDT", bids, asks, gen.last_update_id, max_events=1200)
    ref_bids, ref_asks = dict(bids), dict(asks)
    books: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
    from exchange_sim.truth import apply_event

    for k in range(2600):  # folds twice, crosses several checkpoints
        ev = gen.next_event(k)
        truth.append(ev)
        apply_event(ref_bids, ref_asks, ev)
        if k % 97 == 0 or k > 2590:
            books[ev.last_id] = (dict(ref_bids), dict(ref_asks))
    kept = [u for u in books if u >= truth.base_id]
    assert len(kept) > 10 and len(kept) < len(books)
    for u in kept:
        assert truth.book_at(u) == books[u]
    mid = truth.events[-1]
    inside = mid.ids[len(mid.ids) // 2]
    expect_bids, expect_asks = truth.book_at(mid.first_id - 1)
    apply_event(expect_bids, expect_asks, mid, inside)  # only the changes with id <= inside
    assert truth.book_at(inside) == (expect_bids, expect_asks)
    assert truth.book_at(inside) != truth.book_at(mid.last_id) or inside == mid.last_id
