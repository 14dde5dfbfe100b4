# The front door. `make run` starts the platform; `make test` runs lint, types and every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

# The tests' PostgreSQL (pytest-django creates test_<name>) and Redis database; override to run
# two checkouts' tests side by side.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/cs_platform
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) \
	REDIS_URL=$(TEST_REDIS_URL) \
	DATABASE_CONN_MAX_AGE=0 \
	SECRET_KEY=test-only-secret-key

.PHONY: install run test lint typecheck pytest format bench

install:
	@bash scripts/install.sh

run: install
	@$(PY) manage.py run_embedded

test:
	@bash scripts/install.sh --test
	@bash scripts/ensure_services.sh
	@$(MAKE) --no-print-directory lint typecheck pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy .

pytest:
	$(TEST_ENV) $(VENV)/bin/pytest -p no:cacheprovider

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench:
	$(PY) bench/images.py
