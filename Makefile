# Every target installs first (idempotent: re-runs only when pyproject.toml or requirements.lock change).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test lint demo ui collect bench sim clean soak universe universe-pipeline defs-snapshot

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip >/dev/null 2>&1 || true
	$(PIP) install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy depth_core depth_store exchange_sim collectors depth_pipeline benchmarks

test: install lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Accept a change of the Dagster definitions' shape (assets, deps, checks and their blocking flag, jobs,
# schedules, sensors): rewrite tests/pipeline/defs_snapshot.json, then review its diff before committing.
defs-snapshot: install
	DEPTH_UPDATE_DEFS_SNAPSHOT=1 $(VENV)/bin/pytest tests/pipeline/test_defs_snapshot.py -q

demo: install
	$(PY) -m depth_pipeline.demo

# Without DAGSTER_HOME set, the UI shows the last `make demo` (its settings are in demo-data/demo.env).
ui: install
	if [ -z "$${DAGSTER_HOME:-}" ] && [ -f demo-data/demo.env ]; then set -a; . ./demo-data/demo.env; set +a; fi ; \
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/dagster_home} ; mkdir -p $$DAGSTER_HOME ; \
	  cp -n dagster.yaml $$DAGSTER_HOME/dagster.yaml ; \
	  DAGSTER_HOME=$$DAGSTER_HOME $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $${PORT:-3000}

SYMBOLS ?= BTCUSDT
collect: install
	$(VENV)/bin/depth-collector --symbols $(SYMBOLS) $(COLLECT_ARGS)

sim: install
	$(VENV)/bin/depth-exchange-sim $(SIM_ARGS)

# The benchmark extra (cryptofeed, for the side-by-side) stays out of the default/dev install.
bench: install
	$(PIP) install -q -c requirements.lock -e '.[dev,bench]'
	$(PY) -m benchmarks.run $(BENCH_ARGS)

soak: install
	$(VENV)/bin/pytest -m soak tests/e2e $(PYTEST_ARGS)

# 400 symbols, two collectors, Binance's weight budget, 8 minutes at the default snapshot depth (issue 12);
# make test runs the same test for 1 minute at depth 100. Figures: artifacts/universe.json
UNIVERSE_SECONDS ?= 480
UNIVERSE_DEPTH ?= 1000
universe: install
	DEPTH_UNIVERSE_SECONDS=$(UNIVERSE_SECONDS) DEPTH_UNIVERSE_DEPTH=$(UNIVERSE_DEPTH) \
	  $(VENV)/bin/pytest -s tests/collectors/test_universe.py $(PYTEST_ARGS)

# Issue 13's done-when in one command (~25-30 min, not part of make test): the 8-minute 400-symbol capture
# (benchmarks/bench_universe_collector.py), then `depth-pipeline run --date D` and `cleanup --date D` on it with
# a fresh DAGSTER_HOME, every published id checked against the simulator's truth; exit 1 if a target is missed.
# UNIVERSE_PIPELINE_ARGS=--reuse-capture re-runs the pipeline part on the last capture. Figures:
# artifacts/universe-pipeline.json
UNIVERSE_PIPELINE_ARGS ?=
universe-pipeline: install
	$(PY) -m benchmarks.bench_universe_pipeline --seconds $(UNIVERSE_SECONDS) $(UNIVERSE_PIPELINE_ARGS)

clean:
	rm -rf $(VENV) artifacts .mypy_cache .ruff_cache .pytest_cache
