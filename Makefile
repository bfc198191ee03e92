# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export DAGSTER_DISABLE_TELEMETRY := true

.PHONY: install demo test lint ui clean

install: $(STAMP)

# uv resolves and installs the pinned set in seconds; pip installs uv itself from PyPI.
$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rrr demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .

# Dagster UI on 127.0.0.1:3000 and MLflow UI on 127.0.0.1:5000; Ctrl-C stops both.
ui: $(STAMP)
	$(BIN)/rrr ui

clean:
	$(BIN)/rrr services down || true
	rm -rf $(VENV) .rrr
