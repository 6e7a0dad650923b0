"""The checks' outcomes: the merge's, computed while the merged files are written (one pass, chunk by
chunk), and a validated stream-day's (:func:`stream_day_outcomes`). What each check is and whether it
blocks is declared in ``check_catalog``.

Why during the merge: the replay-based checks (never crossed, agrees with REST snapshots, matches
@bookTicker) need the book after every event; replaying each output chunk as it is written (with the one
book replay, ``depth_core.book``) costs one pass and no re-read of the day.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from depth_core.book import LevelProbes, OrderBook, sample_tops
from depth_core.check_catalog import MERGED_CHECKS, VALIDATED_CHECKS, CheckOutcome
from depth_core.idline import intersect_length, subtract_ranges, union_ranges
from depth_core.names import Market
from depth_core.schema import MERGED_SCHEMA, SIDE_BID, string_column_is, table_schema_as_written

if TYPE_CHECKING:
    from depth_core.merge_types import MergeReport, Plan, StreamInput
    from depth_core.validate import SymbolDayReport

MAX_LISTED = 20  # how many offending ids a check names in its metadata


@numba.njit(cache=True, nogil=True)
def _groups_and_order(
    snap: np.ndarray, last: np.ndarray, first: np.ndarray, exact: np.ndarray
) -> tuple[np.ndarray, int, int, bool, bool]:  # pragma: no cover - compiled
    """One pass over a chunk's rows (no chunk-sized temporaries): the first row of each event/image (rows
    sharing is_snapshot, last_update_id and first_update_id), and the order problems within the chunk:
    how many rows break the order (last_update_id decreasing, or an image after an exact event with its
    id) and the first of them, whether an image row has book_exact false, and whether an exact event
    directly follows an inexact one."""
    n = snap.shape[0]
    starts = np.empty(n, np.int64)
    groups = 0
    out_of_order = 0
    first_out_of_order = -1
    inexact_image = False
    exact_after_inexact = False
    for i in range(n):
        if snap[i] and not exact[i]:
            inexact_image = True
        if i == 0 or snap[i] != snap[i - 1] or last[i] != last[i - 1] or first[i] != first[i - 1]:
            starts[groups] = i
            groups += 1
        if i == 0:
            continue
        prev_exact_event = exact[i - 1] and not snap[i - 1]
        d = last[i] - last[i - 1]
        if d < 0 or (d == 0 and snap[i] and prev_exact_event):
            if first_out_of_order < 0:
                first_out_of_order = i
            out_of_order += 1
        if exact[i] and not snap[i] and not exact[i - 1] and not snap[i - 1]:
            exact_after_inexact = True
    return starts[:groups].copy(), out_of_order, first_out_of_order, inexact_image, exact_after_inexact


SAME_U_RUN_LIMIT = 64  # events of one u compared pairwise by _same_range_differs; past it: "maybe", sort


@numba.njit(cache=True, nogil=True)
def _same_range_differs(
    lo: np.ndarray, u: np.ndarray, h: np.ndarray, order: np.ndarray
) -> bool:  # pragma: no cover - compiled
    """Whether two events with the same ``(lo, u)`` carry different level hashes (``order`` sorts ``u``).

    Events of one ``u`` are compared pairwise (a run holds one event per stream, or a few): no sort by
    ``(lo, hash)``. A run longer than ``SAME_U_RUN_LIMIT`` answers True, so the caller's exact pass decides.
    """
    n = order.shape[0]
    a = 0
    while a < n:
        b = a + 1
        while b < n and u[order[b]] == u[order[a]]:
            b += 1
        if b - a > SAME_U_RUN_LIMIT:
            return True
        for x in range(a, b):
            for y in range(x + 1, b):
                i, j = order[x], order[y]
                if lo[i] == lo[j] and h[i] != h[j]:
                    return True
        a = b
    return False


def round_trip_failures(values: np.ndarray, decimals: int | None) -> np.ndarray:
    """Indices of floats that are not the nearest double to a decimal with ``decimals`` places."""
    if decimals is None or len(values) == 0:
        return np.zeros(0, np.int64)
    return _round_trip_failures(values, 10.0**decimals)


@numba.njit(cache=True, nogil=True)
def _round_trip_failures(values: np.ndarray, scale: float) -> np.ndarray:  # pragma: no cover - compiled
    """One pass, no temporaries (a merged chunk is a million rows): ``rint(v * scale) / scale == v`` with
    the integer below 2**53."""
    limit = 9007199254740992.0
    bad = 0
    for i in range(values.shape[0]):
        t = np.rint(values[i] * scale)
        if not (abs(t) < limit and t / scale == values[i]):
            bad += 1
    out = np.empty(bad, np.int64)
    k = 0
    for i in range(values.shape[0] if bad else 0):
        t = np.rint(values[i] * scale)
        if not (abs(t) < limit and t / scale == values[i]):
            out[k] = i
            k += 1
    return out


@numba.njit(cache=True, nogil=True)
def _rows_after(last: np.ndarray, stops: np.ndarray, at: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Per id in ``at``: the first row whose last_update_id is past it (``searchsorted(last, at, "right")``
    for rows sorted by last_update_id), found among the group ends ``stops`` (a group's rows share one id)
    by binary search, once per run of equal ids."""
    out = np.empty(at.shape[0], np.int64)
    prev_id, prev_row = 0, -1
    for j in range(at.shape[0]):
        b = at[j]
        if prev_row < 0 or b != prev_id:
            lo, hi = 0, stops.shape[0]
            while lo < hi:  # first group ending past b
                mid = (lo + hi) >> 1
                if last[stops[mid] - 1] <= b:
                    lo = mid + 1
                else:
                    hi = mid
            prev_id, prev_row = b, (stops[lo - 1] if lo > 0 else 0)
        out[j] = prev_row
    return out


def _lookup(keys: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """values[keys == at] for each of ``at``, 0.0 where the key is absent."""
    if len(keys) == 0:
        return np.zeros(len(at))
    order = np.argsort(keys)
    k, v = keys[order], values[order]
    idx = np.clip(np.searchsorted(k, at), 0, len(k) - 1)
    return np.where(k[idx] == at, v[idx], 0.0)


class MergeChecker:
    """Accumulates the merge checks over the output chunks; ``finish`` returns the outcomes."""

    def __init__(
        self, market: Market, streams: Sequence[str], price_decimals: int | None, qty_decimals: int | None
    ) -> None:
        self.market = market
        self.streams = list(streams)
        self.price_decimals = price_decimals
        self.qty_decimals = qty_decimals
        self.book = OrderBook()
        self.schema_problems: list[str] = []
        self.prev_last: int | None = None
        self.prev_was_event = False
        self.prev_was_inexact = False
        self.first_row_checked = False
        self.decimal_failures = 0
        self.decimal_examples: list[float] = []
        self.crossed: list[int] = []
        self.crossed_count = 0
        self.tops_checked = 0
        self.bt_compared = 0
        self.bt_matched = 0
        self.bt_mismatches: list[dict[str, Any]] = []
        self.snap_checks: list[dict[str, Any]] = []
        self.disagreements: list[dict[str, Any]] = []
        self.disagreements_total = 0
        self.partial_disagreements = 0
        self.inputs: Sequence[StreamInput] = []
        self.book_tickers = pl.DataFrame()
        self.snapshot_points: list[tuple[int, float, Any]] = []  # (update id of the book, L, ...)
        self.pending_snaps: pl.DataFrame = pl.DataFrame()
        self.snapshot_levels: list[dict[int, pl.DataFrame]] = []
        # price band the replay knows from its latest anchoring image: (lowest bid, highest ask); None before
        # the first image. Levels beyond it are unknown to the replay until an event sets them.
        self.anchor_band: tuple[float, float] | None = None
        # the previous day's end-of-day ``anchor_band``, if the carried state records it: the band of a
        # carried opening image (a carried book also holds levels beyond it that events set, so its own
        # deepest level overstates what the replay knows). None: the carried image's deepest level is used.
        self.carried_anchor_band: tuple[float, float] | None = None

    # ---------------------------------------------------------------- before the output
    def set_inputs(self, inputs: Sequence[StreamInput], plan: Plan) -> None:
        self.inputs = inputs
        self.plan = plan
        self._streams_agree_same_ranges()
        bts = [
            s.book_tickers.select("u", "bid_price", "bid_qty", "ask_price", "ask_qty")
            for s in inputs
            if s.book_tickers.height
        ]
        self.book_tickers = (
            pl.concat(bts).unique("u", keep="first", maintain_order=True) if bts else pl.DataFrame()
        )
        self._plan_snapshot_checks()
        self.snapshot_levels = [
            {int(k[0]): v for k, v in s.snapshot_levels.partition_by("snap", as_dict=True).items()}
            for s in inputs
        ]

    def snapshot_levels_of(self, stream: int, snap: int) -> pl.DataFrame:
        """The levels (is_bid, price, qty) of snapshot ``snap`` of input ``stream``, in their order (the merge
        writes its images from these: one copy of the day's snapshot levels)."""
        lv = self.snapshot_levels[stream].get(snap)
        if lv is None:
            return pl.DataFrame(schema={"is_bid": pl.Boolean, "price": pl.Float64, "qty": pl.Float64})
        return lv.select("is_bid", "price", "qty")

    def _streams_agree_same_ranges(self) -> None:
        """Events covering the same ids ``(lo, hi]`` must carry the same levels (any streams)."""
        parts = [(i, s.events) for i, s in enumerate(self.inputs) if s.events.height]
        if not parts:
            return
        lo = np.concatenate([e["lo"].to_numpy() for _i, e in parts])
        u = np.concatenate([e["u"].to_numpy() for _i, e in parts])
        h = np.concatenate([e["levels_hash"].to_numpy() for _i, e in parts])
        # the common case, no disagreement, proven by one stable sort on u (each stream's events are in u
        # order already: a merge of sorted runs) and a compiled pass over the runs of one u
        if not _same_range_differs(lo, u, h, np.argsort(u, kind="stable")):
            return
        # some range disagrees: one sort of the events by (lo, u, levels hash), in numpy (no hash table over
        # every event: the merge's peak memory) names them; a range disagrees when two events of it carry
        # different hashes
        order = np.lexsort((h, u, lo))
        lo_o, u_o, h_o = lo[order], u[order], h[order]
        del lo, u, h
        same = (lo_o[1:] == lo_o[:-1]) & (u_o[1:] == u_o[:-1])
        differs = np.flatnonzero(same & (h_o[1:] != h_o[:-1]))
        if not len(differs):
            return
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        ends = np.append(starts[1:], len(order))
        bad = np.unique(np.searchsorted(starts, differs, side="right") - 1)  # groups (ranges) that disagree
        self.disagreements_total = len(bad)
        bad = bad[np.lexsort((lo_o[starts[bad]], u_o[starts[bad]]))][:MAX_LISTED]  # listed by u
        stream_of = np.concatenate([np.full(e.height, i, np.int32) for i, e in parts])
        first_u = np.concatenate([e["U"].to_numpy() for _i, e in parts])
        for g in bad.tolist():
            a, b = int(starts[g]), int(ends[g])
            rows = order[
                a:b
            ]  # positions in the concatenation: the smallest is the range's first in input order
            self.disagreements.append(
                {
                    "first_id": int(first_u[rows.min()]),
                    "last_id": int(u_o[a]),
                    "streams": sorted({self.inputs[int(x)].stream for x in stream_of[rows]}),
                    "variants": len(np.unique(h_o[a:b])),
                }
            )

    def _plan_snapshot_checks(self) -> None:
        """For each REST snapshot: the plan item before which the book is compared, and the straddler."""
        plan = self.plan
        rows = []
        uid = plan.update_id
        book_exact = plan.exact
        images = np.flatnonzero(plan.kind != 0)
        first_image = int(images[0]) if len(images) else len(uid)
        for si, s in enumerate(self.inputs):
            for snap, L in s.snapshots.select("snap", "last_update_id").iter_rows():
                j = int(np.searchsorted(uid, L, side="right"))
                exact = bool(j > 0 and uid[j - 1] == L)
                if j <= first_image:
                    status = "before the day's first image"
                elif not book_exact[j - 1]:
                    status = "in a gap (the book is not exact there)"
                elif exact:
                    status = "check"
                elif j == len(uid):
                    status = "after the day's last event"
                elif plan.kind[j] != 0 or not book_exact[j]:
                    status = "in a gap (the book is not exact there)"
                else:
                    status = "check"
                rows.append((si, snap, L, j, exact, status))
        self.pending_snaps = pl.DataFrame(
            rows,
            schema={
                "s": pl.Int32,
                "snap": pl.Int64,
                "L": pl.Int64,
                "item": pl.Int64,
                "exact": pl.Boolean,
                "status": pl.String,
            },
            orient="row",
        )
        self.snap_skipped = self.pending_snaps.filter(pl.col("status") != "check")

    # ---------------------------------------------------------------- per chunk
    def on_chunk(
        self,
        chunk: pa.Table,
        first_item: int,
        item_rows: np.ndarray,
        other_batchings: pl.DataFrame | None = None,
    ) -> None:
        """Check one output chunk: the table a merged file is written from (:func:`merged_parquet_bytes`;
        its string columns may be Arrow dictionaries, read through their values as readers get them);
        ``item_rows`` = rows of each plan item in it (from ``first_item``).

        ``other_batchings``: levels (b, is_bid, price, qty, U, s, s_c) of events of other batchings ending at
        event end ``b`` of this chunk; compared with the replayed book after ``b``.
        """
        if (written := table_schema_as_written(chunk)) != MERGED_SCHEMA:
            self.schema_problems.append(f"schema {written} != the merged schema (depth_core/schema.py)")
        price = _numpy(chunk, "price")
        qty = _numpy(chunk, "qty")
        self._decimals(price, qty)
        n_rows = chunk.num_rows
        if n_rows == 0:
            return
        is_bid = string_column_is(chunk["side"], SIDE_BID)  # of the rows as written (the side strings)
        snap = _numpy(chunk, "is_snapshot")
        last = _numpy(chunk, "last_update_id")
        first = _numpy(chunk, "first_update_id")
        row_exact = _numpy(chunk, "book_exact")
        starts = self._order(snap, last, first, row_exact)
        stops = np.append(starts[1:], n_rows)
        # other batchings: each level is read from the replayed book after its event end b, in the replay's
        # own pass (probe rows in row order; ``probe_order`` maps them back to the rows of other_batchings)
        others = other_batchings if other_batchings is not None and other_batchings.height else None
        probe_rows, probe_order = self._other_batching_rows(last, stops, others)
        probe_bid = probe_price = probe_qty = np.zeros(0)
        if others is not None:
            probe_bid = others["is_bid"].to_numpy()
            probe_price = others["price"].to_numpy()
            if probe_order is not None:
                probe_bid, probe_price = probe_bid[probe_order], probe_price[probe_order]
            # a level is a price at the symbol's decimals: read the one the price rounds to (numpy's division
            # is correctly rounded: the nearest double to that decimal, as the merged rows hold it)
            if self.price_decimals is not None:
                scale = 10.0**self.price_decimals
                probe_price = np.rint(probe_price * scale) / scale
            probe_qty = np.empty(len(probe_rows))
        # cut points: items before which a snapshot is compared
        item_start_row = np.concatenate([[0], np.cumsum(item_rows)])
        n_items = len(item_rows)
        todo = self.pending_snaps.filter(
            (pl.col("status") == "check")
            & (pl.col("item") >= first_item)
            & (pl.col("item") < first_item + n_items)
        )
        cuts = sorted({int(item_start_row[i - first_item]) for i in todo["item"].to_list()})
        seg_bounds = [0, *[c for c in cuts if 0 < c < n_rows], n_rows]
        img_stops, img_bands = self._image_bands(starts, stops, snap, is_bid, price, chunk["source"])
        ends_u: list[np.ndarray] = []
        tops: list[np.ndarray] = []
        for a, b in itertools.pairwise(seg_bounds):
            if a in cuts or (a == 0 and 0 in cuts):
                k = int(np.searchsorted(img_stops, a, side="right"))  # images wholly before row a
                if k:
                    self.anchor_band = img_bands[k - 1]
                self._compare_snapshots_at(todo, a, is_bid, price, item_start_row, first_item)
            if b <= a:
                continue
            m = (stops > a) & (stops <= b)
            rows = stops[m] - a
            pa = int(np.searchsorted(probe_rows, a, side="right")) if a else 0
            pb = int(np.searchsorted(probe_rows, b, side="right"))
            probes = LevelProbes(probe_rows[pa:pb] - a, probe_bid[pa:pb], probe_price[pa:pb])
            self.book, t = sample_tops(
                is_bid[a:b],
                price[a:b],
                qty[a:b],
                snap[a:b],
                last[a:b],
                rows,
                1,
                book=self.book,
                probes=probes,
            )
            probe_qty[pa:pb] = t.probe_qty
            grp_snap = snap[starts[m]]
            grp_exact = row_exact[starts[m]]  # an inexact event's book is unknown: nothing to check there
            bb, ba = t.bid_price[:, 0], t.ask_price[:, 0]
            crossed = ~np.isnan(bb) & ~np.isnan(ba) & (bb >= ba) & grp_exact
            self.tops_checked += int(np.count_nonzero(grp_exact))
            if crossed.any():
                ids = last[stops[m][crossed] - 1]
                self.crossed_count += int(crossed.sum())
                self.crossed.extend(ids[: MAX_LISTED - len(self.crossed)].tolist())
            ev = ~grp_snap & grp_exact
            ends_u.append(last[stops[m][ev] - 1])
            tops.append(np.column_stack([bb[ev], t.bid_qty[:, 0][ev], ba[ev], t.ask_qty[:, 0][ev]]))
        if img_bands:
            self.anchor_band = img_bands[-1]
        if others is not None:
            replay = probe_qty
            if probe_order is not None:
                replay = np.empty(len(probe_qty))
                replay[probe_order] = probe_qty
            self._compare_other_batchings(others, replay)
        # the snapshots compared at the end of the last chunk are handled in finish()
        self._book_ticker(ends_u, tops)

    def _image_bands(
        self,
        starts: np.ndarray,
        stops: np.ndarray,
        snap: np.ndarray,
        is_bid: np.ndarray,
        price: np.ndarray,
        source: pa.ChunkedArray,
    ) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """End row and price band (lowest bid, highest ask) of each image of a chunk, in order.

        Images are whole plan items, never split across chunks. An empty side knows nothing: its bound is
        +inf (bids) / -inf (asks), so no level of that side is compared.
        """
        img = np.flatnonzero(snap[starts])
        bands: list[tuple[float, float]] = []
        for g in img.tolist():
            a, b = int(starts[g]), int(stops[g])
            if self.carried_anchor_band is not None and str(source[a].as_py()).startswith("carry:"):
                bands.append(self.carried_anchor_band)
                continue
            bids, asks = price[a:b][is_bid[a:b]], price[a:b][~is_bid[a:b]]
            bands.append(
                (float(bids.min()) if len(bids) else np.inf, float(asks.max()) if len(asks) else -np.inf)
            )
        return stops[img], bands

    @staticmethod
    def _other_batching_rows(
        last: np.ndarray, stops: np.ndarray, other: pl.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Where the replay reads each level of ``other`` (events of other batchings ending at event end b):
        at the first row past b, i.e. in the book after every row with last_update_id <= b (an image at b
        included); in row order, with the order that takes the rows of ``other`` there (None: as they are)."""
        if other is None:
            return np.zeros(0, np.int64), None
        rows = _rows_after(last, stops, other["b"].to_numpy())
        if bool(np.all(rows[1:] >= rows[:-1])):  # queries in event order (as built for one stream)
            return rows, None
        order = np.argsort(rows, kind="stable")
        return rows[order], order

    def _compare_other_batchings(self, other: pl.DataFrame, replay: np.ndarray) -> None:
        """The book after event end b must hold every level of an event of another batching that ends at b.

        ``replay``: per row of ``other``, the replayed book's quantity at that level after b (0.0: the book
        has no level there), read in the replay pass (``LevelProbes``); the book carries over from the
        previous chunks and is reset by every image, so levels this chunk has not set come from the book at
        its start, and after an image, levels it does not hold are absent.
        """
        if not bool(np.any(replay != other["qty"].to_numpy())):
            return
        j = other.with_columns(pl.Series("replay", replay))
        bad = j.filter(pl.col("replay") != pl.col("qty"))
        if not bad.height:
            return
        groups = (
            bad.group_by("U", "b", "s", "s_c")
            .agg(pl.len().alias("levels"), pl.col("price").first())
            .sort("b", "U", "s", "s_c")  # the whole group key: the listed examples do not vary run to run
        )
        self.partial_disagreements += groups.height
        for row in groups.head(MAX_LISTED).iter_rows(named=True):
            if len(self.disagreements) >= MAX_LISTED:
                break
            self.disagreements.append(
                {
                    "first_id": row["U"],
                    "last_id": row["b"],
                    "streams": sorted({self.inputs[row["s"]].stream, self.inputs[row["s_c"]].stream}),
                    "variants": 2,
                    "kind": "different batching",
                    "levels_differing": row["levels"],
                    "example_price": row["price"],
                }
            )

    def _order(self, snap: np.ndarray, last: np.ndarray, first: np.ndarray, exact: np.ndarray) -> np.ndarray:
        """The sort-order part of ``schema_and_sort_order`` for one chunk (and across chunks); returns the
        first row of each event/image of the chunk."""
        starts, out_of_order, first_bad, inexact_image, exact_after_inexact = _groups_and_order(
            snap, last, first, exact
        )
        if not self.first_row_checked:
            self.first_row_checked = True
            if not snap[0] and exact[0]:
                self.schema_problems.append(
                    "the day does not open with a snapshot image (or book_exact false rows)"
                )
        if self.prev_last is not None and (
            last[0] < self.prev_last or (last[0] == self.prev_last and snap[0] and self.prev_was_event)
        ):
            self.schema_problems.append(f"rows out of order across files at id {last[0]}")
        # an image comes before the exact events sharing its id; an inexact event ending at the re-anchoring
        # id precedes its image (it is part of the stretch the image closes)
        if out_of_order:
            self.schema_problems.append(f"rows out of order at id {last[first_bad]} ({out_of_order} places)")
        # book_exact false only on event rows, and an exact event never directly follows an inexact one
        if inexact_image:
            self.schema_problems.append("an image row has book_exact false")
        exact_event_first = bool(exact[0]) and not bool(snap[0])
        if exact_after_inexact or (self.prev_was_inexact and exact_event_first):
            self.schema_problems.append("an exact event follows an inexact one without an image between them")
        self.prev_last = int(last[-1])
        self.prev_was_event = bool(exact[-1]) and not bool(snap[-1])
        self.prev_was_inexact = not bool(exact[-1])
        return starts

    def _decimals(self, price: np.ndarray, qty: np.ndarray) -> None:
        # numpy, not polars: polars turns a division by a literal into a multiplication by its reciprocal,
        # which is not correctly rounded (9999 / 100 != 99.99 there)
        for vals, dec in ((price, self.price_decimals), (qty, self.qty_decimals)):
            bad = round_trip_failures(vals, dec)
            self.decimal_failures += len(bad)
            if len(bad) and len(self.decimal_examples) < MAX_LISTED:
                self.decimal_examples.extend(vals[bad[:MAX_LISTED]].tolist())

    def _compare_snapshots_at(
        self,
        todo: pl.DataFrame,
        row: int,
        is_bid: np.ndarray,
        price: np.ndarray,
        item_start_row: np.ndarray,
        first_item: int,
    ) -> None:
        for rec in todo.iter_rows(named=True):
            i = rec["item"] - first_item
            if int(item_start_row[i]) != row:
                continue
            a, b = int(item_start_row[i]), int(item_start_row[i + 1])
            if rec["exact"]:
                a = b  # an exact straddler touched nothing the comparison must leave out
            self._compare_one(rec, is_bid[a:b], price[a:b])

    def _compare_one(self, rec: dict[str, Any], touched_bid: np.ndarray, touched_price: np.ndarray) -> None:
        """Book (now) vs one REST snapshot on the price band both know, minus the touched prices.

        The band of a side runs from the best price to the snapshot's deepest level (a snapshot of limit N
        knows nothing beyond its N-th level) and no further than the deepest level of the image the replay
        was anchored from (beyond it the replay knows only levels events set since). Bounded by price, not by
        a level count: levels inserted or removed inside the band since the anchor would shift a count.
        """
        s = self.inputs[rec["s"]]
        lv = self.snapshot_levels[rec["s"]].get(rec["snap"])
        result: dict[str, Any] = {"stream": s.stream, "last_update_id": rec["L"], "differences": 0}
        # numpy columns once (the snapshot's levels, the straddler's rows); one walk of the book for both
        # sides
        lv_bid = lv["is_bid"].to_numpy() if lv is not None else np.zeros(0, bool)
        lv_price = lv["price"].to_numpy() if lv is not None else np.zeros(0)
        lv_qty = lv["qty"].to_numpy() if lv is not None else np.zeros(0)
        sides = [("bid", True, lv_bid), ("ask", False, ~lv_bid)]
        # more book levels inside the band than snapshot + touched levels is already a difference
        depths = [
            int(np.count_nonzero(mine)) + int(np.count_nonzero(touched_bid == bid)) + 1
            for _side, bid, mine in sides
        ]
        top_b, top_a = self.book.top(max(depths))
        for (side, is_bid, mine), depth in zip(sides, depths, strict=True):
            sp, sq = lv_price[mine], lv_qty[mine]
            tp = touched_price[touched_bid == is_bid]
            n_snap = len(sp)
            if n_snap:
                anchor_bid, anchor_ask = (
                    self.anchor_band if self.anchor_band is not None else (np.inf, -np.inf)
                )
                bound = max(float(sp.min()), anchor_bid) if is_bid else min(float(sp.max()), anchor_ask)
                result[f"{side}_band_bound"] = bound if np.isfinite(bound) else None  # JSON has no inf
                keep = sp >= bound if is_bid else sp <= bound
                sp, sq = sp[keep], sq[keep]
            result[f"{side}_levels_compared"] = int(np.count_nonzero(~np.isin(sp, tp)))
            if n_snap == 0:
                continue
            book_side = (top_b if is_bid else top_a)[:depth]
            bp, bq = book_side[:, 0], book_side[:, 1]
            in_range = bp >= bound if is_bid else bp <= bound
            bp, bq = bp[in_range], bq[in_range]
            prices = np.union1d(sp, bp)
            s_q = _lookup(sp, sq, prices)
            b_q = _lookup(bp, bq, prices)
            diff = (s_q != b_q) & ~np.isin(prices, tp)
            n = int(np.count_nonzero(diff))
            result["differences"] += n
            if n:
                result.setdefault("examples", []).extend(
                    {"side": side, "price": float(p), "snapshot": float(a), "replay": float(b)}
                    for p, a, b in zip(prices[diff][:5], s_q[diff][:5], b_q[diff][:5], strict=True)
                )
        self.snap_checks.append(result)

    def end_book(self) -> pl.DataFrame:
        """The replayed book after the last row (the next day's carried state): is_bid, price, qty."""
        nb, na = self.book.depth_counts()
        bids, asks = self.book.top(max(nb, na))
        return pl.DataFrame(
            {
                "is_bid": np.concatenate([np.ones(len(bids), bool), np.zeros(len(asks), bool)]),
                "price": np.concatenate([bids[:, 0], asks[:, 0]]),
                "qty": np.concatenate([bids[:, 1], asks[:, 1]]),
            }
        )

    def _book_ticker(self, ends_u: list[np.ndarray], tops: list[np.ndarray]) -> None:
        if not self.book_tickers.height or not ends_u:
            return
        u = np.concatenate(ends_u)
        t = np.concatenate(tops) if tops else np.zeros((0, 4))
        if len(u) == 0:
            return
        rep = pl.DataFrame(
            {"u": u, "r_bid": t[:, 0], "r_bid_qty": t[:, 1], "r_ask": t[:, 2], "r_ask_qty": t[:, 3]}
        )
        j = rep.join(self.book_tickers, on="u", how="inner")
        self.bt_compared += j.height
        ok = (
            (j["r_bid"] == j["bid_price"])
            & (j["r_bid_qty"] == j["bid_qty"])
            & (j["r_ask"] == j["ask_price"])
            & (j["r_ask_qty"] == j["ask_qty"])
        )
        self.bt_matched += int(ok.sum())
        if len(self.bt_mismatches) < MAX_LISTED:
            self.bt_mismatches.extend(j.filter(~ok).head(MAX_LISTED - len(self.bt_mismatches)).to_dicts())

    # ---------------------------------------------------------------- outcomes
    def finish(self, report: MergeReport) -> list[CheckOutcome]:
        # snapshots equal to the very last id of the day are compared against the final book
        n_items = len(self.plan.kind)
        tail = self.pending_snaps.filter((pl.col("status") == "check") & (pl.col("item") >= n_items))
        for rec in tail.iter_rows(named=True):
            self._compare_one(rec, np.zeros(0, np.bool_), np.zeros(0))  # nothing touched after the last row
        out: list[CheckOutcome] = []
        out.append(self._gaps_check(report))
        n_dis = self.disagreements_total + self.partial_disagreements
        out.append(
            CheckOutcome.of(
                MERGED_CHECKS,
                "streams_agree",
                n_dis == 0,
                "events covering the same update ids carry the same levels in every stream"
                if n_dis == 0
                else f"{n_dis} id ranges where events disagree, e.g. ids "
                f"{self.disagreements[0]['first_id']}..{self.disagreements[0]['last_id']} in streams "
                f"{', '.join(self.disagreements[0]['streams'])}",
                {"disagreements": n_dis, "examples": self.disagreements},
            )
        )
        out.append(
            CheckOutcome.of(
                MERGED_CHECKS,
                "book_never_crossed",
                self.crossed_count == 0,
                f"best bid < best ask after all {self.tops_checked} events and images"
                if self.crossed_count == 0
                else f"book crossed after {self.crossed_count} events, first at ids {self.crossed[:5]}",
                {
                    "events_checked": self.tops_checked,
                    "crossed": self.crossed_count,
                    "crossed_ids": self.crossed,
                },
            )
        )
        bad_snaps = [r for r in self.snap_checks if r["differences"]]
        skipped = self.snap_skipped.height if hasattr(self, "snap_skipped") else 0
        out.append(
            CheckOutcome.of(
                MERGED_CHECKS,
                "agrees_with_rest_snapshots",
                not bad_snaps,
                f"replay equals all {len(self.snap_checks)} comparable REST snapshots "
                f"({skipped} not comparable: before the first image or in a gap)"
                if not bad_snaps
                else f"{len(bad_snaps)} of {len(self.snap_checks)} snapshots differ from the replay, "
                f"first at id {bad_snaps[0]['last_update_id']} ({bad_snaps[0]['stream']})",
                {
                    "compared": len(self.snap_checks),
                    "differing": len(bad_snaps),
                    "not_comparable": skipped,
                    "details": bad_snaps[:MAX_LISTED],
                },
            )
        )
        out.append(
            CheckOutcome.of(
                MERGED_CHECKS,
                "schema_and_sort_order",
                not self.schema_problems,
                "the merged schema's columns and types; rows sorted by last_update_id, images first"
                if not self.schema_problems
                else "; ".join(self.schema_problems[:3]),
                {"problems": self.schema_problems[:MAX_LISTED]},
            )
        )
        out.append(
            CheckOutcome.of(
                MERGED_CHECKS,
                "decimal_round_trip",
                (self.decimal_failures == 0 and self.price_decimals is not None) or report.rows == 0,
                f"every price/qty is the exact double of a decimal with "
                f"{self.price_decimals}/{self.qty_decimals} places"
                if self.decimal_failures == 0
                else f"{self.decimal_failures} values do not round-trip",
                {
                    "price_decimals": self.price_decimals,
                    "qty_decimals": self.qty_decimals,
                    "failures": self.decimal_failures,
                    "examples": self.decimal_examples[:MAX_LISTED],
                },
            )
        )
        out.append(self._coverage_check(report))
        if self.book_tickers.height:
            ok = self.bt_compared > 0 and self.bt_matched == self.bt_compared
            out.append(
                CheckOutcome.of(
                    MERGED_CHECKS,
                    "matches_book_ticker",
                    ok,
                    f"replayed top of book equals @bookTicker at {self.bt_matched} of {self.bt_compared} "
                    "matching u",
                    {
                        "compared": self.bt_compared,
                        "matched": self.bt_matched,
                        "mismatches": self.bt_mismatches,
                    },
                )
            )
        anchored = report.opening.get("kind") not in (None, "none")
        # not blocking: a day with events but no usable snapshot yet publishes its rows unanchored
        # (book_exact false); a later re-merge with a snapshot anchors it
        out.append(
            CheckOutcome.of(
                MERGED_CHECKS,
                "day_anchored",
                anchored or report.events_received == 0,
                f"the day opens with an image ({report.opening.get('source')})"
                if anchored
                else f"{report.unanchored_events} events, not anchored: no snapshot or carried state from "
                "which the day can be replayed (rows kept with book_exact false)",
                {"opening": report.opening, "unanchored_events": report.unanchored_events},
            )
        )
        return out

    def _gaps_check(self, report: MergeReport) -> CheckOutcome:
        offenders = []
        for g in report.gaps:
            for s in self.inputs:
                segs = [tuple(x) for x in s.report.get("segments", [])]
                n = intersect_length(segs, g.first_id - 1, g.last_id)
                if n:
                    offenders.append(
                        {
                            "gap_first_id": g.first_id,
                            "gap_last_id": g.last_id,
                            "stream": s.stream,
                            "ids_the_stream_had": n,
                        }
                    )
        return CheckOutcome.of(
            MERGED_CHECKS,
            "gaps_missed_by_every_stream",
            not offenders,
            f"all {len(report.gaps)} gaps are ids no stream received"
            if not offenders
            else f"{len(offenders)} gap/stream pairs where a stream had ids the merge lacks",
            {"gaps": [asdict(g) for g in report.gaps][:MAX_LISTED], "offenders": offenders[:MAX_LISTED]},
        )

    def _coverage_check(self, report: MergeReport) -> CheckOutcome:
        """Every id a stream received is in the output (an event row's own ids, exact or not), unless it is at
        or before a carried opening (the previous day's book holds it). Per-stream coverage figures are kept
        for the metadata, but passing needs nothing received to be missing."""
        plan = self.plan
        ev = plan.kind == 0
        out_ranges = union_ranges(plan.lo[ev], plan.update_id[ev])
        floor = int(plan.update_id[0]) if len(plan.kind) and plan.kind[0] == 2 else None  # KIND_CARRY
        missing: list[dict[str, Any]] = []
        total = 0
        for s in self.inputs:
            segs = [(int(a), int(b)) for a, b in s.report.get("segments", [])]
            if floor is not None:
                segs = [(max(a, floor), b) for a, b in segs if b > floor]
            for lo, hi in subtract_ranges(segs, out_ranges):
                total += hi - lo
                if len(missing) < MAX_LISTED:
                    missing.append({"stream": s.stream, "first_id": lo + 1, "last_id": hi})
        merged_ids = None
        if report.first_update_id is not None and report.last_update_id is not None:
            merged_ids = report.last_update_id - report.first_update_id - sum(g.length for g in report.gaps)
        worse = [
            s.stream
            for s in report.per_stream.values()
            if merged_ids is not None and s.covered_ids > merged_ids
        ]
        ok = total == 0 and not worse
        if ok:
            text = f"every id a stream received is in the output; merged coverage {report.coverage:.6f}"
        elif total:
            first = missing[0]
            text = (
                f"{total} ids received by a stream are missing from the output, e.g. {first['first_id']}.."
                f"{first['last_id']} of {first['stream']}"
            )
        else:
            text = f"streams {worse} cover more ids than the merge"
        return CheckOutcome.of(
            MERGED_CHECKS,
            "coverage_at_least_each_stream",
            ok,
            text,
            {
                "merged": report.coverage,
                "missing_ids": total,
                "missing": missing,
                **{f"coverage_{k}": v.coverage for k, v in report.per_stream.items()},
            },
        )


def stream_day_outcomes(
    reports: Mapping[str, SymbolDayReport], not_validated: Mapping[str, str]
) -> list[CheckOutcome]:
    """A validated stream-day's checks, summarised over its symbols (the ones that fail are named).

    ``reports`` are the symbol-days validated (by symbol), ``not_validated`` the symbols that could not be
    (with why)."""
    empty = sorted(s for s, r in reports.items() if not r.events)
    quarantined = sum(r.quarantined for r in reports.values())
    lines_total = sum(r.lines_read for r in reports.values())
    share = quarantined / lines_total if lines_total else 0.0
    return [
        CheckOutcome.of(
            VALIDATED_CHECKS,
            "raw_data_present",
            not empty and not not_validated and bool(reports),
            f"{len(reports) - len(empty)} of {len(reports) + len(not_validated)} symbols have events"
            + (f"; none for {', '.join(empty[:20])}" if empty else "")
            + (f"; not validated: {', '.join(sorted(not_validated)[:20])}" if not_validated else ""),
            {"symbols_without_events": empty, "symbols_not_validated": sorted(not_validated)},
        ),
        CheckOutcome.of(
            VALIDATED_CHECKS,
            "quarantine_small",
            share < 0.01,
            f"{quarantined} of {lines_total} lines quarantined",
            {"quarantined": quarantined, "share": share},
        ),
    ]


def _numpy(table: pa.Table, name: str) -> np.ndarray:
    """A column of a table as one numpy array (no copy for a single chunk of numbers without nulls)."""
    return table.column(name).to_numpy()
