"""Turn the core's plain reports into Dagster metadata the UI renders (numbers, markdown, tables)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

PREVIEW_ROWS = 10
MAX_LIST_ITEMS = 20  # longer lists (gaps, segments) are cut to their first items plus a count


def _metadata_value(value: Any) -> dg.MetadataValue | None:
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) > MAX_LIST_ITEMS:
        value = {"count": len(value), "first": list(value[:MAX_LIST_ITEMS])}
    return dg.MetadataValue.json(json.loads(json.dumps(value, default=str)))


def report_metadata(report: Mapping[str, Any], *, skip: Sequence[str] = ()) -> dict[str, dg.MetadataValue]:
    """One metadata entry per report field: scalars as numbers/text, nested values as JSON."""
    out: dict[str, dg.MetadataValue] = {}
    for name, value in report.items():
        if name in skip:
            continue
        converted = _metadata_value(value)
        if converted is not None:
            out[name] = converted
    return out


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A small GitHub-markdown table of ``rows`` (the UI's preview of a frame)."""
    if not rows:
        return "_no rows_"
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def frame_preview(frame: Any, rows: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """Markdown preview of the first rows of a polars frame (or of a list of dicts)."""
    if frame is None:
        return dg.MetadataValue.md("_no preview_")
    if hasattr(frame, "head") and hasattr(frame, "to_dicts"):
        return dg.MetadataValue.md(markdown_table(frame.head(rows).to_dicts(), list(frame.columns)))
    return dg.MetadataValue.md(markdown_table(list(frame)[:rows]))
