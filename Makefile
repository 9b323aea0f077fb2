# The two commands a new user needs: `make demo` (the main job, against the sandbox) and `make test`.
# Everything is installed by these targets on a fresh machine: a virtualenv in .venv with the package
# and its test dependencies, and (as root) the system packages the tests need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW_HOME ?= $(CURDIR)/.airflow-home
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

.PHONY: help venv system-deps lint typecheck unit test demo bench docs build clean

help:
	@echo "make demo   - run the example DAGs against the local sandbox (sets everything up)"
	@echo "make test   - lint, type-check and run every test (sets everything up)"
	@echo "make bench  - benchmarks against the sandbox; writes bench/results/latest.json"
	@echo "make docs   - build the docs strictly into site/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/system-deps.sh chromium fonts-dejavu-core postgresql

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m "not e2e"

test: venv system-deps lint typecheck docs
	$(BIN)/pytest -q

demo: venv
	$(BIN)/python scripts/demo.py

bench: venv
	$(BIN)/python -m bench

docs: venv
	$(BIN)/mkdocs build --strict

build: venv
	rm -rf dist && $(BIN)/python -m build && $(BIN)/twine check dist/*

clean:
	rm -rf $(VENV) .airflow-home .demo site dist build .pytest_cache .mypy_cache .ruff_cache
