"""Sensors: raw arrival, stream gap alerts, late data re-merges, cleanup after a merge, and reconcile.

Every store-watching sensor finds new raw objects through :mod:`depth_pipeline.raw_scan`: per stream one
``StartAfter`` listing of the newest keys plus a bounded slice of a slow sweep, so a tick costs O(streams)
requests whatever the number of symbols or retained days. Each tick has a time budget
(``TICK_BUDGET_SECONDS``, well under Dagster's 60 s sensor timeout): when it runs out the sensor stops, saves
its cursor with the progress made, and the next tick goes on from there. See docs/orchestration.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from depth_core.days import DAY_MS, DAY_S, date_of_day_index, next_day, previous_day
from depth_core.layout import merged_manifest_key
from depth_core.names import Market
from depth_core.raw_format import STREAM_WIDE, RawObjectKey, decompress, stream_date_prefix, stream_day_prefix
from depth_pipeline.cleanup import parse_manifest_objects, stream_day_report_key, symbols_merged_on
from depth_pipeline.config import PipelineConfig
from depth_pipeline.jobs import cleanup_run_request, day_run_request
from depth_pipeline.keys import (
    META_BLOCKING_PASSED,
    META_NO_RAW_DATA,
    TAG_KIND,
    TAG_LATE_OBJECTS,
    raw_key,
)
from depth_pipeline.notify import Alert, Notifier, build_notifier
from depth_pipeline.outcomes import merged_materializations, recorded_outcomes
from depth_pipeline.partitions import date_of
from depth_pipeline.raw_scan import Deadline, NewObject, StreamScan, rewind, scan_stream
from depth_pipeline.resources import DepthSettingsResource, DepthStoreResource
from depth_store import ObjectInfo, ObjectNotFoundError, ObjectStore, open_store

GAP_EVENTS = frozenset({"gap", "disconnect"})
TICK_BUDGET_SECONDS = 20.0
"""Work per tick before the sensor stops and saves its progress (Dagster cancels a tick at 60 s)."""
LATE_BOUNDARY_SECONDS = 120  # an object received this soon after midnight may hold the previous day's events
BACKOFF_BASE_SECONDS = 600.0
BACKOFF_CAP_SECONDS = 6 * 3600.0
RECONCILE_MAX_ATTEMPTS = 8
"""Requests of one date for one reason before the reconcile sensor only alerts (a loud stop, not a loop)."""
RECONCILE_INTERVAL_SECONDS = 300
RECONCILE_GRACE_SECONDS = 3600.0
"""After the nightly schedule time, how long a completed day may stay unmerged before reconcile asks."""
RECONCILE_SWEEP_KEYS = 4_000
"""Keys the reconcile sweep lists per stream and tick (4 pages): a pass over a retained day and a half at a
10 s flush takes 4 ticks (20 minutes)."""
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _today(now: float | None = None) -> dt.date:
    return dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC).date()


def _midnight(date: str | dt.date) -> float:
    day = dt.date.fromisoformat(date) if isinstance(date, str) else date
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def _load_cursor(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def backoff_seconds(attempts: int) -> float:
    """Wait after the ``attempts``-th request of the same thing: 10 min, 20 min, ... capped at 6 h."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))


def scan_streams(
    store: ObjectStore,
    market: Market,
    streams: Iterable[str],
    cursor: dict[str, Any],
    *,
    now: float,
    initial_lookback_seconds: float,
    deadline: Deadline,
    **kwargs: Any,
) -> tuple[dict[str, list[NewObject]], dict[str, StreamScan]]:
    """New objects per stream and the scan states to save (``cursor["streams"]`` holds them)."""
    saved = cursor.get("streams", {}) if isinstance(cursor.get("streams"), dict) else {}
    found: dict[str, list[NewObject]] = {}
    states: dict[str, StreamScan] = {}
    for stream in streams:
        new, state = scan_stream(
            store,
            market,
            stream,
            StreamScan.from_json(saved.get(stream)),
            now=now,
            initial_lookback_seconds=initial_lookback_seconds,
            deadline=deadline,
            **kwargs,
        )
        found[stream], states[stream] = new, state
    return found, states


def _dump(states: dict[str, StreamScan], **extra: Any) -> str:
    return json.dumps({"streams": {s: st.to_json() for s, st in states.items()}, **extra}, sort_keys=True)


def _since_start_of_yesterday(now: float) -> float:
    return now - _midnight(_today(now) - dt.timedelta(days=1))


# --------------------------------------------------------------------------------------------------- arrival


def build_raw_arrival_sensor(config: PipelineConfig) -> dg.SensorDefinition:
    """Records raw objects as they land: one run-less materialization of ``raw/<stream>`` per date."""

    @dg.sensor(
        name="raw_arrival_sensor",
        minimum_interval_seconds=config.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records newly landed raw objects as run-less materializations of raw/<stream>, one per "
        "date partition and tick (object count, bytes, newest object and its receive time).",
    )
    def raw_arrival_sensor(
        context: dg.SensorEvaluationContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.SensorResult:
        now = time.time()
        found, states = scan_streams(
            store.open(),
            settings.market_name,
            settings.streams,
            _load_cursor(context.cursor),
            now=now,
            initial_lookback_seconds=_since_start_of_yesterday(now),
            deadline=Deadline(TICK_BUDGET_SECONDS),
        )
        events = arrival_events(found, _today(now).isoformat(), config.start_date)
        return dg.SensorResult(
            asset_events=events,
            cursor=_dump(states),
            skip_reason=None if events else "no new raw objects",
        )

    return raw_arrival_sensor


def arrival_events(
    found: dict[str, list[NewObject]], today: str, first_date: str | None = None
) -> list[dg.AssetMaterialization]:
    """One materialization per stream and date folder of the new objects (dates after today — a collector
    clock running ahead — and before ``DEPTH_START_DATE`` are skipped: no such partition exists)."""
    events: list[dg.AssetMaterialization] = []
    for stream, objects in found.items():
        by_date: dict[str, list[NewObject]] = defaultdict(list)
        for obj in objects:
            by_date[obj.key.date].append(obj)
        for date, objs in sorted(by_date.items()):
            if date > today or (first_date is not None and date < first_date):
                continue
            newest = max(objs, key=lambda o: o.info.key)
            v1_symbols = sorted({o.key.symbol for o in objs if o.key.symbol})
            metadata: dict[str, Any] = {
                "objects": len(objs),
                "bytes": sum(o.info.size for o in objs),
                "newest_object": newest.info.key,
                "newest_first_receive": dg.MetadataValue.timestamp(newest.key.first_receive_ns / 1e9),
                "newest_uploaded": dg.MetadataValue.timestamp(newest.info.last_modified),
                "found_late_by_sweep": sum(o.found_by == "sweep" for o in objs),
            }
            if v1_symbols:
                metadata["layout1_symbols"] = ",".join(v1_symbols)
            events.append(
                dg.AssetMaterialization(
                    asset_key=raw_key(stream),
                    partition=date,
                    description=f"{len(objs)} raw objects landed from {stream}",
                    metadata=metadata,
                )
            )
    return events


# ------------------------------------------------------------------------------------------------------- gap


def gap_notes(data: bytes) -> list[tuple[int, str | None, dict[str, Any]]]:
    """Collector notes (``M`` lines) reporting a gap or a disconnect: (receive_ns, symbol, note).

    Searches the decompressed text for `` M `` instead of decoding every line (a layout-2 object of 400
    symbols holds ~10^5 lines and a handful of notes). ``symbol`` is the line's symbol field (layout 2; None
    for a stream-wide ``-`` note or a layout-1 line, whose object names the symbol).
    """
    text, _problem = decompress(data)
    out: list[tuple[int, str | None, dict[str, Any]]] = []
    pos = 0
    while True:
        hit = text.find(b" M ", pos)
        if hit < 0:
            return out
        start = text.rfind(b"\n", 0, hit) + 1
        end = text.find(b"\n", hit)
        end = len(text) if end < 0 else end
        pos = end
        ns_text = text[start:hit]
        if not ns_text.isdigit():
            continue  # " M " inside another line's text
        rest = text[hit + 3 : end]
        symbol: str | None = None
        if not rest.startswith(b"{"):  # layout 2: "<SYMBOL> <text>"
            sym, _, rest = rest.partition(b" ")
            symbol = None if sym.decode(errors="replace") == STREAM_WIDE else sym.decode(errors="replace")
        try:
            note = json.loads(rest)
        except ValueError:
            continue
        if isinstance(note, dict) and note.get("event") in GAP_EVENTS:
            out.append((int(ns_text), symbol, note))


@dataclass
class GapTick:
    alerts: list[Alert]
    silence: dict[str, float]
    cursor: str


def evaluate_stream_gaps(
    store: ObjectStore,
    market: Market,
    streams: list[str],
    silence_seconds: float,
    cursor: dict[str, Any],
    now: float | None = None,
    budget_seconds: float = TICK_BUDGET_SECONDS,
) -> GapTick:
    """Alerts for silent streams, pauses between a stream's objects and collector gap notes in new objects.

    A stream is silent when its newest raw object began more than ``silence_seconds`` ago (receive time in
    the object's name): one alert per silence episode, ``recovered`` when it delivers again. Every new
    object is read for ``gap``/``disconnect`` notes; objects not read before the time budget ran out are
    handed back to the scan and read first next tick.
    """
    now = time.time() if now is None else now
    deadline = Deadline(budget_seconds)
    newest: dict[str, int] = {k: int(v) for k, v in dict(cursor.get("newest", {})).items()}
    silent: dict[str, float] = dict(cursor.get("silent", {}))
    previous_newest = dict(newest)
    found, states = scan_streams(
        store,
        market,
        streams,
        cursor,
        now=now,
        initial_lookback_seconds=3 * silence_seconds,
        deadline=deadline,
    )
    alerts: list[Alert] = []
    silence_by_stream: dict[str, float] = {}
    for stream in streams:
        objects = sorted(found[stream], key=lambda o: o.info.key)
        last_ns = previous_newest.get(stream)
        for i, obj in enumerate(objects):
            ns = obj.key.first_receive_ns
            if obj.key.layout == 2 and obj.found_by != "sweep":
                if last_ns is not None and (ns - last_ns) / 1e9 > silence_seconds:
                    pause = (ns - last_ns) / 1e9
                    alerts.append(
                        Alert(
                            "gap",
                            stream,
                            f"no raw object for {pause:.0f} s before {obj.info.key}",
                            silent_seconds=pause,
                        )
                    )
                last_ns = ns if last_ns is None else max(last_ns, ns)
            if deadline.passed():
                rewind(states[stream], objects[i:])
                break
            for note_ns, symbol, note in gap_notes(store.get_bytes(obj.info.key)):
                who = symbol or obj.key.symbol
                when = dt.datetime.fromtimestamp(note_ns / 1e9, tz=dt.UTC).isoformat()
                text = f"{note.get('event')} at {when}: {json.dumps(note, sort_keys=True)[:200]}"
                alerts.append(
                    Alert("gap", stream, f"{who + ': ' if who else ''}collector reported {text}", symbol=who)
                )
            newest[stream] = max(newest.get(stream, 0), ns)
        silence = now - newest[stream] / 1e9 if newest.get(stream) else float("inf")
        silence_by_stream[stream] = silence
        if silence > silence_seconds:
            if stream not in silent:
                what = (
                    f"silent for {silence:.0f} s"
                    if newest.get(stream)
                    else "has delivered no raw object lately"
                )
                alerts.append(
                    Alert(
                        "silent",
                        stream,
                        f"{what} (threshold {silence_seconds:.0f} s)",
                        silent_seconds=None if not newest.get(stream) else silence,
                    )
                )
                silent[stream] = now
        elif stream in silent:
            alerts.append(Alert("recovered", stream, f"delivering again (newest object {silence:.0f} s old)"))
            del silent[stream]
    return GapTick(alerts, silence_by_stream, _dump(states, newest=newest, silent=silent))


def build_gap_sensor(config: PipelineConfig, notifier: Notifier | None = None) -> dg.SensorDefinition:
    """Alerts when a stream goes silent past the threshold or its new raw objects show a gap.

    Worst case from a collector's last object to the alert: threshold + sensor interval (60 s + 30 s by
    default, within the 2 minutes the issue asks for).
    """
    sink = notifier or build_notifier(config.alert_webhook_url)

    @dg.sensor(
        name="stream_gap_sensor",
        minimum_interval_seconds=config.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Alerts when a collector stream is silent for more than {config.silence_seconds:.0f} s "
        "or its new raw objects show a gap (log, webhook at DEPTH_ALERT_WEBHOOK_URL, and an observation on "
        "raw/<stream>).",
    )
    def stream_gap_sensor(
        context: dg.SensorEvaluationContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.SensorResult:
        tick = evaluate_stream_gaps(
            store.open(),
            settings.market_name,
            settings.streams,
            config.silence_seconds,
            _load_cursor(context.cursor),
        )
        today = _today().isoformat()
        observations: list[dg.AssetObservation] = []
        for alert in tick.alerts:
            sink.send(alert)
            context.log.warning(f"[{alert.kind}] {alert.stream}: {alert.message}")
            observations.append(
                dg.AssetObservation(
                    asset_key=raw_key(alert.stream),
                    partition=today,
                    description=f"[{alert.kind}] {alert.message}",
                    metadata={"alert": alert.kind, "message": alert.message, "symbol": alert.symbol or ""},
                )
            )
        status = ", ".join(
            f"{s}: newest object {v:.0f} s old" if v != float("inf") else f"{s}: no object"
            for s, v in tick.silence.items()
        )
        text = (
            ("ALERT " + "; ".join(f"[{a.kind}] {a.stream}: {a.message}" for a in tick.alerts))
            if tick.alerts
            else status
        )
        return dg.SensorResult(asset_events=observations, cursor=tick.cursor, skip_reason=text)

    return stream_gap_sensor


# ------------------------------------------------------------------------------------------------ late data


# Manifests are immutable per etag: the code server keeps the parsed key sets between sensor ticks.
_MANIFEST_CACHE: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()
_MANIFEST_CACHE_SIZE = 4096


def published_manifest(store: ObjectStore, market: Market, symbol: str, date: str) -> dict[str, Any] | None:
    """The symbol-day's published coverage manifest (parsed; cached per etag), or None."""
    key = merged_manifest_key(market, symbol, date)
    info = store.head(key)
    if info is None:
        return None
    cache_key = (store.url, key, info.etag or f"{info.size}:{info.last_modified.isoformat()}")
    cached = _MANIFEST_CACHE.get(cache_key)
    if cached is not None:
        _MANIFEST_CACHE.move_to_end(cache_key)
        return cached
    try:
        manifest = json.loads(store.get_bytes(key))
        manifest["_keys"] = sorted({o.key for o in parse_manifest_objects(manifest)})
    except (ValueError, KeyError, TypeError):
        manifest = {"_keys": []}
    _MANIFEST_CACHE[cache_key] = manifest
    while len(_MANIFEST_CACHE) > _MANIFEST_CACHE_SIZE:
        _MANIFEST_CACHE.popitem(last=False)
    return manifest


_EVENT_TIME_RE = re.compile(rb'"E":(\d+)')


def object_holdings(store: ObjectStore, obj: ObjectInfo, key: RawObjectKey) -> dict[str, set[str]]:
    """{symbol: event dates} of a raw object: the UTC date of each depth event's ``E``, and of the receive
    time for snapshots and book tickers (layout 2: each line's symbol field; layout 1: the key's symbol).
    Read only for the rare objects that may belong to a day already merged."""
    text, _problem = decompress(store.get_bytes(obj.key))
    out: dict[str, set[str]] = defaultdict(set)
    day_names: dict[int, str] = {}

    def day(ms: int) -> str:
        index = ms // DAY_MS
        if index not in day_names:
            day_names[index] = date_of_day_index(index)
        return day_names[index]

    for line in text.split(b"\n"):
        if key.layout == 2:
            parts = line.split(b" ", 3)
            if len(parts) != 4 or parts[2] == STREAM_WIDE.encode():
                continue
            ns_text, kind, symbol_text, body = parts
            symbol = symbol_text.decode(errors="replace")
        else:
            parts = line.split(b" ", 2)
            if len(parts) != 3:
                continue
            ns_text, kind, body = parts
            symbol = key.symbol or ""
        if kind == b"D":
            match = _EVENT_TIME_RE.search(body)
            if match:
                out[symbol].add(day(int(match.group(1))))
                continue
        if kind in (b"D", b"S", b"B") and ns_text.isdigit():
            out[symbol].add(day(int(ns_text) // 1_000_000))
    return out


def may_hold_completed_day(key: RawObjectKey, today: str) -> bool:
    """Whether an object may hold events of a completed day: filed before today, or received within
    ``LATE_BOUNDARY_SECONDS`` after midnight (its first events may be of the day before)."""
    return key.date < today or key.first_receive_ns / 1e9 - _midnight(key.date) < LATE_BOUNDARY_SECONDS


def late_for_merged_days(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    market: Market,
    objects: Iterable[NewObject],
    today: str,
    wanted: tuple[str, ...] = (),
    oldest: str = "",
) -> dict[str, dict[str, set[str]]]:
    """{date: {symbol: {keys}}} of new objects holding events of a completed, already merged day whose
    published manifest for that symbol does not list them.

    The object's own lines say which (symbol, event date) pairs it holds, so an object spanning midnight
    makes both dates late. A date counts as merged when some recorded merge names a symbol of it; a symbol
    without a manifest on a merged date is late too (the day was merged without it). Dates never merged
    are left to the nightly run and the reconcile sensor; ``wanted`` is the ``DEPTH_SYMBOLS`` filter; dates
    before ``oldest`` (``DEPTH_LATE_LOOKBACK_DAYS`` back) are the reconcile sensor's too.
    """
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    merged: dict[str, bool] = {}

    def is_merged(date: str) -> bool:
        if date not in merged:
            merged[date] = oldest <= date < today and bool(symbols_merged_on(instance, date))
        return merged[date]

    for obj in objects:
        if not may_hold_completed_day(obj.key, today):
            continue
        # events lie within seconds of their receive time: only a merged neighbour date makes it worth a read
        if not any(is_merged(d) for d in (previous_day(obj.key.date), obj.key.date, next_day(obj.key.date))):
            continue
        for symbol, dates in sorted(object_holdings(store, obj.info, obj.key).items()):
            if wanted and symbol not in wanted:
                continue
            for date in sorted(dates):
                if not is_merged(date):
                    continue
                manifest = published_manifest(store, market, symbol, date)
                if manifest is None or obj.info.key not in manifest["_keys"]:
                    out[date][symbol].add(obj.info.key)
    return {d: dict(v) for d, v in out.items()}


def active_run_of_date(instance: dg.DagsterInstance, date: str) -> dg.DagsterRun | None:
    """A queued or running run of the date (any job): a new request would only wait behind it."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/partition": date}, statuses=ACTIVE_STATUSES), limit=1
    )
    return runs[0] if runs else None


def still_late(
    store: ObjectStore, market: Market, date: str, per_symbol: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The pending late keys that the day's published manifests still do not list."""
    out: dict[str, list[str]] = {}
    for symbol, keys in per_symbol.items():
        manifest = published_manifest(store, market, symbol, date)
        listed = set(manifest["_keys"]) if manifest else set()
        missing = [k for k in keys if k not in listed and store.head(k) is not None]
        if missing:
            out[symbol] = missing
    return out


def evaluate_late_data(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    market: Market,
    streams: list[str],
    cursor: dict[str, Any],
    *,
    settle_seconds: float = 0.0,
    wanted: tuple[str, ...] = (),
    now: float | None = None,
    lookback_days: int = 7,
) -> tuple[list[dg.RunRequest], str, list[str]]:
    """(run requests, cursor, log lines) of one late-data tick.

    Late objects are collected per date in ``pending`` (kept in the cursor). A date is requested when no run
    of it is queued or running and its backoff has ended (``settle_seconds`` > 0 also waits that long after
    the last new late object of the date); after a request the date stays pending until its manifests list
    every late key, and is requested again with exponential backoff (10 min, 20 min, ... 6 h) if the
    re-merge did not take them (failed, or refused). A draining spool thus yields a re-merge now and one
    per backoff step, never one per tick.
    """
    now = time.time() if now is None else now
    today = _today(now).isoformat()
    found, states = scan_streams(
        store,
        market,
        streams,
        cursor,
        now=now,
        initial_lookback_seconds=_since_start_of_yesterday(now),
        deadline=Deadline(TICK_BUDGET_SECONDS),
    )
    pending: dict[str, dict[str, Any]] = dict(cursor.get("pending", {}))
    logs: list[str] = []
    oldest = (_today(now) - dt.timedelta(days=lookback_days)).isoformat()
    late = late_for_merged_days(
        instance, store, market, [o for objs in found.values() for o in objs], today, wanted, oldest
    )
    for date, per_symbol in late.items():
        entry = pending.setdefault(date, {"symbols": {}, "attempts": 0, "next": 0.0})
        for symbol, keys in per_symbol.items():
            entry["symbols"][symbol] = sorted(set(entry["symbols"].get(symbol, [])) | keys)
        entry["changed"] = now
        logs.append(
            f"{sum(len(k) for k in per_symbol.values())} (symbol, object) pairs arrived after the merge of "
            f"{date} ({', '.join(sorted(per_symbol)[:10])}{' ...' if len(per_symbol) > 10 else ''})"
        )
    requests: list[dg.RunRequest] = []
    for date in sorted(pending):
        entry = pending[date]
        if now - float(entry.get("changed", 0)) < settle_seconds or now < float(entry.get("next", 0)):
            continue
        if active_run_of_date(instance, date) is not None:
            continue
        remaining = still_late(store, market, date, entry["symbols"])
        if not remaining:
            logs.append(f"late objects of {date} are merged now")
            del pending[date]
            continue
        entry["symbols"] = remaining
        entry["attempts"] = int(entry.get("attempts", 0)) + 1
        entry["next"] = now + backoff_seconds(entry["attempts"])
        late_keys = sorted({k for ks in remaining.values() for k in ks})
        digest = hashlib.sha256("\n".join(late_keys).encode()).hexdigest()[:12]
        requests.append(
            day_run_request(
                date,
                sorted(remaining),
                reason="remerge",
                run_key=f"late:{date}:{digest}:{entry['attempts']}",
                tags={TAG_LATE_OBJECTS: str(len(late_keys))},
            )
        )
        logs.append(
            f"re-merge of {date} for {len(remaining)} symbols ({len(late_keys)} late objects), attempt "
            f"{entry['attempts']}, next retry not before "
            f"{dt.datetime.fromtimestamp(entry['next'], tz=dt.UTC).isoformat(timespec='seconds')}"
        )
    return requests, _dump(states, pending=pending), logs


def build_late_data_sensor(config: PipelineConfig, job: UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    """Requests a re-merge of a merged date (its affected symbols) when raw objects land after its merge."""

    @dg.sensor(
        name="late_data_sensor",
        job=job,
        minimum_interval_seconds=config.late_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-merges the affected symbols of a merged date when raw objects land after its merge "
        "(once the arrivals settle, with backoff); cleanup keeps them until a merge lists them.",
    )
    def late_data_sensor(
        context: dg.SensorEvaluationContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.SensorResult:
        requests, cursor, logs = evaluate_late_data(
            context.instance,
            store.open(),
            settings.market_name,
            settings.streams,
            _load_cursor(context.cursor),
            wanted=tuple(settings.symbols),
            lookback_days=config.late_lookback_days,
        )
        for line in logs:
            context.log.info(line)
        return dg.SensorResult(
            run_requests=requests,
            cursor=cursor,
            skip_reason=None if requests else "no re-merge due" + (f": {logs[-1]}" if logs else ""),
        )

    return late_data_sensor


# -------------------------------------------------------------------------------------------------- cleanup


def merged_partitions_of_run(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, list[str]]]:
    """(date, symbols) of each ``merged_depth`` day a run materialized, with the symbols whose merge passed
    every blocking check (a day with none is left out)."""
    out: list[tuple[str, list[str]]] = []
    for materialization in merged_materializations(instance, run_id):
        if not materialization.partition:
            continue
        entries = recorded_outcomes(materialization)
        passed = sorted(s for s, e in entries.items() if e["ok"] and e[META_BLOCKING_PASSED])
        if passed:
            out.append((date_of(materialization.partition), passed))
    return out


def stale_next_day(
    store: ObjectStore, market: Market, date: str, symbols: Iterable[str], today: str
) -> list[str]:
    """Symbols whose next day (before today, already published) did not open from ``date``'s current end.

    After a re-merge of ``date``, its next day opened from a carried book must be re-merged when the carry
    it used is not the end ``date`` has now (manifest ``opening`` vs ``last_update_id``); a next day that
    opened from a snapshot is re-merged too (the new end may now chain into it). A next day that was never
    published is the nightly run's and the reconcile sensor's.
    """
    following = next_day(date)
    if following >= today:
        return []
    out: list[str] = []
    for symbol in symbols:
        nxt = published_manifest(store, market, symbol, following)
        if nxt is None:
            continue
        cur = published_manifest(store, market, symbol, date)
        opening = nxt.get("opening") or {}
        if cur is None:
            continue
        if opening.get("kind") == "carry" and opening.get("update_id") == cur.get("last_update_id"):
            continue
        out.append(symbol)
    return out


def build_cleanup_sensor(
    cleanup_job: dg.JobDefinition,
    daily_job: UnresolvedAssetJobDefinition | None = None,
    config: PipelineConfig | None = None,
) -> dg.SensorDefinition:
    """After any successful run that materialized ``merged_depth``: the gated cleanup of those symbols, and
    (given the daily job and the config) a re-merge of the next day's symbols whose opening book no longer
    matches the re-merged day's end (:func:`stale_next_day`).

    ``monitored_jobs`` is left out on purpose: asset-graph runs, backfills and automation all run as
    ``__ASSET_JOB`` and would be missed; what the run materialized decides. Runs executed in-process by
    ``depth-pipeline run`` carry no code-location origin, hence ``monitor_all_code_locations``.
    """
    jobs: list[Any] = [cleanup_job] + ([daily_job] if daily_job is not None else [])
    retention_days = config.retention_days if config is not None else 0.0

    @dg.run_status_sensor(
        name="cleanup_after_merge_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        request_jobs=jobs,
        monitor_all_code_locations=True,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts the gated cleanup of the symbols a successful run merged with their blocking "
        "checks passed, and re-merges the next day where the book it carried in changed.",
    )
    def cleanup_after_merge_sensor(context: dg.RunStatusSensorContext) -> list[dg.RunRequest]:
        run_id = context.dagster_run.run_id
        requests: list[dg.RunRequest] = []
        today = _today().isoformat()
        store: ObjectStore | None = None
        for date, symbols in merged_partitions_of_run(context.instance, run_id):
            requests.append(
                cleanup_run_request(
                    date, symbols, run_key=f"cleanup:{run_id}:{date}", retention_days=retention_days
                )
            )
            if daily_job is None or config is None:
                continue
            store = store or open_store(config.store_url)
            stale = stale_next_day(store, config.market, date, symbols, today)
            if stale:
                following = next_day(date)
                context.log.info(
                    f"{date} was merged again and its end changed for {len(stale)} symbols: "
                    f"re-merge {following}"
                )
                requests.append(
                    day_run_request(
                        following, stale, reason="carry-changed", run_key=f"carry:{run_id}:{following}"
                    )
                )
        return requests

    return cleanup_after_merge_sensor


# ------------------------------------------------------------------------------------------------ reconcile


@dataclass
class DayState:
    """What a completed date that still holds raw objects needs."""

    date: str
    # running | never merged | failed | retention | awaiting late objects | awaiting a run of the whole date
    # | awaiting cleanup | done
    reason: str
    symbols: list[str]
    detail: str = ""
    other_dates: set[str] = field(default_factory=set)  # other event dates its remaining objects hold


def _window_objects(store: ObjectStore, market: Market, stream: str, date: str) -> list[ObjectInfo]:
    """Layout-2 raw objects that may hold ``date``'s events: its folder, the previous day's last hour and the
    next day's first hour (the window validation reads)."""
    midnight = _midnight(date)
    out = list(store.list(stream_date_prefix(market, stream, date)))
    before = stream_date_prefix(market, stream, previous_day(date))
    out += store.list(before, start_after=f"{before}{int((midnight - 3600) * 1e9):019d}")
    after = stream_date_prefix(market, stream, next_day(date))
    edge = f"{after}{int((midnight + DAY_S + 3600) * 1e9):019d}"
    for info in store.list(after):
        if info.key >= edge:
            break
        out.append(info)
    return out


def day_state(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    market: Market,
    streams: Iterable[str],
    date: str,
    retention_days: float,
    now: float,
    v1_dates: Iterable[str] = (),
) -> DayState:
    """Classify a completed date that may still hold raw objects, from its runs and its stream-day reports.

    After a successful merge: an object of the date's window that its stream-day report does not list
    arrived later (re-merge); one the report lists as holding events of the date is still to be cleaned
    (cleanup; the gate says why it keeps anything). Layout-1 leftovers are the late-data sensor's.
    """
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": date}), limit=200)
    if any(r.status in ACTIVE_STATUSES for r in runs):
        return DayState(date, "running", [])
    # a run the day's store lease turned away wrote nothing: not a merge attempt (depth_pipeline/lease.py)
    merges = [r for r in runs if r.tags.get(TAG_KIND) != "cleanup" and r.tags.get("depth/refused") != "lease"]
    cleanups = [r for r in runs if r.tags.get(TAG_KIND) == "cleanup"]
    if not merges:
        return DayState(date, "never merged", [])
    latest = merges[0]  # newest first
    if latest.status != dg.DagsterRunStatus.SUCCESS:
        symbols = latest.tags.get("depth/symbols", "*")
        return DayState(date, "failed", [] if symbols == "*" else symbols.split(","), f"run {latest.run_id}")
    failed = _failed_symbols(instance, latest.run_id)
    if failed:
        return DayState(date, "failed", failed, f"symbols failed in run {latest.run_id}")
    record = instance.get_run_record_by_id(latest.run_id)
    ended = record.end_time if record is not None and record.end_time else now
    if retention_days > 0 and now < ended + retention_days * DAY_S:
        return DayState(date, "retention", [])
    late: list[str] = []
    holding: list[str] = []
    unknown: list[str] = []  # no stream-day report to say (validation before stream-day reports, layout 1)
    other_dates: set[str] = set()
    undated: set[str] = set()  # symbols whose lines only runs of other chosen symbols read
    # layout-1 folders are per symbol: listed only where the sweep saw layout-1 objects of the date
    v1_symbols = symbols_merged_on(instance, date) if date in v1_dates else []
    for stream in streams:
        try:
            report = json.loads(store.get_bytes(stream_day_report_key(market, stream, date)))
        except (ObjectNotFoundError, ValueError):
            report = None
        index = {o["key"]: o for o in (report or {}).get("objects", [])}
        window = _window_objects(store, market, stream, date)
        for symbol in v1_symbols:
            window += store.list(stream_day_prefix(market, stream, symbol, date))
        for info in window:
            entry = index.get(info.key)
            in_folder = f"/date={date}/" in info.key
            if report is None:
                if in_folder:
                    unknown.append(info.key)
            elif entry is None:
                if in_folder:
                    late.append(info.key)
            elif not entry.get("carried"):
                undated.update(entry.get("undated", []))
                # no event dates (stream-wide notes, book tickers): cleaned with the date of its folder
                if date in entry.get("event_dates", []) or (in_folder and not entry.get("event_dates")):
                    holding.append(info.key)
                other_dates.update(d for d in entry.get("event_dates", []) if d != date)
    if late:
        return DayState(
            date, "awaiting late objects", [], f"{len(late)} objects, e.g. {late[0]}", other_dates
        )
    if undated:
        return DayState(
            date,
            "awaiting a run of the whole date",
            [],
            f"lines of {len(undated)} symbols in its raw objects were never validated, e.g. {min(undated)}",
            other_dates,
        )
    if unknown:
        cleaned_after = [c for c in cleanups if _created(instance, c) >= _created(instance, latest)]
        if cleaned_after:  # a cleanup after the merge left them: not merged (or another day holds them)
            return DayState(date, "awaiting late objects", [], f"{len(unknown)} objects left by the cleanup")
        return DayState(date, "awaiting cleanup", [], f"{len(unknown)} objects, e.g. {unknown[0]}")
    if holding:
        return DayState(
            date, "awaiting cleanup", [], f"{len(holding)} objects, e.g. {holding[0]}", other_dates
        )
    return DayState(date, "done", [], "", other_dates)


def _created(instance: dg.DagsterInstance, run: dg.DagsterRun) -> float:
    record = instance.get_run_record_by_id(run.run_id)
    return record.create_timestamp.timestamp() if record is not None else 0.0


def _failed_symbols(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Symbols a successful run recorded as not ok (a symbol-day's merge can fail inside a day run)."""
    out: set[str] = set()
    for materialization in merged_materializations(instance, run_id):
        entries = recorded_outcomes(materialization)
        out.update(
            s
            for s, e in entries.items()
            if not (e["ok"] and e[META_BLOCKING_PASSED]) and not e.get(META_NO_RAW_DATA)
        )
    return sorted(out)


def evaluate_reconcile(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    market: Market,
    streams: list[str],
    cursor: dict[str, Any],
    config: PipelineConfig,
    *,
    now: float | None = None,
    sweep_keys: int = RECONCILE_SWEEP_KEYS,
) -> tuple[list[dg.RunRequest], str, list[str]]:
    """One reconcile tick: sweep the raw keys (bounded per tick); once every stream finished a pass, ask for
    each completed date that still has raw objects what it needs, with backoff per date and reason."""
    now = time.time() if now is None else now
    today = _today(now).isoformat()
    _found, states = scan_streams(
        store,
        market,
        streams,
        cursor,
        now=now,
        initial_lookback_seconds=0.0,
        deadline=Deadline(TICK_BUDGET_SECONDS),
        head=False,
        sweep_keys=sweep_keys,
    )
    asks: dict[str, dict[str, Any]] = dict(cursor.get("asks", {}))
    logs: list[str] = []
    requests: list[dg.RunRequest] = []
    if not all(st.passes for st in states.values()):
        return requests, _dump(states, asks=asks), ["sweeping the raw keys (first pass not complete)"]
    dates = sorted({d for st in states.values() for d in st.dates})
    v1_dates = {d for st in states.values() for d in st.v1_dates}
    due_after = config.schedule_hour * 3600 + config.schedule_minute * 60 + RECONCILE_GRACE_SECONDS
    queue = list(dates)
    considered: set[str] = set()
    while queue:
        date = queue.pop(0)
        if date in considered:
            continue
        considered.add(date)
        if date >= today or now < _midnight(next_day(date)) + due_after:
            continue
        if config.start_date and date < config.start_date:
            continue  # before DEPTH_START_DATE: no such partition to run
        state = day_state(instance, store, market, streams, date, config.retention_days, now, v1_dates)
        # an object holding two dates: the other date is looked at too (it may need a merge or cleanup)
        queue += sorted(state.other_dates - considered)
        if state.reason in ("running", "retention", "done"):
            continue
        ask = asks.get(date)
        if ask is None or ask.get("reason") != state.reason:
            ask = {"reason": state.reason, "attempts": 0, "next": 0.0}
            asks[date] = ask
        if now < float(ask["next"]):
            continue
        if ask["attempts"] >= RECONCILE_MAX_ATTEMPTS:
            logs.append(
                f"STUCK {date}: {state.reason} ({state.detail}) after {ask['attempts']} requests; needs an "
                "operator (docs/orchestration.md, Reconcile)"
            )
            ask["next"] = now + BACKOFF_CAP_SECONDS
            continue
        ask["attempts"] += 1
        ask["next"] = now + backoff_seconds(ask["attempts"])
        run_key = f"reconcile:{date}:{state.reason.replace(' ', '-')}:{ask['attempts']}"
        if state.reason == "awaiting cleanup":
            requests.append(
                cleanup_run_request(date, None, run_key=run_key, retention_days=config.retention_days)
            )
        else:
            requests.append(day_run_request(date, state.symbols or None, reason="reconcile", run_key=run_key))
        logs.append(
            f"{date}: {state.reason}{' (' + state.detail + ')' if state.detail else ''} -> requested "
            f"(attempt {ask['attempts']})"
        )
    for date in [d for d in asks if d not in considered]:
        del asks[date]  # its raw objects are gone: nothing left to do
    return requests, _dump(states, asks=asks), logs


def build_reconcile_sensor(
    config: PipelineConfig, daily_job: UnresolvedAssetJobDefinition, cleanup_job: dg.JobDefinition
) -> dg.SensorDefinition:
    """Finds completed days that still hold raw objects and asks for what each needs (nothing stuck)."""

    @dg.sensor(
        name="reconcile_sensor",
        jobs=[daily_job, cleanup_job],
        minimum_interval_seconds=RECONCILE_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sweeps the raw keys; every completed date that still holds raw objects and was never "
        "merged, failed, awaits late objects or awaits cleanup is requested again, with backoff.",
    )
    def reconcile_sensor(
        context: dg.SensorEvaluationContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.SensorResult:
        requests, cursor, logs = evaluate_reconcile(
            context.instance,
            store.open(),
            settings.market_name,
            settings.streams,
            _load_cursor(context.cursor),
            config,
        )
        for line in logs:
            (context.log.warning if line.startswith("STUCK") else context.log.info)(line)
        return dg.SensorResult(
            run_requests=requests,
            cursor=cursor,
            skip_reason=None if requests else ("; ".join(logs) or "every retained day is in hand"),
        )

    return reconcile_sensor
