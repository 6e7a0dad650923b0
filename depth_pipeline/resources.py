"""Dagster resources: the object store and the stream/symbol/market settings, from the environment."""

from __future__ import annotations

import dagster as dg

from depth_core.names import Market, validate_market
from depth_pipeline.config import PipelineConfig
from depth_store import ObjectStore, open_store


class DepthStoreResource(dg.ConfigurableResource):
    """The object store at ``DEPTH_STORE_URL``: raw objects under ``raw/``, outputs beside them."""

    url: str

    def open(self) -> ObjectStore:
        return open_store(self.url)


class DepthSettingsResource(dg.ConfigurableResource):
    """Which collector streams are merged, for which symbols, on which market."""

    streams: list[str]
    symbols: list[str]
    market: str = "spot"

    @property
    def market_name(self) -> Market:
        return validate_market(self.market)


def build_resources(config: PipelineConfig) -> dict[str, dg.ConfigurableResource]:
    """The resources every asset, op and sensor of the code location uses, keyed by parameter name."""
    return {
        "store": DepthStoreResource(url=config.store_url),
        "settings": DepthSettingsResource(
            streams=list(config.streams), symbols=list(config.symbols), market=config.market
        ),
    }
