# The two commands a new user needs: `make demo` (the main job, against the sandbox) and `make test`.
# Everything is installed by these targets on a fresh machine: a virtualenv in .venv with the package
# and its test dependencies, and (as root) the system packages the tests need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW_HOME ?= $(CURDIR)/.airflow-home
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
# The oldest Airflow this provider supports (pyproject: apache-airflow>=3.2.0); `make test-oldest`
# runs the unit and integration tests against it in a second virtualenv.
AIRFLOW_OLDEST ?= 3.2.0
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed-$(AIRFLOW_OLDEST)
OLDEST_TESTS ?= tests/hooks tests/test_api.py tests/test_transport.py tests/transport tests/test_storage.py \
	tests/test_settings.py tests/test_provider_info.py tests/operators tests/links tests/sensors/test_quamotion.py \
	tests/triggers tests/export/test_units.py tests/export/test_window.py tests/security/test_trust_boundary.py

.PHONY: help venv system-deps lint typecheck unit test test-oldest test-deploy demo bench docs build clean

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

test: venv system-deps lint typecheck docs build test-oldest test-deploy
	$(BIN)/pytest -q -m "not deploy"

$(OLDEST_STAMP): pyproject.toml
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip uv
	$(OLDEST_VENV)/bin/uv pip install -q --python $(OLDEST_VENV)/bin/python "apache-airflow==$(AIRFLOW_OLDEST)" -e ".[test]"
	touch $(OLDEST_STAMP)

# A production-shaped Airflow on loopback (PostgreSQL, Redis, api-server, scheduler, dag-processor,
# triggerer, Celery worker, the sandbox), started and stopped by tests/deploy; then a check that
# nothing it started is still running.
test-deploy: venv system-deps
	$(BIN)/pytest -q -p no:cacheprovider -m deploy tests/deploy; status=$$?; \
	$(BIN)/python -m tests.deploy.leftovers || status=1; exit $$status

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -c "import airflow; assert airflow.__version__ == '$(AIRFLOW_OLDEST)', airflow.__version__"
	$(OLDEST_VENV)/bin/pytest -q -p no:cacheprovider $(OLDEST_TESTS)

demo: venv
	$(BIN)/python scripts/demo.py

bench: venv
	$(BIN)/python -m bench

docs: venv
	$(BIN)/mkdocs build --strict

build: venv
	rm -rf dist && $(BIN)/python -m build -q && $(BIN)/twine check dist/*

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .airflow-home .demo site dist build .pytest_cache .mypy_cache .ruff_cache
