# emailsync — `make demo` runs the whole pipeline locally; `make test` runs the suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
# Prefect runs offline: no telemetry, no update checks.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup demo test test-unit test-integration test-browser bench lint fmt clean web

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel on this machine's disk (unpinned pulls GBs of CUDA packages)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup web
	$(VENV)/bin/emailsync demo

test: setup web
	$(PY) -m pytest -q -ra

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup
	$(PY) -m pytest -q tests/integration

bench: setup
	$(PY) -m bench.run

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

web:
	@if [ -f web/package.json ]; then $(MAKE) -C web build; fi

clean:
	rm -rf $(VENV) web/node_modules web/dist .pytest_cache
