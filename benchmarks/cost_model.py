"""Store requests per stream-day and dollars a month at S3 list prices, before and after the universe work.

``python -m benchmarks.cost_model [--bench artifacts/bench-universe.json]`` prints the markdown tables of
docs/cost.md. Where each figure comes from is in the row's ``source``:

- **measured**: counted by ``depth_store.counting.CountingStore`` in ``benchmarks/bench_universe.py`` (sensor
  ticks and the day's cleanup on moto with a synthetic v2 day); the per-tick counts of the new sensors do not
  depend on the number of symbols (the benchmark checks it at 50 and 400);
- **code**: computed from the code (the old sensors and cleanup at commit 8c48771, the nightly pipeline's
  writes per symbol-day), with the formula in the function below.

Prices (S3 Standard, us-east-1 list prices): PUT/COPY/POST/LIST $0.005 per 1,000; GET/HEAD $0.0004 per
1,000; DELETE free. ``DeleteObjects`` is a POST: priced as one here (a conservative reading).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

PRICE = {
    "PUT": 0.005 / 1000,
    "LIST": 0.005 / 1000,
    "POST": 0.005 / 1000,
    "GET": 0.0004 / 1000,
    "HEAD": 0.0004 / 1000,
    "DELETE": 0.0,
}
DAYS_PER_MONTH = 30
STREAMS = 2
FLUSH_SECONDS = 10.0  # the collector's default --flush-seconds
OBJECTS_PER_STREAM_DAY = int(86400 / FLUSH_SECONDS)  # 8,640
TICK_FAST = 30  # DEPTH_SENSOR_INTERVAL_SECONDS: raw arrival and gap sensors
TICK_LATE = 300  # DEPTH_LATE_SENSOR_INTERVAL_SECONDS
TICK_RECONCILE = 300
LATE_LOOKBACK_DAYS = 7
# the nightly pipeline's own writes and reads per symbol-day (validated files per stream, merged version,
# manifest, end state, quality report) and per stream-day, from the code (approximate: a dozen either way
# does not move the totals)
VALIDATED_FILES_PER_STREAM = 8
MERGE_PUTS = 8  # staged part, published copy, manifest, 2 end state files, quality png+md, carry copy
MERGE_GETS = 20  # validated files of both streams, previous manifest and state


@dataclass
class Day:
    """Requests of one day by kind, per component."""

    parts: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, component: str, kind: str, n: float) -> None:
        self.parts.setdefault(component, {}).setdefault(kind, 0.0)
        self.parts[component][kind] += n

    def dollars_month(self, component: str | None = None) -> float:
        comps = [component] if component else list(self.parts)
        return sum(n * PRICE[k] for c in comps for k, n in self.parts.get(c, {}).items()) * DAYS_PER_MONTH

    def requests(self, component: str | None = None) -> float:
        comps = [component] if component else list(self.parts)
        return sum(n for c in comps for n in self.parts.get(c, {}).values())


def _pages(keys: float) -> float:
    return max(1.0, math.ceil(keys / 1000))


def _mean_pages_growing(total: int) -> float:
    """Average LIST pages of a folder that fills linearly from 0 to ``total`` keys over the day."""
    steps = 288
    return sum(_pages(total * (i + 0.5) / steps) for i in range(steps)) / steps


def before(symbols: int) -> Day:
    """The old layout (one object per symbol per flush) with the old sensors and cleanup, from the code.

    - collector: one PUT per symbol per stream per flush;
    - raw arrival and gap sensors, every 30 s: for every stream x symbol they list yesterday's and today's
      folders in full (the cursor filters on the client): today's folder fills over the day; yesterday's
      holds a full day until the cleanup deleted it (assumed at 01:00 at every size — a lower bound: at 400
      symbols the old cleanup needs ~65 h, so yesterday's folders stay listed all day and the sensors'
      LISTs nearly double); the gap sensor also GETs up to 200 new objects a tick;
    - late-data sensor, every 300 s: lists 8 date folders per stream x symbol (7 days back + today; emptied
      days cost one LIST each), HEADs the manifests of the dates with objects (today, yesterday, and the day
      before for objects near midnight);
    - cleanup, per symbol-day: the gate's manifest HEAD + GET, a LIST of each stream's folder, one HEAD and
      one DELETE per object;
    - nightly: validation lists and GETs every object of the symbol-day, writes its files; the merge.
    """
    d = Day()
    per_symbol_stream = OBJECTS_PER_STREAM_DAY
    d.add("collector", "PUT", symbols * STREAMS * per_symbol_stream)
    ticks = 86400 / TICK_FAST
    today = _mean_pages_growing(per_symbol_stream)
    yesterday = _pages(per_symbol_stream) * 1 / 24 + 1 * 23 / 24  # full until 01:00, then one empty LIST
    listing = symbols * STREAMS * (today + yesterday)
    d.add("sensors", "LIST", 2 * ticks * listing)  # arrival + gap
    new_per_tick = symbols * STREAMS * TICK_FAST / FLUSH_SECONDS
    d.add("sensors", "GET", ticks * min(200, new_per_tick))
    late_ticks = 86400 / TICK_LATE
    late_list = symbols * STREAMS * (today + yesterday + (LATE_LOOKBACK_DAYS - 1))
    d.add("sensors", "LIST", late_ticks * late_list)
    d.add("sensors", "HEAD", late_ticks * symbols * 3)
    d.add("cleanup", "HEAD", symbols * (1 + STREAMS * per_symbol_stream))
    d.add("cleanup", "GET", symbols)
    d.add("cleanup", "LIST", symbols * STREAMS * _pages(per_symbol_stream))
    d.add("cleanup", "DELETE", symbols * STREAMS * per_symbol_stream)
    d.add("nightly", "LIST", symbols * STREAMS * _pages(per_symbol_stream))
    d.add("nightly", "GET", symbols * (STREAMS * per_symbol_stream + MERGE_GETS))
    d.add("nightly", "PUT", symbols * (STREAMS * VALIDATED_FILES_PER_STREAM + MERGE_PUTS))
    return d


def after(symbols: int, bench: dict[str, object] | None) -> Day:
    """The v2 layout (one object per stream per flush) with the StartAfter sensors and the batched cleanup.

    Sensor ticks and the cleanup's raw requests are the benchmark's counts (``bench``), else the counts the
    tests assert (2 LIST per stream and tick for arrival, gap and late; the gap sensor GETs each new object).
    """
    d = Day()
    b = bench or {}
    objects = OBJECTS_PER_STREAM_DAY
    d.add("collector", "PUT", STREAMS * objects)

    def tick(name: str, kind: str, default: float) -> float:
        value = b.get(name)
        if isinstance(value, dict):
            return float(value.get("requests", {}).get(kind, 0))
        return default

    ticks = 86400 / TICK_FAST
    d.add("sensors", "LIST", ticks * tick("arrival_steady_tick", "LIST", 2 * STREAMS))
    d.add("sensors", "LIST", ticks * tick("gap_steady_tick", "LIST", 2 * STREAMS))
    # every new object is read once for its notes (the benchmark adds one per stream per tick; at a 10 s
    # flush three arrive per 30 s tick)
    d.add("sensors", "GET", STREAMS * objects)
    d.add("sensors", "LIST", 86400 / TICK_LATE * tick("late_steady_tick", "LIST", 2 * STREAMS))
    # reconcile: its sweep lists up to 4 pages per stream every 5 minutes (passes over what is retained
    # follow each other), and looks at yesterday's window until it is cleaned
    retained = objects / 2 + objects / 12
    d.add("sensors", "LIST", 86400 / TICK_RECONCILE * STREAMS * min(4.0, _pages(retained) + 1))
    d.add("sensors", "LIST", 6 * 3 * STREAMS)
    d.add("sensors", "GET", 6 * STREAMS)
    # cleanup of a date: per symbol-day the gate's manifest HEAD + GET; per stream one LIST page per 1,000
    # keys of the date's folders (and the edge folders), the stream-day reports, DeleteObjects per 1,000 keys
    d.add("cleanup", "HEAD", symbols)
    d.add("cleanup", "GET", symbols + 2 * STREAMS)
    d.add("cleanup", "LIST", STREAMS * (_pages(objects) + 2))
    d.add("cleanup", "POST", STREAMS * _pages(objects))
    d.add("nightly", "LIST", STREAMS * (_pages(objects) + 2))
    d.add("nightly", "GET", STREAMS * (objects + 2 * 360) + symbols * MERGE_GETS)
    d.add("nightly", "PUT", symbols * (STREAMS * VALIDATED_FILES_PER_STREAM + MERGE_PUTS) + STREAMS)
    return d


def render(bench: dict[str, object] | None) -> str:
    lines = [
        "| symbols | layout, code | collector | sensors | cleanup | nightly validate+merge "
        "| requests/stream-day | $/month |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in (1, 50, 400):
        for name, day in (
            ("before: v1, old sensors + cleanup", before(n)),
            ("after: v2, StartAfter + batches", after(n, bench)),
        ):
            cells = [
                f"${day.dollars_month(c):,.2f} ({day.requests(c) / STREAMS:,.0f})"
                for c in ("collector", "sensors", "cleanup", "nightly")
            ]
            lines.append(
                f"| {n} | {name} | " + " | ".join(cells) + f" | {day.requests() / STREAMS:,.0f} | "
                f"**${day.dollars_month():,.2f}** |"
            )
    lines += ["", "Cells: dollars a month (requests per stream-day in brackets)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", type=Path, default=Path("artifacts/bench-universe.json"))
    args = ap.parse_args()
    bench = json.loads(args.bench.read_text()) if args.bench.exists() else None
    print(render(bench))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
