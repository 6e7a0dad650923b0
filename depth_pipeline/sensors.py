"""Sensors: raw arrival, stream gap alerts, late data re-merges, and cleanup after a verified merge.

Each sensor reads the object store listing (one prefix per stream-symbol-day, docs/raw-format.md) and keeps
its progress in a JSON cursor, so a tick only looks at what is new; none of them reads more than the few
newest raw objects.
"""

import datetime as dt
import hashlib
import json
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from depth_core.names import Market
from depth_core.raw_format import LineKind, RawFormatError, RawObjectKey, read_raw_object, stream_day_prefix
from depth_core.schema import merged_manifest_key
from depth_pipeline.cleanup import parse_manifest_objects
from depth_pipeline.config import PipelineConfig
from depth_pipeline.daydata import v1_symbols
from depth_pipeline.jobs import cleanup_run_request, day_run_request
from depth_pipeline.keys import (
    MERGED_DEPTH,
    META_BLOCKING_PASSED,
    META_SYMBOL_OUTCOMES,
    TAG_LATE_OBJECTS,
    raw_key,
)
from depth_pipeline.notify import Alert, Notifier, build_notifier
from depth_pipeline.partitions import date_of
from depth_pipeline.resources import DepthSettingsResource, DepthStoreResource
from depth_store import ObjectInfo, ObjectStore

GAP_EVENTS = frozenset({"gap", "disconnect"})
MAX_OBJECTS_READ_PER_TICK = 200
LATE_BOUNDARY_SECONDS = 120  # an object received this soon after midnight may hold the previous day's events


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _iso_days(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def list_raw(
    store: ObjectStore, market: Market, stream: str, symbol: str, date: str
) -> Iterator[tuple[RawObjectKey, ObjectInfo]]:
    """Raw objects of one stream-symbol-day, in time order; foreign keys are skipped."""
    for info in store.list(stream_day_prefix(market, stream, symbol, date)):
        try:
            yield RawObjectKey.parse(info.key), info
        except RawFormatError:
            continue


def watched_symbols(store: ObjectStore, market: Market, streams: list[str], symbols: list[str]) -> list[str]:
    """``DEPTH_SYMBOLS`` when set, else every symbol with a layout-v1 folder in some stream."""
    if symbols:
        return list(symbols)
    found: set[str] = set()
    for stream in streams:
        found.update(v1_symbols(store, market, stream))
    return sorted(found)


def _load_cursor(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------------------------------- arrival


def build_raw_arrival_sensor(config: PipelineConfig) -> dg.SensorDefinition:
    """Records raw objects as they land: one run-less materialization of ``raw/<stream>`` per partition."""

    @dg.sensor(
        name="raw_arrival_sensor",
        minimum_interval_seconds=config.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records newly landed raw objects as run-less materializations of raw/<stream>, per "
        "date|symbol partition (object count, bytes, newest object and its receive time).",
    )
    def raw_arrival_sensor(
        context: dg.SensorEvaluationContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.SensorResult:
        cursor = _load_cursor(context.cursor)
        object_store = store.open()
        today = _today()
        events: list[dg.AssetMaterialization] = []
        symbols = watched_symbols(object_store, settings.market_name, settings.streams, settings.symbols)
        for stream in settings.streams:
            for symbol in symbols:
                slot = f"{stream}/{symbol}"
                last_key: str | None = cursor.get(slot)
                start = today - dt.timedelta(days=1)
                if last_key:
                    start = min(start, dt.date.fromisoformat(RawObjectKey.parse(last_key).date))
                if start > today:
                    continue
                for date in _iso_days(start, today):
                    fresh = [
                        (k, i)
                        for k, i in list_raw(object_store, settings.market_name, stream, symbol, date)
                        if last_key is None or i.key > last_key
                    ]
                    if not fresh:
                        continue
                    newest_key, newest_info = fresh[-1]
                    events.append(
                        dg.AssetMaterialization(
                            asset_key=raw_key(stream),
                            partition=date,
                            description=f"{len(fresh)} raw objects of {symbol} landed from {stream}",
                            metadata={
                                "symbol": symbol,
                                "objects": len(fresh),
                                "bytes": sum(i.size for _, i in fresh),
                                "newest_object": newest_info.key,
                                "newest_first_receive": dg.MetadataValue.timestamp(
                                    newest_key.first_receive_ns / 1e9
                                ),
                                "newest_uploaded": dg.MetadataValue.timestamp(newest_info.last_modified),
                            },
                        )
                    )
                    cursor[slot] = newest_info.key
        return dg.SensorResult(
            asset_events=events,
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None if events else "no new raw objects",
        )

    return raw_arrival_sensor


# ------------------------------------------------------------------------------------------------------- gap


def _gap_notes(store: ObjectStore, info: ObjectInfo) -> list[str]:
    """Collector notes in a raw object that report a gap or a disconnect."""
    notes: list[str] = []
    for line in read_raw_object(store.get_bytes(info.key)).lines:
        if line.kind != LineKind.META:
            continue
        try:
            note = json.loads(line.text)
        except ValueError:
            continue
        if isinstance(note, dict) and note.get("event") in GAP_EVENTS:
            when = dt.datetime.fromtimestamp(line.receive_ns / 1e9, tz=dt.UTC).isoformat()
            notes.append(f"{note.get('event')} at {when}: {json.dumps(note, sort_keys=True)[:200]}")
    return notes


def evaluate_stream_gaps(
    store: ObjectStore,
    market: Market,
    streams: list[str],
    symbols: list[str],
    silence_seconds: float,
    cursor: dict[str, Any],
    now: float | None = None,
) -> tuple[list[Alert], dict[str, Any], dict[str, float]]:
    """Alerts for silent streams and gaps seen in new raw objects; returns (alerts, cursor, silence per stream).

    A stream is silent when its newest raw object (any symbol) began more than ``silence_seconds`` ago,
    judged by the receive time in the object's name. One alert per silence episode; ``recovered`` when it
    delivers again. New objects are also read for collector ``gap``/``disconnect`` notes, and the time
    between consecutive objects of a stream-symbol is compared with the threshold.
    """
    now = time.time() if now is None else now
    today = dt.datetime.fromtimestamp(now, tz=dt.UTC).date()
    days = _iso_days(today - dt.timedelta(days=1), today)
    seen: dict[str, str] = dict(cursor.get("seen", {}))
    silent: dict[str, float] = dict(cursor.get("silent", {}))
    alerts: list[Alert] = []
    silence_by_stream: dict[str, float] = {}
    reads = 0
    for stream in streams:
        newest_ns = 0
        for symbol in symbols:
            slot = f"{stream}/{symbol}"
            previous_ns = RawObjectKey.parse(seen[slot]).first_receive_ns if slot in seen else None
            for date in days:
                for key, info in list_raw(store, market, stream, symbol, date):
                    newest_ns = max(newest_ns, key.first_receive_ns)
                    if slot in seen and info.key <= seen[slot]:
                        continue
                    if (
                        previous_ns is not None
                        and (key.first_receive_ns - previous_ns) / 1e9 > silence_seconds
                    ):
                        pause = (key.first_receive_ns - previous_ns) / 1e9
                        alerts.append(
                            Alert(
                                "gap",
                                stream,
                                f"{symbol}: no raw object for {pause:.0f} s before {info.key}",
                                symbol=symbol,
                                silent_seconds=pause,
                            )
                        )
                    previous_ns = key.first_receive_ns
                    if reads < MAX_OBJECTS_READ_PER_TICK and slot in seen:
                        reads += 1
                        for note in _gap_notes(store, info):
                            alerts.append(
                                Alert("gap", stream, f"{symbol}: collector reported {note}", symbol=symbol)
                            )
                    seen[slot] = info.key
        silence = now - newest_ns / 1e9 if newest_ns else float("inf")
        silence_by_stream[stream] = silence
        if silence > silence_seconds:
            if stream not in silent:
                what = f"silent for {silence:.0f} s" if newest_ns else "has delivered no raw object today"
                alerts.append(
                    Alert(
                        "silent",
                        stream,
                        f"{what} (threshold {silence_seconds:.0f} s)",
                        silent_seconds=None if not newest_ns else silence,
                    )
                )
                silent[stream] = now
        elif stream in silent:
            alerts.append(Alert("recovered", stream, f"delivering again (newest object {silence:.0f} s old)"))
            del silent[stream]
    return alerts, {"seen": seen, "silent": silent}, silence_by_stream


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
        object_store = store.open()
        alerts, cursor, silence = evaluate_stream_gaps(
            object_store,
            settings.market_name,
            settings.streams,
            watched_symbols(object_store, settings.market_name, settings.streams, settings.symbols),
            config.silence_seconds,
            _load_cursor(context.cursor),
        )
        today = _today().isoformat()
        observations: list[dg.AssetObservation] = []
        for alert in alerts:
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
            for s, v in silence.items()
        )
        text = (
            ("ALERT " + "; ".join(f"[{a.kind}] {a.stream}: {a.message}" for a in alerts))
            if alerts
            else status
        )
        return dg.SensorResult(
            asset_events=observations, cursor=json.dumps(cursor, sort_keys=True), skip_reason=text
        )

    return stream_gap_sensor


# ------------------------------------------------------------------------------------------------ late data


# Manifests are immutable per etag: the code server keeps the parsed key sets between sensor ticks, so a
# tick costs one HEAD per merged symbol-day instead of a download of every manifest.
_MANIFEST_CACHE: OrderedDict[tuple[str, str, str], frozenset[str]] = OrderedDict()
_MANIFEST_CACHE_SIZE = 4096


def _manifest_keys(store: ObjectStore, market: Market, symbol: str, date: str) -> frozenset[str] | None:
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
        keys = frozenset(o.key for o in parse_manifest_objects(json.loads(store.get_bytes(key))))
    except (ValueError, KeyError, TypeError):
        return frozenset()
    _MANIFEST_CACHE[cache_key] = keys
    while len(_MANIFEST_CACHE) > _MANIFEST_CACHE_SIZE:
        _MANIFEST_CACHE.popitem(last=False)
    return keys


def find_late_objects(
    store: ObjectStore,
    market: Market,
    streams: list[str],
    symbols: list[str],
    first: dt.date,
    last: dt.date,
) -> dict[tuple[str, str], list[str]]:
    """Raw objects not in the manifest of an already-merged symbol-day that they belong to.

    An object in date folder D belongs to D (and, if received within ``LATE_BOUNDARY_SECONDS`` after
    midnight, possibly to D-1). It is late for a merged day when no manifest of D or D-1 lists it.
    Returns {(date, symbol): [late keys]} for merged days only.
    """
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    manifests: dict[tuple[str, str], frozenset[str] | None] = {}

    def manifest(date: str, symbol: str) -> frozenset[str] | None:
        if (date, symbol) not in manifests:
            manifests[(date, symbol)] = _manifest_keys(store, market, symbol, date)
        return manifests[(date, symbol)]

    for symbol in symbols:
        for date in _iso_days(first, last):
            prev = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
            midnight_ns = int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()) * 10**9
            for stream in streams:
                for key, info in list_raw(store, market, stream, symbol, date):
                    listed_here, listed_prev = manifest(date, symbol), manifest(prev, symbol)
                    if (listed_here and info.key in listed_here) or (listed_prev and info.key in listed_prev):
                        continue
                    if listed_here is not None:
                        out[(date, symbol)].append(info.key)
                    near_midnight = key.first_receive_ns - midnight_ns < LATE_BOUNDARY_SECONDS * 10**9
                    if near_midnight and listed_prev is not None:
                        out[(prev, symbol)].append(info.key)
    return dict(out)


def build_late_data_sensor(config: PipelineConfig, job: UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    """Requests a re-merge of any merged symbol-day whose raw folders gained objects its merge did not list."""

    @dg.sensor(
        name="late_data_sensor",
        job=job,
        minimum_interval_seconds=config.late_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Re-merges a symbol-day (last {config.late_lookback_days} days) when raw objects land "
        "after its merge; they are kept by cleanup until a merge lists them.",
    )
    def late_data_sensor(
        context: dg.SensorEvaluationContext, store: DepthStoreResource, settings: DepthSettingsResource
    ) -> dg.SensorResult:
        today = _today()
        first = today - dt.timedelta(days=config.late_lookback_days)
        object_store = store.open()
        symbols = watched_symbols(object_store, settings.market_name, settings.streams, settings.symbols)
        late = find_late_objects(object_store, settings.market_name, settings.streams, symbols, first, today)
        by_date: dict[str, dict[str, list[str]]] = defaultdict(dict)
        for (date, symbol), keys in late.items():
            by_date[date][symbol] = keys
        requests: list[dg.RunRequest] = []
        for date, per_symbol in sorted(by_date.items()):
            all_keys = sorted(k for keys in per_symbol.values() for k in keys)
            digest = hashlib.sha256("\n".join(all_keys).encode()).hexdigest()[:16]
            requests.append(
                day_run_request(
                    date,
                    sorted(per_symbol),
                    reason="remerge",
                    run_key=f"late:{date}:{digest}",
                    tags={TAG_LATE_OBJECTS: str(len(all_keys))},
                )
            )
            context.log.info(
                f"{len(all_keys)} raw objects arrived after the merge of {date} "
                f"({', '.join(sorted(per_symbol))}): re-merge"
            )
        return dg.SensorResult(
            run_requests=requests,
            skip_reason=None if requests else "no raw object arrived after a merge",
        )

    return late_data_sensor


# -------------------------------------------------------------------------------------------------- cleanup


def merged_partitions_of_run(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, list[str]]]:
    """(date, symbols) of each ``merged_depth`` day a run materialized, with the symbols whose merge passed
    every blocking check (a day with none is left out)."""
    records = instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    out: list[tuple[str, list[str]]] = []
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if (
            materialization is None
            or materialization.asset_key != MERGED_DEPTH
            or not materialization.partition
        ):
            continue
        table = materialization.metadata.get(META_SYMBOL_OUTCOMES)
        entries: Any = table.value if table is not None else {}
        passed = sorted(s for s, e in entries.items() if e.get("ok") and e.get(META_BLOCKING_PASSED))
        if passed:
            out.append((date_of(materialization.partition), passed))
    return out


def build_cleanup_sensor(cleanup_job: dg.JobDefinition) -> dg.SensorDefinition:
    """After any successful run that materialized ``merged_depth``, request the cleanup of those partitions.

    ``monitored_jobs`` is left out on purpose: asset-graph runs, backfills and automation all run as
    ``__ASSET_JOB`` and would be missed; what the run materialized decides. Runs executed in-process by
    ``depth-pipeline run`` carry no code-location origin, hence ``monitor_all_code_locations``.
    """

    @dg.run_status_sensor(
        name="cleanup_after_merge_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        request_job=cleanup_job,
        # also runs without a code-location origin (``depth-pipeline run`` executes in-process); the
        # function itself only acts on runs that materialized merged_depth
        monitor_all_code_locations=True,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts the gated cleanup of each symbol-day a successful run merged with its blocking "
        "checks passed.",
    )
    def cleanup_after_merge_sensor(context: dg.RunStatusSensorContext) -> list[dg.RunRequest]:
        run_id = context.dagster_run.run_id
        return [
            cleanup_run_request(date, symbols, run_key=f"cleanup:{run_id}:{date}")
            for date, symbols in merged_partitions_of_run(context.instance, run_id)
        ]

    return cleanup_after_merge_sensor
