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

# Options for `make run`, e.g. `make run PORT=8001 MODEL_PORT=8082 HOST=0.0.0.0`, and any other
# option of `manage.py run_embedded` in ARGS (`make run ARGS=--no-local-model`). Taken from make's
# command line only: a PORT or HOST in the environment usually means something else.
# (`make run --port 8001` does not work: make takes --port as an option of its own.)
run_option = $(if $(filter command line,$(origin $(1))),$(2) $($(1)))
RUN_ARGS = $(call run_option,HOST,--host) $(call run_option,PORT,--port) \
	$(call run_option,MODEL_PORT,--model-port) $(ARGS)

# The browser tests write their screenshots here (ignored by git); `make screenshots` copies the
# ones the README shows into docs/screenshots/.
TEST_SCREENSHOTS := test-artifacts/screenshots

.PHONY: install run test lint typecheck pytest format bench screenshots

install:
	@bash scripts/install.sh

run: install
	@$(PY) manage.py run_embedded $(RUN_ARGS)

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

screenshots:
	@bash scripts/install.sh --test
	@bash scripts/ensure_services.sh
	rm -rf $(TEST_SCREENSHOTS)
	$(TEST_ENV) $(VENV)/bin/pytest -p no:cacheprovider tests/browser
	@for shown in $$(grep -o 'docs/screenshots/[A-Za-z0-9_.-]*\.png' README.md | sort -u); do \
		cp $(TEST_SCREENSHOTS)/$$(basename $$shown) $$shown && echo "updated $$shown" || exit 1; \
	done

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Replies under load in the production shape (daphne, a Celery worker, PostgreSQL, its own Redis, a
# paced model server), then the OpenAI-compatible gateway against that model server straight, then
# image preprocessing, then retrieval quality and speed on the demo knowledge base, then the reports
# over a generated year (200,000 conversations in a PostgreSQL database of its own, cs_bench_reports);
# each writes its sections of docs/benchmarks.md. BENCH_ARGS=--quick for a short run of the replies
# and the gateway's, BENCH_ARGS_REPORTS=--quick for 20,000 conversations in the reports';
# BENCH_DATABASE_URL overrides the database each creates and drops in turn, BENCH_REDIS_URL the
# Redis the replies and the gateway use.
BENCH_ARGS ?=
BENCH_ARGS_REPORTS ?=
bench: install
	@bash scripts/ensure_services.sh
	$(PY) bench/replies.py $(BENCH_ARGS)
	$(PY) bench/gateway.py $(BENCH_ARGS)
	$(PY) bench/images.py
	$(PY) -m bench.retrieval --write-docs
	$(PY) bench/reports.py $(BENCH_ARGS_REPORTS)
