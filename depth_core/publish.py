"""Publishing a merged symbol-day: a new version is staged, checked, and made current by its manifest.

Why: a merge must never damage the day analysts already read. So a merge writes its Parquet under
``staging/`` (outside ``merged/``, so no glob of ``merged/`` ever sees an unpublished version), runs its
checks while writing, and only then publishes:

1. refuse if a blocking check failed, or if the new version is smaller than the published one (it lacks
   update ids the published version covers, or a stream it used) unless an operator allows it
   (``allow_shrink``, recorded in the manifest);
2. copy the staged files into the day folder under version-unique names (server-side on S3, a hard link
   locally);
3. write the coverage manifest (the pointer: it names the version's files and its end state)
   *conditionally* on the etag of the manifest the merge started from (compare-and-swap; create-if-absent
   for a first publish) — a racing merge of the same day that published meanwhile makes this fail, and
   the loser withdraws its copies;
4. delete the previous version's files and end state, and any orphan left by a crashed publish (an
   unlisted file of a version that started before this merge: it can never be published any more).

Window: between step 2 and step 4 (seconds) a plain glob of the day folder sees both versions' rows;
the manifest's ``files`` is exact at every instant (docs/merge.md §4). A merge that fails or is refused
leaves the published files, manifest and end state byte-identical.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from depth_core.idline import subtract_ranges, union_ranges
from depth_core.layout import merged_day_prefix, merged_manifest_key
from depth_core.names import Market
from depth_store.base import ObjectInfo, ObjectStore, StoreError

log = logging.getLogger("depth_core.publish")

ORPHAN_GRACE = dt.timedelta(seconds=5)
"""Clock skew allowed between pipeline hosts when retiring orphans (see :func:`publish_version`)."""
_VERSION_FILE_RE = re.compile(r"/part-(\d{8}T\d{6}Z)-[0-9a-f]{8}-\d{5}\.parquet$")
MAX_LISTED = 20


class PublishError(StoreError):
    """The published version of a day is inconsistent (a manifest naming state that is gone)."""


def new_version_id(now: dt.datetime | None = None) -> str:
    """Run-unique, sorting by creation time: ``20261206T131500Z-1a2b3c4d``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass
class PublishedDay:
    """The currently published manifest of a symbol-day (None: never published) and its etag."""

    manifest: dict[str, Any] | None
    etag: str | None


def read_published(store: ObjectStore, market: Market, symbol: str, date: str) -> PublishedDay:
    """The published manifest and the etag to compare-and-swap against.

    HEAD then GET: if another publish lands in between, the etag is the older one and the final
    compare-and-swap is refused, so a stale read can never be published over.
    """
    key = merged_manifest_key(market, symbol, date)
    info = store.head(key)
    if info is None:
        return PublishedDay(None, None)
    try:
        manifest = orjson.loads(store.get_bytes(key))
    except orjson.JSONDecodeError as exc:
        raise PublishError(f"the published manifest {key} is not JSON ({exc}): repair or remove it") from exc
    return PublishedDay(manifest, info.etag)


def manifest_id_ranges(manifest: dict[str, Any], *, exact_only: bool = False) -> list[tuple[int, int]]:
    """Update ids a manifest's rows cover, as a disjoint union of ``(lo, hi]`` ranges.

    From ``covered`` (inclusive ``first_id..last_id`` runs; ``exact_only``: only runs whose book is exact,
    which every run of a manifest without ``book_exact`` was); an image covers its own id.
    """
    los: list[int] = []
    his: list[int] = []
    for c in manifest.get("covered", []) or []:
        if exact_only and not c.get("book_exact", True):
            continue
        los.append(int(c["first_id"]) - 1)
        his.append(int(c["last_id"]))
    for img in manifest.get("images", []) or []:
        uid = img.get("update_id")
        if uid is not None:
            los.append(int(uid) - 1)
            his.append(int(uid))
    return union_ranges(np.array(los, np.int64), np.array(his, np.int64))


def streams_used(manifest: dict[str, Any]) -> set[str]:
    """Streams whose events were an input of a manifest's version (whether or not the merge took any:
    a stream that only duplicated the others still vouches for those ids)."""
    return {
        name for name, st in (manifest.get("per_stream") or {}).items() if int(st.get("events", 0) or 0) > 0
    }


@dataclass
class ShrinkFinding:
    """What publishing the new version would lose against the published one (empty: nothing)."""

    lost_ranges: list[tuple[int, int]] = field(default_factory=list)  # (lo, hi]: ids lo+1..hi
    lost_streams: list[str] = field(default_factory=list)
    # ids still present but whose book would no longer be exact (e.g. a re-merge that cannot anchor)
    lost_exact_ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def lost_ids(self) -> int:
        return sum(hi - lo for lo, hi in self.lost_ranges)

    @property
    def lost_exact_ids(self) -> int:
        return sum(hi - lo for lo, hi in self.lost_exact_ranges)

    def __bool__(self) -> bool:
        return bool(self.lost_ranges or self.lost_streams or self.lost_exact_ranges)

    def describe(self) -> str:
        parts = []
        if self.lost_ranges:
            shown = ", ".join(f"{lo + 1}..{hi}" for lo, hi in self.lost_ranges[:5])
            more = f" and {len(self.lost_ranges) - 5} more ranges" if len(self.lost_ranges) > 5 else ""
            parts.append(f"{self.lost_ids} update ids the published version covers ({shown}{more})")
        if self.lost_streams:
            parts.append(f"stream(s) {', '.join(self.lost_streams)} that the published version used")
        if self.lost_exact_ranges:
            shown = ", ".join(f"{lo + 1}..{hi}" for lo, hi in self.lost_exact_ranges[:5])
            parts.append(
                f"the exact book at {self.lost_exact_ids} update ids ({shown}; kept only as book_exact "
                "false rows)"
            )
        return "it would lose " + " and ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lost_ids": self.lost_ids,
            "lost_ranges": [[lo + 1, hi] for lo, hi in self.lost_ranges[:MAX_LISTED]],
            "lost_range_count": len(self.lost_ranges),
            "lost_streams": self.lost_streams,
            "lost_exact_ids": self.lost_exact_ids,
            "lost_exact_ranges": [[lo + 1, hi] for lo, hi in self.lost_exact_ranges[:MAX_LISTED]],
        }


def shrink_against(published: dict[str, Any], new: dict[str, Any]) -> ShrinkFinding:
    """Ids and streams of the published manifest that the new one lacks."""
    lost = subtract_ranges(manifest_id_ranges(published), manifest_id_ranges(new))
    lost_streams = sorted(streams_used(published) - streams_used(new))
    lost_exact = subtract_ranges(
        subtract_ranges(
            manifest_id_ranges(published, exact_only=True), manifest_id_ranges(new, exact_only=True)
        ),
        lost,
    )
    return ShrinkFinding(lost, lost_streams, lost_exact)


@dataclass
class PublishOutcome:
    published: bool
    manifest_etag: str | None = None
    refused_reason: str | None = None
    removed: list[str] = field(default_factory=list)


def _delete_quietly(store: ObjectStore, keys: list[str]) -> list[str]:
    """Best-effort removal of files no manifest names (a failure leaves an orphan the next publish clears)."""
    removed = []
    for key in keys:
        try:
            store.delete(key)
            removed.append(key)
        except StoreError as exc:
            log.warning("could not delete %s (%s); the next publish of this day removes it", key, exc)
    return removed


def publish_version(
    store: ObjectStore,
    market: Market,
    symbol: str,
    date: str,
    *,
    staged: list[tuple[str, str]],
    manifest: dict[str, Any],
    previous: PublishedDay,
    version_state_keys: list[str],
    started_at: dt.datetime,
) -> PublishOutcome:
    """Copy ``staged`` (staging key, published key) into place, then swap the manifest; see the module doc.

    ``manifest`` already names the published keys. On a lost race the copies are withdrawn and the
    outcome says so; the caller then discards the staged files and the version's state.
    """
    manifest_key = merged_manifest_key(market, symbol, date)
    copied: list[str] = []
    try:
        for src, dst in staged:
            store.copy(src, dst)
            copied.append(dst)
    except BaseException:
        _delete_quietly(store, copied + list(version_state_keys))  # no manifest names them yet
        raise
    # a failure of the manifest write below may have landed it (a lost response): the copies then stay
    # (the manifest may name them); if it did not land they are orphans the next publish removes
    body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    info: ObjectInfo | None
    if previous.etag is None:
        info = store.put_bytes_if_absent(manifest_key, body)
    else:
        info = store.put_bytes_if_match(manifest_key, body, previous.etag)
    if info is None:
        _delete_quietly(store, copied)
        return PublishOutcome(
            False,
            None,
            "another merge of this symbol-day published a version while this one "
            "ran (the manifest changed since it was read): nothing of this run was published; "
            "re-run to merge over the new version",
        )
    # the pointer moved: the previous version's files and state, and orphans of crashed publishes, go
    new_files = set(manifest.get("files", []))
    old_files = set((previous.manifest or {}).get("files", [])) - new_files
    old_state = _state_keys(previous.manifest) - set(version_state_keys)
    orphans = [
        i.key
        for i in store.list(merged_day_prefix(market, symbol, date))
        if i.key != manifest_key
        and i.key not in new_files
        and i.key not in old_files
        and _is_orphan(i, started_at)
    ]
    removed = _delete_quietly(store, sorted(old_files) + sorted(old_state) + orphans)
    return PublishOutcome(True, info.etag, None, removed)


def _is_orphan(info: ObjectInfo, started_at: dt.datetime) -> bool:
    """An unlisted file of a version that started before this merge: that merge can never publish any more.

    Once this merge's compare-and-swap succeeded, every merge that read the manifest before it (all that
    started before this one did) is refused at its own compare-and-swap; its copies are left-overs of a
    crash or about to be withdrawn. A version's start time is in its name; other unlisted files go by
    their age. ``ORPHAN_GRACE`` absorbs clock skew between hosts.
    """
    cutoff = started_at - ORPHAN_GRACE
    m = _VERSION_FILE_RE.search(info.key)
    if m is not None:
        return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC) < cutoff
    return info.last_modified < cutoff


def _state_keys(manifest: dict[str, Any] | None) -> set[str]:
    if not manifest:
        return set()
    end_state = manifest.get("end_state") or {}
    key = end_state.get("book_key")
    return {str(key)} if key else set()
