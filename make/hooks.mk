# Hook targets (install-hooks itself lives in the main Makefile).
.PHONY: uninstall-hooks hook-flush

uninstall-hooks: ## remove the Agentwatch hook from PROJECT's .claude/settings.json
	@echo ">> removing the Agentwatch hooks from $(PROJECT)"
	@$(PYTHON) hooks/install.py --project "$(PROJECT)" --uninstall

hook-flush: ## deliver the hook's local spool to the collector now
	@echo ">> flushing the hook spool to $${AGENTWATCH_URL:-http://127.0.0.1:4000}"
	@$(PYTHON) -S hooks/agentwatch_hook.py --flush
