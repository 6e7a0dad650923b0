"""Assets derived from ``merged_depth`` (top-25 book at 1 s, data-quality report), when the core has them."""

from __future__ import annotations

import dagster as dg


def build_derived_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """None yet: filled in once ``depth_core.topbook`` and ``depth_core.quality`` land."""
    return []
