# emailsync — `make demo` runs the whole pipeline locally; `make test` runs the suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
# Prefect runs offline: no telemetry, no update checks.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup demo test test-unit test-integration test-browser bench soak lint fmt clean web browser-deps deploy

# The ONNX files of the default (onnx) enrichment backend, exported from the packaged weights: fp32 and
# the default precision made from it. Checked on every setup (quick when up to date), so a checkout
# whose default recipe changed gets its file without a reinstall.
setup: $(STAMP)
	$(PY) -m emailsync.enrichment.onnx_export

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel on this machine's disk (unpinned pulls GBs of CUDA packages)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup web
	$(VENV)/bin/emailsync demo

test: setup web browser-deps
	$(PY) -m pytest -q -ra

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup
	$(PY) -m pytest -q tests/integration

test-browser: setup web browser-deps
	$(PY) -m pytest -q -ra -m browser tests/integration

bench: setup
	$(PY) -m bench.run

# Production deploy against PREFECT_API_URL: both deployments of prefect.yaml (EMAILSYNC_HOME = the
# checkout's path on the workers), then the automation on failed / crashed email-sync runs.
deploy: setup
	$(VENV)/bin/prefect --no-prompt deploy --all
	$(VENV)/bin/emailsync automations install

# The soaks (tests marked `soak`, which make test leaves out; a smaller version of each stays there):
# ten simultaneous `emailsync sync`, the sweep over a larger fleet, and the mirror's model-based test
# over many seeds (make test runs a few): SOAK_SEEDS=200 make soak
SOAK_SEEDS ?= 50
soak: setup
	SOAK_SEEDS=$(SOAK_SEEDS) $(PY) -m pytest -q -ra -m soak tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

web:
	@if [ -f web/package.json ]; then $(MAKE) -C web build; fi

# The browser tests drive Debian's chromium (Playwright's own browser downloads are not reachable).
# Installed once; without it (no root, no apt) the browser tests skip, or fail under CI.
CHROMIUM ?= /usr/bin/chromium
browser-deps:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-dejavu-core >/dev/null; } || echo "warning: chromium could not be installed"; }

clean:
	rm -rf $(VENV) web/node_modules web/dist .pytest_cache
