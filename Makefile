# Two commands on a fresh machine: `make demo` (or `make run`) and `make test`.
# Each creates the virtualenv and installs what it needs by itself.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANAGE := $(BIN)/python manage.py

.PHONY: venv run demo test lint format check clean bench

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# The test OpenID Connect provider (oidc-provider on the machine's Node.js), reinstalled when its lock changes.
OIDC_PROVIDER := tests/oidc_provider
OIDC_STAMP := $(OIDC_PROVIDER)/node_modules/.installed

$(OIDC_STAMP): $(OIDC_PROVIDER)/package-lock.json
	cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund
	touch $(OIDC_STAMP)

## Migrate the control database and serve the admin and API on HOST:PORT (default 127.0.0.1:8000).
run: $(STAMP)
	$(MANAGE) migrate --noinput
	$(MANAGE) serve

## The demo fleet comes with the migration engine; for now it is the same as `run`.
demo: run

## Lint, format check and the whole test suite (an embedded PostgreSQL is started for it).
test: $(STAMP) $(OIDC_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MANAGE) check_migration_sets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache staticfiles

## Benchmarks (embedded PostgreSQL; figures printed and written to bench/results/).
bench: $(STAMP) $(OIDC_STAMP)
	$(BIN)/python bench/fleet_migrate.py
	$(BIN)/python bench/auth_overhead.py
