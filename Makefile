# `make demo` and `make test` each set up .venv on a fresh machine, then do their job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; a plain `torch` from the index is a multi-GB CUDA build.
# On a GPU machine: make TORCH=torch setup
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

DEMO_CAPTURE := data/demo

demo: $(STAMP)
	test -f $(DEMO_CAPTURE)/headmodel.json || $(BIN)/npga synth --out $(DEMO_CAPTURE) --preset demo
	$(BIN)/npga prepare --capture $(DEMO_CAPTURE)

lint: $(STAMP)
	$(BIN)/ruff check npga data_tools tests benchmarks
	$(BIN)/ruff format --check npga data_tools tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_CAPTURE) runs/demo
