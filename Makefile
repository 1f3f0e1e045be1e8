# Agentwatch — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 4000
QUICK ?=
PROJECT ?= .

-include make/*.mk

.PHONY: help setup deps lock system-deps node-deps dev test lint fmt bench bench-deps backup install-hooks

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

$(VENV)/.installed: pyproject.toml requirements-dev.txt requirements.lock
	@echo ">> creating the virtualenv in $(VENV) with the pinned Python deps"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

deps: $(VENV)/.installed ## Python virtualenv with all deps

LOCK_VENV ?= /tmp/agentwatch-lock-venv
lock: ## re-resolve requirements.lock (the image's pins) to the newest versions pyproject.toml allows
	@echo ">> resolving pyproject.toml's runtime dependencies in a throw-away virtualenv"
	@rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	@$(LOCK_VENV)/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > $(LOCK_VENV)/runtime.txt
	@$(LOCK_VENV)/bin/pip install -q --disable-pip-version-check -r $(LOCK_VENV)/runtime.txt
	@echo ">> writing requirements.lock (then: make deps test; dev-only pins stay in requirements-dev.txt)"
	@{ sed -n '/^#/!q;p' requirements.lock; $(LOCK_VENV)/bin/pip freeze --disable-pip-version-check; } > $(LOCK_VENV)/requirements.lock
	@mv $(LOCK_VENV)/requirements.lock requirements.lock && rm -rf $(LOCK_VENV)

# Debian keeps PostgreSQL's server binaries (initdb, pg_ctl) off PATH, in /usr/lib/postgresql/<major>/bin;
# tests/support/postgres.py looks in the same places.
system-deps: ## Debian's prometheus, alertmanager, tmux and postgresql (installed when missing and root)
	@missing=; \
	command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || missing="prometheus prometheus-alertmanager"; \
	command -v tmux >/dev/null || missing="$$missing tmux"; \
	{ command -v initdb && command -v pg_ctl || ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl; } >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo ">> installing $$missing from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo ">> missing and not root:$$missing (apt-get install them): e2e and PostgreSQL tests will skip (fail under CI=true)"; fi

node-deps: tools/node_modules/.installed ## npm packages for checks and tests (LogQL parser, Claude Code)

tools/node_modules/.installed: tools/package.json tools/package-lock.json
	@echo ">> installing npm packages for checks and tests (the pinned Claude Code among them)"
	@cd tools && npm ci --ignore-scripts --no-audit --no-fund --engine-strict=false --loglevel=error
	@touch $@

setup: deps system-deps node-deps

dev: deps ## run the collector alone on its embedded SQLite
	@echo ">> collector on http://$(HOST):$(PORT)  (metrics: /metrics, health: /healthz, docs: /docs)"
	@mkdir -p data
	@AGENTWATCH_HOST=$(HOST) AGENTWATCH_PORT=$(PORT) $(PY) -m collector

test: setup ## all tests (installs what it needs)
	@echo ">> running pytest"
	@$(PY) -m pytest -q

lint: deps ## ruff; mypy --strict on collector, hooks, bench, tests/support; hooks stay Python 3.9
	@echo ">> ruff check, ruff format --check"
	@$(VENV)/bin/ruff check collector hooks tests bench demo
	@$(VENV)/bin/ruff format --check collector hooks tests bench demo
	@echo ">> ruff check hooks/ as Python 3.9 (the hook runs on the user's python3)"
	@$(VENV)/bin/ruff check --target-version py39 --extend-select FA hooks
	@echo ">> mypy --strict collector bench tests/support (pyproject.toml [tool.mypy])"
	@$(VENV)/bin/mypy
	@echo ">> mypy --strict hooks as Python 3.10 (the oldest mypy checks; 3.9 syntax: ruff above)"
	@$(VENV)/bin/mypy --python-version 3.10 hooks

fmt: deps
	@$(VENV)/bin/ruff format collector hooks tests bench demo
	@$(VENV)/bin/ruff check --fix collector hooks tests bench demo

bench-deps: ## wrk for the single-request benchmark (installed when missing and root)
	@if command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo ">> installing wrk from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	else echo ">> wrk missing and not root: apt-get install wrk"; exit 1; fi

bench: setup bench-deps ## benchmarks; QUICK=1 for a short run
	@echo ">> benchmarks$(if $(QUICK), (quick),)"
	@$(PY) -m bench $(if $(QUICK),--quick,)

backup: deps ## online SQLite backup of the collector's store into ./backups/
	@echo ">> backing up the store with SQLite's online backup API"
	@$(PY) -m collector.backup

install-hooks: ## add the Agentwatch hook to PROJECT's .claude/settings.json
	@echo ">> installing hooks into $(PROJECT)"
	@$(PYTHON) hooks/install.py --project "$(PROJECT)"
