# Touchflow — `make run` to see it work, `make test` to check it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv run test lint typecheck unit integration bench replay schemas clean soak \
	soak-properties

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP) ## create the virtualenv and install touchflow with its test tools

run: $(STAMP) ## embedded broker + worker + simulator + metrics; Ctrl-C stops all
	$(VENV)/bin/touchflow dev

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check service schemas tests bench scripts touchflow_consumer examples

typecheck: $(STAMP) ## mypy --strict on service/ and schemas/
	$(VENV)/bin/mypy

unit: $(STAMP) ## unit and component tests only
	$(VENV)/bin/pytest -q tests/unit tests/component bench/tests

integration: $(STAMP) ## integration tests on the embedded broker
	$(VENV)/bin/pytest -q tests/integration

test: $(STAMP) ## lint, type-check, then the whole test suite
	$(MAKE) --no-print-directory lint typecheck
	$(VENV)/bin/pytest -q -p no:cacheprovider tests bench/tests

bench: $(STAMP) ## benchmarks: naive Faust vs touchflow vs raw aiokafka, plus the pure core
	$(PY) -m bench

replay: $(STAMP) ## replay an example log: make replay RULES=... INPUT=...
	$(VENV)/bin/touchflow replay --rules $(or $(RULES),examples/lead_scoring/rulebook.yaml) --input $(or $(INPUT),examples/lead_scoring/events.jsonl)

schemas: $(STAMP) ## regenerate schemas/jsonschema/*.json
	$(VENV)/bin/touchflow schemas export

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis

soak: $(STAMP) ## 10 minutes at a steady rate: memory slope, dead letters, lag (not in CI)
	$(PY) scripts/soak.py $(SOAK_ARGS)

soak-properties: $(STAMP) ## the live == replay state machine, 500 histories of 80 steps (nights)
	TOUCHFLOW_SOAK=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/properties
