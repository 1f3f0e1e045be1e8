# Fuzzing: schemathesis against a live collector's OpenAPI schema (tests/test_fuzz.py).
.PHONY: fuzz

FUZZ_EXAMPLES ?= 300

fuzz: deps ## a larger schemathesis run (FUZZ_EXAMPLES per operation, with and without the token)
	@echo ">> fuzzing every collector route with schemathesis ($(FUZZ_EXAMPLES) examples per operation)"
	@AGENTWATCH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz.py
