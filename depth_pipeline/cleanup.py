"""The gated cleanup: delete raw objects only once a verified merge has consumed them.

The seed's "only if successful, delete the temporary objects", made safe:

- the symbol-day's latest ``merged_depth`` materialization must come from a run that **succeeded** with
  every **blocking check passed**, no later merge attempt may have failed or still be running, and the
  coverage manifest in the store must be the very one that run wrote (same etag) — otherwise nothing of
  that symbol-day is deleted and the reason is returned;
- only objects **listed in that manifest** are deleted, and only while their size and etag still match;
  anything that arrived later is kept for the re-merge it triggers;
- an object whose events span two dates is deleted only once every date it holds has such a merge that
  lists it;
- ``retention_days`` keeps merged raw objects that long after the merge;
- deleting is idempotent (an absent object counts as done), and the manifest is never changed, so a
  cleanup that crashed half-way is simply run again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from depth_core.names import Market
from depth_core.raw_format import RawFormatError, RawObjectKey, stream_day_prefix
from depth_core.schema import merged_manifest_key
from depth_pipeline.keys import MERGED_DEPTH, META_BLOCKING_PASSED, META_MANIFEST_ETAG, TAG_KIND
from depth_pipeline.partitions import partition_key
from depth_store import ObjectStore


@dataclass(frozen=True)
class ManifestObject:
    """One raw object a merge consumed: its key, size, etag and the event dates it holds."""

    key: str
    size: int
    etag: str | None
    event_dates: tuple[str, ...]


def parse_manifest_objects(manifest: dict[str, Any]) -> list[ManifestObject]:
    """The raw objects listed in a coverage manifest (``raw_objects``: key, size, etag, event_dates)."""
    entries = manifest.get("raw_objects")
    if entries is None:
        entries = manifest.get("objects", [])
    out: list[ManifestObject] = []
    for entry in entries:
        dates = entry.get("event_dates") or entry.get("dates") or []
        out.append(
            ManifestObject(
                key=str(entry["key"]),
                size=int(entry["size"]),
                etag=entry.get("etag"),
                event_dates=tuple(str(d) for d in dates),
            )
        )
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


def _latest_merge_attempt(instance: dg.DagsterInstance, pk: str) -> dg.DagsterRun | None:
    """The newest run of this partition that targeted ``merged_depth`` (cleanup runs are not attempts)."""
    for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": pk}), limit=50):
        if run.tags.get(TAG_KIND) == "cleanup":
            continue
        if run.asset_selection and MERGED_DEPTH not in run.asset_selection:  # empty: the whole job
            continue
        return run
    return None


def merge_gate(
    instance: dg.DagsterInstance, store: ObjectStore, market: Market, symbol: str, date: str
) -> MergeGate:
    """Check the latest recorded merge of ``symbol`` on ``date`` (see the module docstring)."""
    pk = partition_key(date, symbol)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=MERGED_DEPTH, asset_partitions=[str(pk)]), limit=1
    ).records
    if not records:
        return MergeGate(date, symbol, False, f"no merge of {symbol} {date} is recorded")
    entry = records[0].event_log_entry
    run_id = entry.run_id
    merged_at = dt.datetime.fromtimestamp(entry.timestamp, tz=dt.UTC)
    materialization = entry.asset_materialization
    metadata = materialization.metadata if materialization else {}
    run = instance.get_run_by_id(run_id)
    if run is None or run.status != dg.DagsterRunStatus.SUCCESS:
        status = run.status.value if run else "missing"
        return MergeGate(
            date, symbol, False, f"the latest merge of {symbol} {date} (run {run_id}) is {status}", run_id
        )
    latest = _latest_merge_attempt(instance, str(pk))
    if latest is not None and latest.run_id != run_id:
        return MergeGate(
            date,
            symbol,
            False,
            f"a later merge attempt of {symbol} {date} (run {latest.run_id}) is {latest.status.value}",
            run_id,
        )
    blocking = metadata.get(META_BLOCKING_PASSED)
    if blocking is None or not bool(blocking.value):
        return MergeGate(
            date,
            symbol,
            False,
            f"a blocking check failed in the latest merge of {symbol} {date} (run {run_id})",
            run_id,
        )
    manifest_key = merged_manifest_key(market, symbol, date)
    info = store.head(manifest_key)
    recorded_etag = metadata.get(META_MANIFEST_ETAG)
    if info is None:
        return MergeGate(date, symbol, False, f"the coverage manifest {manifest_key} is missing", run_id)
    if recorded_etag is None or str(recorded_etag.value) != (info.etag or ""):
        return MergeGate(
            date,
            symbol,
            False,
            f"the coverage manifest {manifest_key} is not the one run {run_id} recorded",
            run_id,
        )
    try:
        objects = parse_manifest_objects(json.loads(store.get_bytes(manifest_key)))
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
