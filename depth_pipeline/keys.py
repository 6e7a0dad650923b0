"""Asset keys and run tags shared by assets, sensors, jobs and the CLI."""

from __future__ import annotations

from typing import Final

import dagster as dg

MERGED_DEPTH = dg.AssetKey("merged_depth")
BOOK_TOP25_1S = dg.AssetKey("book_top25_1s")
QUALITY_REPORT = dg.AssetKey("depth_quality_report")

# Metadata keys of a merged_depth materialization that the cleanup gate relies on.
META_BLOCKING_PASSED: Final = "blocking_checks_passed"
META_MANIFEST_KEY: Final = "manifest_key"
META_MANIFEST_ETAG: Final = "manifest_etag"
META_NO_RAW_DATA: Final = "no_raw_data"
# the day's machine-readable outcome per symbol (JSON: symbol -> depth_pipeline.outcomes.SymbolRecord); the
# cleanup gate, the sensors and the derived assets read it
META_SYMBOL_OUTCOMES = "symbol_outcomes_json"

TAG_KIND = "depth/kind"  # merge | remerge | cleanup | backfill
TAG_LATE_OBJECTS = "depth/late_objects"
TAG_DATE = "depth/date"  # every run of a date carries it: the run queue allows one run per value
TAG_SYMBOLS = "depth/symbols"  # the symbols a run was asked for ("*": every symbol of the day)


def raw_key(stream: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", stream])


def validated_key(stream: str) -> dg.AssetKey:
    return dg.AssetKey(["validated", stream])
