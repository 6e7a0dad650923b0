"""The gated cleanup: delete raw objects only once a verified merge has consumed them.

The seed's "only if successful, delete the temporary objects", made safe:

- the symbol-day's latest ``merged_depth`` materialization must come from a run that **succeeded** with
  every **blocking check passed**, no later merge attempt may have failed or still be running, and the
  coverage manifest in the store must be the very one that run wrote (same etag) — otherwise nothing of
  that symbol-day is deleted and the reason is returned;
- only objects **listed in that manifest** are deleted, and only while their size and etag still match;
  anything that arrived later is kept for the re-merge it triggers;
- an object whose events span two dates is deleted only once every date it holds has such a merge that
  lists it; one that holds only stream-wide notes (a flush while the collector was cut off from the
  exchange) is listed by every symbol-day of its stream-day, and deleted once all of them are verified;
- ``retention_days`` keeps merged raw objects that long after the merge;
- deleting is idempotent (an absent object counts as done), and the manifest is never changed, so a
  cleanup that crashed half-way is simply run again.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from depth_core.layout import merged_manifest_key
from depth_core.names import Market
from depth_core.raw_format import RawFormatError, RawObjectKey, stream_day_prefix
from depth_core.validated_layout import object_symbol_dates, stream_day_report_key, stream_day_report_version
from depth_pipeline.keys import (
    MERGED_DEPTH,
    META_BLOCKING_PASSED,
    META_MANIFEST_ETAG,
    TAG_KIND,
    TAG_SYMBOLS,
)
from depth_pipeline.outcomes import SymbolRecord, recorded_outcomes
from depth_store import ObjectInfo, ObjectNotFoundError, ObjectStore


@dataclass(frozen=True)
class ManifestObject:
    """One raw object a merge consumed: its key, size, etag and the event dates it holds."""

    key: str
    size: int
    etag: str | None
    event_dates: tuple[str, ...]


def parse_manifest_objects(
    manifest: dict[str, Any], shared: dict[ManifestObject, ManifestObject] | None = None
) -> list[ManifestObject]:
    """The raw objects listed in a coverage manifest (``raw_objects``: key, size, etag, event_dates).

    ``shared``: equal entries of many manifests become one object (every symbol-day of a layout-2 stream-day
    lists the same objects: at a full day 400 manifests x 17,280 entries would otherwise be 6.9 M objects)."""
    entries = manifest.get("raw_objects")
    if entries is None:
        entries = manifest.get("objects", [])
    out: list[ManifestObject] = []
    for entry in entries:
        dates = entry.get("event_dates") or entry.get("dates") or []
        obj = ManifestObject(
            key=str(entry["key"]),
            size=int(entry["size"]),
            etag=entry.get("etag"),
            event_dates=tuple(str(d) for d in dates),
        )
        out.append(obj if shared is None else shared.setdefault(obj, obj))
    return out


@dataclass
class MergeGate:
    """Whether the merge of one symbol-day may release its raw objects, and why not."""

    date: str
    symbol: str
    ok: bool
    reason: str
    run_id: str | None = None
    merged_at: dt.datetime | None = None
    objects: list[ManifestObject] = field(default_factory=list)

    def lists(self, obj: ManifestObject) -> bool:
        return any(o.key == obj.key and o.size == obj.size and o.etag == obj.etag for o in self.objects)


def _asks_for(run: dg.DagsterRun, symbol: str) -> bool:
    """Whether a run of the date was asked to merge ``symbol`` (``depth/symbols``: "*" or a list)."""
    wanted = run.tags.get(TAG_SYMBOLS, "*")
    return wanted == "*" or symbol in wanted.split(",")


@dataclass
class DayRecords:
    """What the gate of every symbol of one date reads from the instance, read once for all of them: the
    date's ``merged_depth`` materializations and its runs (newest first). A day of 400 symbols otherwise
    re-read and re-deserialised the same 400-row materializations 400 times (the whole cleanup's CPU)."""

    materializations: list[tuple[dg.EventLogEntry, dict[str, SymbolRecord]]]  # entry, its symbol records
    runs: list[dg.DagsterRun]
    manifest_objects: dict[ManifestObject, ManifestObject] = field(default_factory=dict)  # shared entries

    @classmethod
    def read(cls, instance: dg.DagsterInstance, date: str) -> DayRecords:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=MERGED_DEPTH, asset_partitions=[date]), limit=100
        ).records
        materializations = [
            (r.event_log_entry, recorded_outcomes(r.event_log_entry.asset_materialization)) for r in records
        ]
        runs = list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": date}), limit=100))
        return cls(materializations, runs)

    def run(self, instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
        return next((r for r in self.runs if r.run_id == run_id), None) or instance.get_run_by_id(run_id)


def _latest_merge_attempt(
    instance: dg.DagsterInstance, date: str, symbol: str, day: DayRecords | None = None
) -> dg.DagsterRun | None:
    """The newest run of the date that targeted ``merged_depth`` for ``symbol`` (cleanup runs are not)."""
    runs = (
        day.runs
        if day is not None
        else instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": date}), limit=100)
    )
    for run in runs:
        if run.tags.get(TAG_KIND) == "cleanup" or not _asks_for(run, symbol):
            continue
        if run.tags.get("depth/refused") == "lease":  # turned away by the day's lease: it wrote nothing
            continue
        if run.asset_selection and MERGED_DEPTH not in run.asset_selection:  # empty: the whole job
            continue
        return run
    return None


def _symbol_entry(
    instance: dg.DagsterInstance, date: str, symbol: str, day: DayRecords | None = None
) -> tuple[dg.EventLogEntry, SymbolRecord] | None:
    """The newest ``merged_depth`` materialization of ``date`` whose day table names ``symbol``, and that
    symbol's entry (a run of chosen symbols records only those)."""
    for entry, entries in (day or DayRecords.read(instance, date)).materializations:
        if symbol in entries:
            return entry, entries[symbol]
    return None


def symbols_merged_on(instance: dg.DagsterInstance, date: str) -> list[str]:
    """Every symbol some recorded merge of ``date`` names (what a cleanup of the whole date looks at)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=MERGED_DEPTH, asset_partitions=[date]), limit=100
    ).records
    found: set[str] = set()
    for record in records:
        found.update(recorded_outcomes(record.event_log_entry.asset_materialization))
    return sorted(found)


def merge_gate(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    market: Market,
    symbol: str,
    date: str,
    day: DayRecords | None = None,
) -> MergeGate:
    """Check the latest recorded merge of ``symbol`` on ``date`` (see the module docstring); ``day``: the
    date's records read once for many symbols (else read here)."""
    day = day or DayRecords.read(instance, date)
    found = _symbol_entry(instance, date, symbol, day)
    if found is None:
        return MergeGate(date, symbol, False, f"no merge of {symbol} {date} is recorded")
    entry, metadata = found
    run_id = entry.run_id
    merged_at = dt.datetime.fromtimestamp(entry.timestamp, tz=dt.UTC)
    run = day.run(instance, run_id)
    if run is None or run.status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
        status = run.status.value if run else "missing"
        return MergeGate(
            date, symbol, False, f"the latest merge of {symbol} {date} (run {run_id}) is {status}", run_id
        )
    latest = _latest_merge_attempt(instance, date, symbol, day)
    if latest is not None and latest.run_id != run_id:
        return MergeGate(
            date,
            symbol,
            False,
            f"a later merge attempt of {symbol} {date} (run {latest.run_id}) is {latest.status.value}",
            run_id,
        )
    if not metadata.get("ok") or not metadata.get(META_BLOCKING_PASSED):
        why = metadata.get("reason") or "a blocking check failed"
        return MergeGate(
            date, symbol, False, f"the latest merge of {symbol} {date} (run {run_id}) failed: {why}", run_id
        )
    manifest_key = merged_manifest_key(market, symbol, date)
    info = store.head(manifest_key)
    recorded_etag = metadata.get(META_MANIFEST_ETAG)
    if info is None:
        return MergeGate(date, symbol, False, f"the coverage manifest {manifest_key} is missing", run_id)
    if recorded_etag is None or str(recorded_etag) != (info.etag or ""):
        return MergeGate(
            date,
            symbol,
            False,
            f"the coverage manifest {manifest_key} is not the one run {run_id} recorded",
            run_id,
        )
    try:
        objects = parse_manifest_objects(json.loads(store.get_bytes(manifest_key)), day.manifest_objects)
    except (ValueError, KeyError, TypeError) as exc:
        return MergeGate(
            date, symbol, False, f"the coverage manifest {manifest_key} is unreadable: {exc}", run_id
        )
    return MergeGate(
        date, symbol, True, "merge succeeded with its blocking checks passed", run_id, merged_at, objects
    )


def _belongs_to(key: str, event_dates: tuple[str, ...], date: str) -> bool:
    """Whether ``date``'s cleanup deletes this object: it holds events of ``date``, or no event at all and
    sits in ``date``'s folder."""
    if event_dates:
        return date in event_dates
    try:
        return RawObjectKey.parse(key).date == date
    except RawFormatError:
        return False


@dataclass
class CleanupResult:
    """What one symbol-day's cleanup did; ``ok`` False means nothing was deleted and ``reason`` says why."""

    date: str
    symbol: str
    ok: bool
    reason: str
    deleted: list[str] = field(default_factory=list)
    already_absent: list[str] = field(default_factory=list)
    kept_later_arrivals: list[str] = field(default_factory=list)
    kept_other_date_pending: list[str] = field(default_factory=list)
    kept_retention: list[str] = field(default_factory=list)
    kept_changed: list[str] = field(default_factory=list)
    left_to_other_date: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.ok:
            return f"{self.symbol} {self.date}: deleted nothing: {self.reason}"
        parts = [f"deleted {len(self.deleted)}", f"already gone {len(self.already_absent)}"]
        if self.kept_later_arrivals:
            parts.append(
                f"kept {len(self.kept_later_arrivals)} that arrived after the merge (re-merge pending)"
            )
        if self.kept_other_date_pending:
            parts.append(f"kept {len(self.kept_other_date_pending)} whose other event date is not merged yet")
        if self.kept_retention:
            parts.append(f"kept {len(self.kept_retention)} under retention")
        if self.kept_changed:
            parts.append(f"kept {len(self.kept_changed)} whose size/etag changed")
        return f"{self.symbol} {self.date}: " + ", ".join(parts)


def unmerged_raw_objects(
    store: ObjectStore,
    market: Market,
    streams: list[str] | tuple[str, ...],
    symbol: str,
    date: str,
    merged_keys: set[str],
) -> list[str]:
    """Raw objects in the symbol-day's folders that no merge listed (they arrived after it)."""
    out: list[str] = []
    for stream in streams:
        for info in store.list(stream_day_prefix(market, stream, symbol, date)):
            try:
                RawObjectKey.parse(info.key)
            except RawFormatError:
                continue
            if info.key not in merged_keys:
                out.append(info.key)
    return out


def cleanup_symbol_day(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    market: Market,
    streams: list[str] | tuple[str, ...],
    symbol: str,
    date: str,
    *,
    retention_days: float = 0.0,
    now: dt.datetime | None = None,
) -> CleanupResult:
    """Delete the raw objects of one verified merge; see the module docstring for every rule."""
    gate = merge_gate(instance, store, market, symbol, date)
    if not gate.ok:
        return CleanupResult(date, symbol, False, gate.reason)
    result = CleanupResult(date, symbol, True, gate.reason)
    listed = {o.key for o in gate.objects}
    result.kept_later_arrivals = unmerged_raw_objects(store, market, streams, symbol, date, listed)
    now = now or dt.datetime.now(dt.UTC)
    if gate.merged_at and retention_days > 0 and now < gate.merged_at + dt.timedelta(days=retention_days):
        result.kept_retention = sorted(listed)
        return result
    other_gates: dict[str, MergeGate] = {}
    for obj in gate.objects:
        if not _belongs_to(obj.key, obj.event_dates, date):
            # a neighbour across midnight this merge read for its events of another day: that day's
            # cleanup deletes it, so a cleanup scoped to one date never touches another date's objects
            result.left_to_other_date.append(obj.key)
            continue
        other_dates = [d for d in obj.event_dates if d != date]
        pending = False
        for other in other_dates:
            if other not in other_gates:
                other_gates[other] = merge_gate(instance, store, market, symbol, other)
            if not (other_gates[other].ok and other_gates[other].lists(obj)):
                pending = True
        if pending:
            result.kept_other_date_pending.append(obj.key)
            continue
        info = store.head(obj.key)
        if info is None:
            result.already_absent.append(obj.key)
        elif info.size != obj.size or (obj.etag is not None and info.etag != obj.etag):
            result.kept_changed.append(obj.key)
        else:
            store.delete(obj.key)
            result.deleted.append(obj.key)
    return result


def deleted_merged_objects(
    store: ObjectStore, market: Market, symbol: str, date: str, stream: str | None = None
) -> list[str]:
    """Raw objects the symbol-day's current manifest lists that are no longer in the store.

    They were deleted by the cleanup after a verified merge; a re-validation carries their validated rows
    over (``depth_core/carryover.py``), so this is for reports and tests, not a reason to refuse.
    """
    key = merged_manifest_key(market, symbol, date)
    if store.head(key) is None:
        return []
    try:
        objects = parse_manifest_objects(json.loads(store.get_bytes(key)))
    except (ValueError, KeyError, TypeError):
        return []
    if stream is not None:
        objects = [o for o in objects if f"/stream={stream}/" in o.key]
    folders: dict[str, set[str]] = {}
    missing: list[str] = []
    for obj in objects:
        folder = obj.key.rsplit("/", 1)[0] + "/"
        if folder not in folders:
            folders[folder] = {i.key for i in store.list(folder)}
        if obj.key not in folders[folder]:
            missing.append(obj.key)
    return missing


# ------------------------------------------------------------------------------------- batched, per date


@dataclass
class DayCleanup:
    """What the cleanup of one date did: per requested symbol a :class:`CleanupResult`, and day totals.

    ``deleted`` counts each raw object once (a layout-2 object is listed by many symbols' manifests);
    ``kept_holdings_pending`` are layout-2 objects some other symbol-day they hold has not verified yet;
    ``requests`` the store requests by kind (LIST of the raw folders, DeleteObjects batches).
    """

    date: str
    results: dict[str, CleanupResult] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    already_absent: list[str] = field(default_factory=list)
    kept_holdings_pending: dict[str, str] = field(default_factory=dict)  # key -> why
    later_arrivals: list[str] = field(default_factory=list)  # in the date's folders, listed by no manifest
    delete_errors: dict[str, str] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok and not r.kept_changed for r in self.results.values()) and not self.delete_errors

    def summary(self) -> str:
        parts = [f"deleted {len(self.deleted)} raw objects", f"already gone {len(self.already_absent)}"]
        if self.later_arrivals:
            parts.append(f"kept {len(self.later_arrivals)} that arrived after the merge (re-merge pending)")
        if self.kept_holdings_pending:
            parts.append(f"kept {len(self.kept_holdings_pending)} that hold a symbol-day not verified yet")
        if self.delete_errors:
            parts.append(f"{len(self.delete_errors)} the store refused to delete")
        refused = [s for s, r in self.results.items() if not r.ok]
        if refused:
            parts.append(
                f"refused for {len(refused)} symbols "
                f"({', '.join(refused[:5])}{' ...' if len(refused) > 5 else ''})"
            )
        return f"{self.date}: " + ", ".join(parts)


_KEY_LISTS = (
    "deleted",
    "already_absent",
    "kept_later_arrivals",
    "kept_other_date_pending",
    "kept_retention",
    "kept_changed",
    "left_to_other_date",
)


def encode_results(results: dict[str, CleanupResult]) -> dict[str, Any]:
    """The cleanup step's output: every key once (``keys``) and each symbol's key lists as ranges of indexes
    into it (``results``). A layout-2 object is in every symbol's lists: at a full day of 400 symbols the
    plain form was 400 x 17,280 keys, ~650 MB of JSON; this is ~2 MB."""
    keys = sorted({k for r in results.values() for name in _KEY_LISTS for k in getattr(r, name)})
    index = {k: i for i, k in enumerate(keys)}
    encoded: dict[str, dict[str, Any]] = {}
    for symbol, result in results.items():
        entry = result.to_dict()
        for name in _KEY_LISTS:
            entry[name] = _ranges(sorted(index[k] for k in entry[name]))
        encoded[symbol] = entry
    return {"keys": keys, "results": encoded}


def decode_results(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Symbol -> ``CleanupResult.to_dict()`` (key lists sorted) from :func:`encode_results`'s output, or the
    plain form written before it."""
    if "results" not in output or "keys" not in output:
        return output
    keys: list[str] = output["keys"]
    decoded: dict[str, dict[str, Any]] = {}
    for symbol, entry in output["results"].items():
        entry = dict(entry)
        for name in _KEY_LISTS:
            entry[name] = [keys[i] for a, b in entry[name] for i in range(a, b + 1)]
        decoded[symbol] = entry
    return decoded


def _ranges(indexes: list[int]) -> list[list[int]]:
    """Sorted indexes as inclusive ``[first, last]`` runs."""
    out: list[list[int]] = []
    for i in indexes:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


GateLookup = Callable[[str, str], MergeGate]


@dataclass
class _StreamDayIndex:
    """A stream-day report, read once: its objects by key."""

    objects: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, store: ObjectStore, market: Market, stream: str, date: str) -> _StreamDayIndex | None:
        try:
            report = json.loads(store.get_bytes(stream_day_report_key(market, stream, date)))
        except (ObjectNotFoundError, ValueError):
            return None
        version = stream_day_report_version(report)
        return cls({o["key"]: {**o, "version": version} for o in report.get("objects", [])})

    @functools.cached_property
    def symbols(self) -> list[str]:
        """Every symbol some object holds lines of (17,280 objects x 400 symbols at full scale: only
        computed for an object of stream-wide notes only)."""
        return sorted({s for o in self.objects.values() for s in o.get("symbols", [])})


def _holdings(
    store: ObjectStore,
    market: Market,
    stream: str,
    obj: ManifestObject,
    reports: dict[tuple[str, str], _StreamDayIndex | None],
) -> list[dict[str, list[str]]] | None:
    """What a layout-2 object holds — ``{symbol: [event dates]}``, one per stream-day report of its event
    dates that lists it. None when no report lists it: its holdings are unknown, so it is kept.

    An object of stream-wide notes only (no symbol's lines) holds every symbol-day of its stream-day:
    validation gave its notes to each of them."""
    dates = set(obj.event_dates)
    try:
        dates.add(RawObjectKey.parse(obj.key).date)
    except RawFormatError:
        return None
    found: list[dict[str, list[str]]] = []
    for date in sorted(dates):
        if (stream, date) not in reports:
            reports[(stream, date)] = _StreamDayIndex.read(store, market, stream, date)
        index = reports[(stream, date)]
        entry = index.objects.get(obj.key) if index else None
        if entry is None or index is None:
            continue
        if entry.get("undated"):
            raise _UndatedHoldings(entry["undated"])
        holds = object_symbol_dates(entry, int(entry["version"]))
        if not entry.get("symbols") and not entry.get("event_dates"):
            holds = {symbol: [date] for symbol in index.symbols}
        found.append(holds)
    return found or None


class _UndatedHoldings(Exception):
    """The object holds lines of symbols no validation has dated (runs of chosen symbols only): which
    symbol-days they belong to is unknown, so the object is kept."""

    def __init__(self, symbols: list[str]) -> None:
        super().__init__(
            f"it holds lines of {', '.join(symbols[:5])}{' ...' if len(symbols) > 5 else ''} that no "
            "validation has dated yet (only runs of chosen symbols read it); a run of the whole date "
            "dates them"
        )


def cleanup_day(
    instance: dg.DagsterInstance,
    store: ObjectStore,
    market: Market,
    streams: list[str] | tuple[str, ...],
    date: str,
    symbols: list[str] | tuple[str, ...],
    *,
    retention_days: float = 0.0,
    now: dt.datetime | None = None,
    gate_of: GateLookup | None = None,
) -> DayCleanup:
    """The gated cleanup of ``symbols`` on ``date`` in batches; every rule of the module docstring, plus:

    - sizes and etags are checked against one LIST per raw folder the manifests name (not a HEAD per object);
    - deletes go through ``delete_many`` (S3 ``DeleteObjects``, 1,000 keys a request);
    - a layout-2 object (every symbol of a stream flush) is deleted only when every (symbol, event date) it
      holds — from the stream-day reports of ``validated/`` — has a verified merge (the gate above) whose
      manifest lists it with the same size and etag; a symbol filter (``--symbols``) narrows which
      symbol-days are cleaned, never this condition.
    """
    now = now or dt.datetime.now(dt.UTC)
    gates: dict[tuple[str, str], MergeGate] = {}
    day_records: dict[str, DayRecords] = {}  # read once per date for all its symbols' gates

    def gate(symbol: str, day: str) -> MergeGate:
        if (symbol, day) not in gates:
            if gate_of:
                gates[(symbol, day)] = gate_of(symbol, day)
            else:
                if day not in day_records:
                    day_records[day] = DayRecords.read(instance, day)
                gates[(symbol, day)] = merge_gate(instance, store, market, symbol, day, day_records[day])
        return gates[(symbol, day)]

    def held(g: MergeGate) -> bool:
        return bool(
            g.merged_at and retention_days > 0 and now < g.merged_at + dt.timedelta(days=retention_days)
        )

    indexes: dict[tuple[str, str], dict[str, tuple[int, str | None]]] = {}

    retained: set[tuple[str, str]] = set()

    def listed_in(symbol: str, day: str) -> dict[str, tuple[int, str | None]]:
        """key -> (size, etag) of the symbol-day's manifest if its gate passes, else empty (a dict: a v2
        object is checked against hundreds)."""
        if (symbol, day) not in indexes:
            g = gate(symbol, day)
            indexes[(symbol, day)] = {o.key: (o.size, o.etag) for o in g.objects} if g.ok else {}
            if g.ok and held(g):
                retained.add((symbol, day))
        return indexes[(symbol, day)]

    out = DayCleanup(date)
    owners: dict[str, list[str]] = defaultdict(list)  # candidate key -> requested symbols listing it
    manifest_entry: dict[str, ManifestObject] = {}
    for symbol in symbols:
        g = gate(symbol, date)
        result = CleanupResult(date, symbol, g.ok, g.reason)
        out.results[symbol] = result
        if not g.ok:
            continue
        if held(g):
            result.kept_retention = sorted(o.key for o in g.objects)
            continue
        for obj in g.objects:
            if not _belongs_to(obj.key, obj.event_dates, date):
                result.left_to_other_date.append(obj.key)
                continue
            owners[obj.key].append(symbol)
            manifest_entry.setdefault(obj.key, obj)

    # one LIST per folder: the current size and etag of every candidate (and what else lies there)
    folders = sorted({key.rsplit("/", 1)[0] + "/" for key in owners})
    current: dict[str, ObjectInfo] = {}
    for folder in folders:
        out.requests["LIST"] = out.requests.get("LIST", 0) + 1
        for listed in store.list(folder):
            current[listed.key] = listed

    reports: dict[tuple[str, str], _StreamDayIndex | None] = {}
    to_delete: list[str] = []
    for key in sorted(owners):
        obj = manifest_entry[key]
        listed_by = owners[key]
        info = current.get(key)
        if info is None:
            out.already_absent.append(key)
            for symbol in listed_by:
                out.results[symbol].already_absent.append(key)
            continue
        if info.size != obj.size or (obj.etag is not None and info.etag != obj.etag):
            for symbol in listed_by:
                out.results[symbol].kept_changed.append(key)
            continue
        parsed = RawObjectKey.parse(key)
        holdings: list[dict[str, list[str]]]
        if parsed.layout == 1:
            holdings = [{parsed.symbol or "": list(obj.event_dates or (date,))}]
        else:
            try:
                found = _holdings(store, market, parsed.stream, obj, reports)
            except _UndatedHoldings as exc:
                out.kept_holdings_pending[key] = str(exc)
                for symbol in listed_by:
                    out.results[symbol].kept_other_date_pending.append(key)
                continue
            if found is None:
                out.kept_holdings_pending[key] = "no stream-day report lists it"
                for symbol in listed_by:
                    out.results[symbol].kept_other_date_pending.append(key)
                continue
            holdings = found
        # every (symbol, date) it holds must list it as it is now (a v2 object: hundreds of pairs, a tight
        # loop)
        as_listed = (info.size, info.etag)
        why = ""
        for held_by in holdings:
            for symbol, days in held_by.items():
                for day in days:
                    index = indexes.get((symbol, day))
                    if index is None:
                        index = listed_in(symbol, day)
                    if index.get(key) != as_listed:
                        g = gate(symbol, day)
                        why = f"{symbol} {day}: {g.reason if not g.ok else 'its manifest does not list it'}"
                        break
                    if (symbol, day) in retained:
                        why = f"{symbol} {day}: under retention"
                        break
                if why:
                    break
            if why:
                break
        if why:
            out.kept_holdings_pending[key] = why
            for symbol in listed_by:
                out.results[symbol].kept_other_date_pending.append(key)
            continue
        to_delete.append(key)
        for symbol in listed_by:
            out.results[symbol].deleted.append(key)

    if to_delete:
        deleted = store.delete_many(to_delete)
        out.requests["DELETE_BATCH"] = deleted.requests
        out.deleted = deleted.deleted
        out.delete_errors = deleted.errors
        for key in deleted.errors:
            for symbol in owners[key]:
                result = out.results[symbol]
                result.deleted.remove(key)
                result.kept_changed.append(key)
    # later arrivals: objects in the cleaned folders that no requested manifest lists (a re-merge is due)
    listed_anywhere = {o.key for g in gates.values() for o in g.objects}
    for key in sorted(current):
        if key in listed_anywhere:
            continue
        try:
            parsed = RawObjectKey.parse(key)
        except RawFormatError:
            continue
        if parsed.date != date:
            continue
        out.later_arrivals.append(key)
        if parsed.symbol in out.results:
            out.results[parsed.symbol].kept_later_arrivals.append(key)
    return out
