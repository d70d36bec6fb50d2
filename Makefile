# The README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MLOPS_HOME ?= $(CURDIR)/.mlops
export DAGSTER_HOME ?= $(MLOPS_HOME)/dagster
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install demo demo-real test lint dev serve mlflow-ui features-lock bench clean services services-stop bench-load backup restore

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: pip takes the CPU wheel from local disk; a looser pin pulls CUDA builds
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

## The demo: set up MLOPS_HOME and materialize the whole asset graph on generated data.
demo: install
	$(BIN)/mlops init
	$(BIN)/python -m mlops_assets.defs.demo
	$(BIN)/mlops status

## The demo on real prices: the S&P 500 and NASDAQ composite, daily 1999-2018, that ship with the `arch`
## package, written as a folder of Yahoo Finance exports and read by the local loader like any user's folder.
REAL_PRICES ?= $(MLOPS_HOME)/real-prices
demo-real: install
	$(BIN)/mlops data sample-real --out $(REAL_PRICES)
	DATA_LOADER_TYPE=local DATA_SOURCE_PATH=$(REAL_PRICES) $(MAKE) --no-print-directory demo

## The test suite (CI runs this through .ci/run). The production tests (mlops_assets_tests/production) run
## against PostgreSQL and an MLflow server on loopback: `services` starts them first (idempotent, about a
## second when they already run) and writes their URLs to .ci/services.env, which those tests read.
## The venv's bin on PATH, as in an activated shell (tools started by tests, e.g. `mlflow models serve`, run uvicorn).
test: export PATH := $(CURDIR)/$(BIN):$(PATH)
test: install lint services
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

## The rules a pull request must hold: ruff (the selection in pyproject.toml) and the import contracts
## (import-linter: the house rule, serving never imports the Dagster layer, the domain layers).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

## PostgreSQL (Debian's package, a test cluster) and an MLflow tracking server for the production tests.
services: install
	bash .ci/services.sh

services-stop:
	bash .ci/services.sh stop

## The Dagster UI with daemon (schedules, sensors), history kept in $(DAGSTER_HOME).
dev: install
	$(BIN)/mlops init
	$(BIN)/dagster dev -w workspace.yaml

## Both serving apps: inference on :8080, management API on :8081.
serve: install
	$(BIN)/mlops serve

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLOPS_HOME)/mlflow.db --default-artifact-root $(MLOPS_HOME)/mlartifacts --port 5000

features-lock: install
	$(BIN)/mlops features lock

bench: install
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/drift.py

## Load test: 500 req/s for 60 s against two workers while the model is promoted ten times.
bench-load: install
	$(BIN)/python benchmarks/load_promotion.py

## A consistent archive of MLOPS_HOME (make backup BACKUP=/path/file.tar.gz), and its restore into an
## empty MLOPS_HOME (make restore BACKUP=...). See docs/backup.md.
BACKUP ?= mlops-backup-$(shell date -u +%Y%m%dT%H%M%SZ).tar.gz
backup: install
	$(BIN)/mlops backup --out $(BACKUP)

restore: install
	$(BIN)/mlops restore $(BACKUP)

clean:
	rm -rf $(MLOPS_HOME)
