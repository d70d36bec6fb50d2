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

.PHONY: install demo test dev serve mlflow-ui features-lock bench clean

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

## The test suite (CI runs this through .ci/run).
test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

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

clean:
	rm -rf $(MLOPS_HOME)
