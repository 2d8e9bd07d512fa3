# The README's commands: `make run` (the main job on the embedded default) and `make test`.
# Both depend on `setup`, which is idempotent and quick when nothing changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
MODELS := models
MODEL_SOURCES := $(wildcard harness/model/*.py)

.PHONY: setup run test lint models collector prometheus clean compose-plugin images-offline

setup: $(STAMPS)/venv $(MODELS)/.built

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# The reference models are built from code: rebuilt only when the builder changes.
$(MODELS)/.built: $(STAMPS)/venv $(MODEL_SOURCES)
	$(BIN)/edgeharness model build --out $(MODELS)
	@touch $@

models: $(MODELS)/.built

# The native OpenTelemetry Collector, built with the official builder at the pinned version (needs Go);
# reused while collector/versions.env, the manifest and the script are unchanged.
collector:
	collector/build.sh

# Prometheus 3 and promtool at the version compose pins, built from the Prometheus Go module (needs Go)
# into collector/dist/prometheus/; reused while collector/versions.env and the script are unchanged.
prometheus:
	collector/build-prometheus.sh

# Docker Compose v5.6.0 as the docker CLI plugin, built from its Go module (needs Go); cached in .cache/compose.
compose-plugin:
	scripts/build-compose.sh

# Every image compose.offline.yaml runs, built on this machine under local names (needs a running engine:
# scripts/engine.sh start; Go; root for the Debian base). Reuses what is already built.
images-offline: collector
	scripts/images-offline.sh

run: setup
	$(BIN)/edgeharness run --out runs/latest

lint: $(STAMPS)/venv
	$(BIN)/ruff check harness tests loadtests dashboards
	$(BIN)/ruff format --check harness tests loadtests dashboards

test: setup
	$(BIN)/ruff check harness tests loadtests dashboards
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(STAMPS) $(MODELS) runs
