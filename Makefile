# The front door: `make serve` runs the service, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUM    := $(shell cksum pyproject.toml | cut -d' ' -f1)
# Two stamps: `make serve` installs what the service needs, `make test` (and lint, bench)
# adds the dev extra (pytest, schemathesis, boto3, the SeaweedFS binary, ...).
RUNTIME := $(VENV)/.installed-runtime-$(SUM)
DEV     := $(VENV)/.installed-dev-$(SUM)
# s3fs and DVC (on aiobotocore, which pins an older botocore) get a venv of their own, so
# the dev extra keeps the current boto3; tests/s3clients and tests/readme run them from it.
TOOLS_REQ  := tests/s3clients/aiobotocore-tools.txt
TOOLS_VENV := .venv-aiobotocore
TOOLS      := $(TOOLS_VENV)/.installed-$(shell cksum $(TOOLS_REQ) | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help serve test lint format bench clean browser rclone

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(RUNTIME): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@rm -f $(VENV)/.installed-runtime-* $(VENV)/.installed-dev-*
	@touch $@

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-dev-*
	@touch $@

$(TOOLS): $(TOOLS_REQ)
	@test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet -r $(TOOLS_REQ)
	@rm -f $(TOOLS_VENV)/.installed-*
	@touch $@

serve: $(RUNTIME) ## run the service on local disk + SQLite (port 8083, DATA_DIR=./data)
	$(BIN)/tfstorage serve

test: $(DEV) $(TOOLS) browser rclone ## run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

browser: ## install Debian's chromium for the browser test of /docs (needs root; `make test` runs it)
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }
	@command -v chromium >/dev/null || echo "chromium is missing (as root: apt-get install chromium):" \
		"the browser test of /docs skips (and fails in CI)"

rclone: ## install Debian's rclone for the S3 client tests (needs root; `make test` runs it)
	@command -v rclone >/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rclone; }
	@command -v rclone >/dev/null || echo "rclone is missing (as root: apt-get install rclone):" \
		"the rclone tests of tests/s3clients fail"

lint: $(DEV) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(DEV) ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(DEV) ## benchmarks against this machine's own disk (by hand; takes minutes)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean: ## remove the virtualenvs and caches (not ./data)
	rm -rf $(VENV) $(TOOLS_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
