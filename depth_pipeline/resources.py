"""Dagster resources: the object store, the stream/market settings, the run's choice of symbols, and the
store-backed IO manager that carries step results between the steps of a day run."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from depth_core.layout import STEP_IO_ROOT
from depth_core.names import Market, parse_symbols, validate_market
from depth_pipeline.config import PipelineConfig
from depth_store import ObjectStore, open_store


class DepthStoreResource(dg.ConfigurableResource):
    """The object store at ``DEPTH_STORE_URL``: raw objects under ``raw/``, outputs beside them."""

    url: str

    def open(self) -> ObjectStore:
        return open_store(self.url)


class DepthSettingsResource(dg.ConfigurableResource):
    """Which collector streams are merged, on which market; ``symbols`` (``DEPTH_SYMBOLS``) optionally
    filters the symbols a day's raw data holds (empty: all of them)."""

    streams: list[str]
    symbols: list[str] = []
    market: str = "spot"

    @property
    def market_name(self) -> Market:
        return validate_market(self.market)

    def wants(self, symbol: str) -> bool:
        return not self.symbols or symbol in self.symbols


class DayRunResource(dg.ConfigurableResource):
    """What one run of a day does, set per run (launchpad ``resources.day_run.config``, the CLI, sensors).

    ``symbols``: merge only these symbols of the day (empty: every symbol its raw data holds, filtered
    by ``DEPTH_SYMBOLS``); a named symbol without raw data is reported as such and fails the run.
    ``allow_shrink``: an operator's reason to publish a re-merge that covers fewer update ids or streams
    than the published version (recorded in the manifest); empty refuses such a publish.
    """

    symbols: list[str] = []
    allow_shrink: str = ""

    def requested(self) -> list[str]:
        return parse_symbols(",".join(self.symbols)) if self.symbols else []


class StepIOManager(dg.ConfigurableIOManager):
    """Step results (JSON: symbol batches, per-symbol outcomes) as small objects in the depth store, so
    steps in other processes or pods (multiprocess, ``k8s_job_executor``) read them without a shared disk.
    Asset outputs carry no value (the assets write their data themselves): ``None`` is not stored."""

    url: str

    def _key(self, run_id: str, step_key: str, name: str, mapping_key: str | None = None) -> str:
        """One object per step output; a dynamic output (one per symbol batch) has its mapping key too."""
        safe_step = step_key.replace("[", "=").replace("]", "").replace("/", "_")
        suffix = f"={mapping_key}" if mapping_key else ""
        return f"{STEP_IO_ROOT}/run={run_id}/{safe_step}/{name}{suffix}.json"

    def load_key(self, run_id: str, step_key: str, name: str) -> Any:
        return json.loads(open_store(self.url).get_bytes(self._key(run_id, step_key, name)))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = self._key(*context.get_identifier())
        open_store(self.url).put_bytes(key, json.dumps(obj, sort_keys=True).encode())

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if upstream is None:
            return None
        return json.loads(open_store(self.url).get_bytes(self._key(*upstream.get_identifier())))


def load_step_result(store_url: str, run_id: str, step_key: str, name: str = "result") -> Any:
    """A step's stored result (e.g. the cleanup's per-symbol outcome), or None if it stored none."""
    from depth_store import ObjectNotFoundError

    try:
        return StepIOManager(url=store_url).load_key(run_id, step_key, name)
    except ObjectNotFoundError:
        return None


def _from_env(name: str, value: str, env: Mapping[str, str]) -> str | dg.EnvVar:
    """``dg.EnvVar(name)`` where the configured ``value`` is that variable's (the UI then shows the
    variable, and each run process reads it), else the value itself (a configuration built in code)."""
    return dg.EnvVar(name) if env.get(name) == value else value


def build_resources(config: PipelineConfig, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The resources every asset, op and sensor of the code location uses, keyed by parameter name.

    ``DEPTH_STORE_URL`` and ``DEPTH_MARKET`` are ``dg.EnvVar`` fields when the configuration came from
    them; the streams and the symbol filter shape the asset graph, so they stay values of the config."""
    e = os.environ if env is None else env
    store_url = _from_env("DEPTH_STORE_URL", config.store_url, e)
    return {
        "store": DepthStoreResource(url=store_url),
        "settings": DepthSettingsResource(
            streams=list(config.streams),
            symbols=list(config.symbols),
            market=_from_env("DEPTH_MARKET", config.market, e),
        ),
        "day_run": DayRunResource(),
        "io_manager": StepIOManager(url=store_url),
    }
