"""Per-connection regrouping of the canonical sequence into events (different partials of one id chain).

Binance may send two connections different groupings of the same update-id sequence. The server
sends canonical groupings by default; a connection given a batching fault gets its own ``Batcher``,
which splits and merges the canonical events at id boundaries. The book at every id is unchanged
because every part carries the net effect of exactly the changes whose ids it covers.
"""

from __future__ import annotations

import random

from exchange_sim.generator import CanonicalEvent, Partial, partial_of

BATCHING_MODES = ("canonical", "split", "merge", "random")


class Batcher:
    """Groups one symbol's canonical events for one connection and one stream speed."""

    def __init__(self, mode: str, seed: int, max_parts: int = 3, max_hold: int = 3) -> None:
        if mode not in BATCHING_MODES or mode == "canonical":
            raise ValueError(f"batching mode must be one of split, merge, random; not {mode!r}")
        self.mode = mode
        self.rng = random.Random(seed)
        self.max_parts = max(2, max_parts)
        self.max_hold = max(1, max_hold)
        self._buffer: list[CanonicalEvent] = []
        self._held = 0

    def feed(self, ev: CanonicalEvent, group_end: bool) -> list[Partial]:
        """Take the next canonical event; return the parts to send now (maybe none)."""
        self._buffer.append(ev)
        if not group_end:
            return []
        rng = self.rng
        if self.mode == "merge":
            hold = self._held < self.max_hold - 1
        elif self.mode == "random":
            hold = self._held < self.max_hold - 1 and rng.random() < 0.3
        else:
            hold = False
        if hold:
            self._held += 1
            return []
        split = self.mode == "split" or (self.mode == "random" and rng.random() < 0.5)
        parts = self._cut(rng.randint(2, self.max_parts) if split else 1)
        self._buffer = []
        self._held = 0
        return parts

    def _cut(self, n_parts: int) -> list[Partial]:
        ids = sorted({uid for ev in self._buffer for uid in ev.ids})
        n_parts = min(n_parts, len(ids))
        if n_parts <= 1:
            return [partial_of(self._buffer)]
        cut_positions = sorted(self.rng.sample(range(1, len(ids)), n_parts - 1))
        bounds = [0, *cut_positions, len(ids)]
        return [partial_of(self._buffer, ids[bounds[i]], ids[bounds[i + 1] - 1]) for i in range(n_parts)]
