# make demo: replay a recorded multi-agent session through the real hook into a running collector
# (`make dev` or `make up`; both listen on AGENTWATCH_URL, default http://127.0.0.1:4000).
AGENTWATCH_URL ?= http://$(HOST):$(PORT)

.PHONY: demo

demo: deps ## replay the recorded demo session into the collector at AGENTWATCH_URL
	@echo ">> replaying demo/session.jsonl through hooks/agentwatch_hook.py into $(AGENTWATCH_URL)"
	@AGENTWATCH_URL=$(AGENTWATCH_URL) $(PY) -m demo
