# FMU Gateway: `make run` starts it on embedded defaults, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WORKER_CONCURRENCY ?= 2
VAR_DIR_ABS := $(CURDIR)/var

# What the test suite talks to (started by `make services` when down).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/fmugateway
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# Test processes (pytest-xdist). Each takes a database test_<name>_gwN (kept between runs,
# --reuse-db) and three Redis databases counted down from TEST_REDIS_URL's (conftest.py):
# at most 5 processes from /15.
TEST_PROCESSES ?= 2
# `make test-fast` runs on a database of its own, so that it can run beside `make test`.
TEST_FAST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/fmugateway_fast
# What mypy checks (configured in pyproject.toml): the whole project, the engine and
# billing strictly, the rest at mypy's default level.
# It runs with an empty environment: django-stubs imports the settings, which must be
# the embedded defaults whatever the caller exported (DATABASE_URL, STRIPE_*...).
MYPY_TARGETS ?= fmuengine core fmugateway accounts billing simulations bench \
	client/src client/tests conftest.py manage.py

.PHONY: run serve install install-dev lock system-packages services test test-fast lint format bench clean

$(VENV)/.runtime-installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(VENV)/.runtime-installed

install-dev: $(VENV)/.dev-installed

## lock: recompile requirements.txt and requirements-dev.txt from requirements*.in (keeps existing pins).
lock: $(VENV)/.dev-installed
	$(VENV)/bin/uv pip compile --quiet --python $(PY) --custom-compile-command "make lock" \
		requirements.in -o requirements.txt
	$(VENV)/bin/uv pip compile --quiet --python $(PY) --custom-compile-command "make lock" \
		requirements-dev.in -o requirements-dev.txt

## run: install, migrate and start web + worker on the embedded defaults.
run: install serve

serve:
	@$(PY) manage.py migrate --noinput -v0
	@$(PY) manage.py createcachetable
	@$(PY) manage.py collectstatic --noinput -v0
	@echo ""
	@echo "  FMU Gateway is running at http://$(HOST):$(PORT)/"
	@echo "  Create an API key:  $(PY) manage.py create_api_key --email you@example.com --create-user"
	@echo "  Then:               curl -H 'Authorization: Bearer <key>' http://$(HOST):$(PORT)/api/v1/account"
	@echo "  Stop with Ctrl-C."
	@echo ""
	@# The worker gets its own session: a Ctrl-C to the whole group would kill its pool
	@# children under it and hang its shutdown; the trap stops it cleanly instead.
	@# One worker takes every queue here, runs before study chunks (docs/studies.md); on
	@# Fly.io the billing queue (the tasks that call Stripe) has a process group of its own.
	@trap 'kill $$(jobs -p) 2>/dev/null; wait' EXIT INT TERM; \
	setsid $(VENV)/bin/celery -A fmugateway worker -B -Q celery,studies,billing \
		-s $(VAR_DIR_ABS)/celerybeat-schedule \
		--loglevel=INFO --concurrency=$(WORKER_CONCURRENCY) & \
	$(VENV)/bin/gunicorn fmugateway.wsgi -c fmugateway/gunicorn.conf.py --bind $(HOST):$(PORT) & \
	wait -n

## system-packages: what the tests need from Debian (chromium, driven by Playwright, for the
## browser test: never `playwright install`; util-linux's setpriv runs test processes as
## an unprivileged user).
system-packages:
	@missing=""; \
	command -v setpriv >/dev/null || missing="$$missing util-linux"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

## services: start PostgreSQL and Redis if they are down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; pg_isready -h 127.0.0.1 -p 5432
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	@for i in $$(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done; redis-cli -h 127.0.0.1 -p 6379 ping

## test: install, start what the tests need, run the whole suite against PostgreSQL.
test: install-dev system-packages services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=. $(VENV)/bin/lint-imports
	env -i PATH="$$PATH" $(VENV)/bin/mypy $(MYPY_TARGETS)
	DATABASE_URL=$(TEST_DATABASE_URL) TEST_REDIS_URL=$(TEST_REDIS_URL) \
	SECRET_KEY=test-only-secret-key-not-for-production VAR_DIR=$(CURDIR)/var/test \
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist worksteal \
		--basetemp=$(CURDIR)/var/test/pytest-tmp $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing on purpose." >&2; exit 1; fi; \
	exit $$status

## test-fast: the inner loop, in about a minute: the tests that need no root, no live
## server (gunicorn, Celery) and no browser (pytest -m "not sandbox and not live and not
## browser"; the fake Stripe and moto's S3 run inside the test processes). As any user,
## no apt-get; it needs PostgreSQL and Redis running (`make services` starts them). Models
## run in the sandbox at the isolation this user gets (user namespaces when not root).
test-fast: install-dev
	@mkdir -p $(CURDIR)/var/test-fast
	DATABASE_URL=$(TEST_FAST_DATABASE_URL) TEST_REDIS_URL=$(TEST_REDIS_URL) \
	SECRET_KEY=test-only-secret-key-not-for-production VAR_DIR=$(CURDIR)/var/test-fast \
	SANDBOX_REQUIRED_ISOLATION=none \
	SANDBOX_RUN_ROOT=/tmp/fmu-gateway-sandbox$$([ $$(id -u) = 0 ] || echo -$$(id -u)) \
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist worksteal \
		-m "not sandbox and not live and not browser" \
		--basetemp=$(CURDIR)/var/test-fast/pytest-tmp $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=. $(VENV)/bin/lint-imports
	env -i PATH="$$PATH" $(VENV)/bin/mypy $(MYPY_TARGETS)

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install-dev services
	DATABASE_URL=$(TEST_DATABASE_URL) SECRET_KEY=bench-only-secret-key VAR_DIR=$(CURDIR)/var/bench \
	$(PY) -m bench

clean:
	rm -rf var $(VENV)
