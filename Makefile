# The two commands a new user needs: `make demo` (the main job, against the sandbox) and `make test`.
# Everything is installed by these targets on a fresh machine: a virtualenv in .venv with the package
# and its test dependencies, and (as root) the system packages the tests need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW_HOME ?= $(CURDIR)/.airflow-home
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
# Every Airflow 3 minor this provider supports (pyproject: apache-airflow>=3.0.0) but the newest (.venv's),
# each at its oldest patch release: `make test-matrix` runs MATRIX_TESTS (the unit and sandbox integration
# tests) in a virtualenv per version, .venv-airflow-X.Y.Z, installed by .venv's uv with the pins of
# scripts/constraints/airflow-X.Y.Z.txt where that version has some.
AIRFLOW_MINORS ?= 3.0.0 3.1.0 3.2.0
MATRIX_TESTS ?= tests/hooks tests/test_api.py tests/test_transport.py tests/transport tests/test_storage.py \
	tests/test_settings.py tests/test_provider_info.py tests/operators tests/links tests/sensors/test_quamotion.py \
	tests/triggers tests/export/test_units.py tests/export/test_window.py tests/security/test_trust_boundary.py \
	tests/test_compat.py tests/test_runs.py tests/test_auth.py tests/test_uploads.py
MATRIX_STAMPS := $(foreach v,$(AIRFLOW_MINORS),.venv-airflow-$(v)/.installed)

.PHONY: help venv system-deps lint typecheck unit test test-matrix test-deploy demo bench docs build clean

help:
	@echo "make demo   - run the example DAGs against the local sandbox (sets everything up)"
	@echo "make test   - lint, type-check and run every test (sets everything up)"
	@echo "make bench  - benchmarks against the sandbox; writes bench/results/latest.json"
	@echo "make docs   - build the docs strictly into site/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	bash scripts/system-deps.sh libmariadb-dev pkg-config  # mysqlclient (the mysql provider) builds against them
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/system-deps.sh chromium fonts-dejavu-core postgresql mariadb-server nodejs redis-server

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m "not e2e and not deploy"

test: venv system-deps lint typecheck docs build test-matrix test-deploy
	$(BIN)/pytest -q -m "not deploy"

.venv-airflow-%/.installed: pyproject.toml $(wildcard scripts/constraints/airflow-*.txt) | $(STAMP)
	test -x $(@D)/bin/python || $(BIN)/uv venv -q --python $(PYTHON) $(@D)
	$(BIN)/uv pip install -q --python $(@D)/bin/python "apache-airflow==$*" -e ".[test]" \
		$(if $(wildcard scripts/constraints/airflow-$*.txt),--constraint scripts/constraints/airflow-$*.txt)
	touch $@

# A production-shaped Airflow on loopback (PostgreSQL, Redis, api-server, scheduler, dag-processor,
# triggerer, Celery worker, the sandbox), started and stopped by tests/deploy; then a check that
# nothing it started is still running.
test-deploy: venv system-deps
	$(BIN)/pytest -q -p no:cacheprovider -m deploy tests/deploy; status=$$?; \
	$(BIN)/python -m tests.deploy.leftovers || status=1; exit $$status

test-matrix: $(MATRIX_STAMPS)
	set -e; for v in $(AIRFLOW_MINORS); do \
		echo "== Airflow $$v"; \
		.venv-airflow-$$v/bin/python -c "import airflow; assert airflow.__version__ == '$$v', airflow.__version__"; \
		.venv-airflow-$$v/bin/pytest -q -p no:cacheprovider $(MATRIX_TESTS); \
	done

demo: venv
	$(BIN)/python scripts/demo.py

bench: venv
	$(BIN)/python -m bench

docs: venv
	$(BIN)/mkdocs build --strict

build: venv
	rm -rf dist && $(BIN)/python -m build -q && $(BIN)/twine check dist/*

clean:
	rm -rf $(VENV) .venv-airflow-* .airflow-home .demo site dist build .pytest_cache .mypy_cache .ruff_cache
