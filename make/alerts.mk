# Alert rules, Alertmanager config and runbooks (alerts/, runbooks/).
.PHONY: alerts-check alerts-test

alerts-check: ## promtool check/test rules and amtool check-config on alerts/
	@echo ">> promtool check rules alerts/*.rules.yml"
	@promtool check rules alerts/*.rules.yml
	@echo ">> promtool test rules alerts/tests/*.test.yml"
	@promtool test rules alerts/tests/*.test.yml
	@echo ">> amtool check-config alerts/alertmanager.yml"
	@amtool check-config alerts/alertmanager.yml

alerts-test: deps ## alert, Alertmanager and runbook tests, with the real binaries
	@echo ">> pytest: alert rules, Alertmanager config, runbooks, end to end"
	@$(PY) -m pytest -q tests/test_alert_rules.py tests/test_alertmanager_config.py tests/test_runbooks.py tests/test_alerts_e2e.py
