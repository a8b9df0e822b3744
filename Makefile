# Two commands on a fresh machine: `make demo` (or `make run`) and `make test`.
# Each creates the virtualenv and installs what it needs by itself.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANAGE := $(BIN)/python manage.py

.PHONY: venv run demo test system-deps lock lint format check clean bench bench-control bench-table

# Every package, transitive ones included, at the version and with the hashes of requirements.lock.
$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	touch $(STAMP)

venv: $(STAMP)

## Re-lock after any change to requirements.txt or requirements-dev.txt (tests/infra_site/test_lock.py checks).
## The lock keeps each package's extras (coverage[toml], ...): pip's hash-checking mode then holds a package
## asked for with an extra to its pinned version too, instead of failing on a newer release on the index.
lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --no-strip-extras \
		--custom-compile-command "make lock" --output-file requirements.lock requirements-dev.txt

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

## An embedded PostgreSQL (DEMO_DATA_DIR, default var/demo-pg/) with a migrated demo fleet, an operator, then `serve`.
demo: $(STAMP)
	$(MANAGE) migrate --noinput && $(MANAGE) demo

# Debian packages some tests drive: installed when missing and run as root; else those tests skip (fail if CI=true).
SYSTEM_TOOLS := chromium redis-server

system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing$$missing with apt-get"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing) >/dev/null \
			|| echo "Could not install$$missing: the tests that need them skip (fail under CI=true)"; \
	else \
		echo "Missing$$missing (installing needs root and apt-get): the tests that need them skip (fail under CI=true)"; \
	fi

# The suite's processes (pytest-xdist): each has its own embedded PostgreSQL and control database. Most of a
# run is waiting on servers and queue clusters, not CPU, so more processes than cores pay off (measured on two
# cores: 12 minutes with three, 9 with four).
TEST_WORKERS ?= 4

## Lint, format check, type check and the whole test suite (an embedded PostgreSQL per test process).
test: $(STAMP) $(OIDC_STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy connections health infra_site migrations_runner console
	$(MANAGE) check_migration_sets
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --cov --cov-report=term --cov-fail-under=95 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache .coverage .coverage.* staticfiles

## Benchmarks (embedded PostgreSQL; figures printed and written to bench/results/).
bench: $(STAMP) $(OIDC_STAMP)
	$(BIN)/python bench/fleet_migrate.py
	$(BIN)/python bench/control_plane.py
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/fingerprint.py
	$(BIN)/python bench/api_latency.py
	$(BIN)/python bench/auth_overhead.py
	$(BIN)/python bench/admin_render.py
	$(BIN)/python bench/app_stall.py
	$(BIN)/python bench/readme_table.py

## The control plane's bookkeeping alone: queued lanes against a raw pool, and the execution row's lock waits.
bench-control: $(STAMP)
	$(BIN)/python bench/control_plane.py

## Rewrite the README's benchmark figures from bench/results/*.json (commit the results files with it).
bench-table:
	$(BIN)/python bench/readme_table.py
