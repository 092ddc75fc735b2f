# `make demo` and `make test` each set up .venv on a fresh machine, then do their job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; a plain `torch` from the index is a multi-GB CUDA build.
# On a GPU machine: make TORCH=torch setup
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean-demo web web-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

DEMO_CAPTURE := data/demo
DEMO_RUN := runs/demo

# Each step skips or resumes what an earlier (interrupted) `make demo` finished. The evaluation scores every
# 2nd frame: half the time, the figures within 0.06 dB of scoring all (`npga eval runs/demo`).
demo: $(STAMP)
	test -f $(DEMO_CAPTURE)/headmodel.json || $(BIN)/npga synth --out $(DEMO_CAPTURE) --preset demo
	$(BIN)/npga prepare --capture $(DEMO_CAPTURE) --height 256
	if ls $(DEMO_RUN)/checkpoints/step_*.pt >/dev/null 2>&1; then RESUME=--resume; fi; \
	$(BIN)/npga train --config configs/demo.yaml --capture $(DEMO_CAPTURE) --out $(DEMO_RUN) $$RESUME
	$(BIN)/npga eval $(DEMO_RUN) --every 2
	$(BIN)/npga render $(DEMO_RUN)
	@echo
	@echo "capture:         $(DEMO_CAPTURE)"
	@echo "avatar:          $(DEMO_RUN)/avatar.npga (everything after training needs only this file)"
	@echo "run:             $(DEMO_RUN) (config.yaml, split.json, checkpoints/, logs/train.jsonl)"
	@echo "training curves: $(DEMO_RUN)/logs/training_curves.png"
	@echo "metrics:         $(DEMO_RUN)/eval/metrics.json (per frame: $(DEMO_RUN)/eval/per_frame.csv)"
	@echo "comparisons:     $(DEMO_RUN)/eval/*.png, $(DEMO_RUN)/eval/*.mp4"
	@echo "videos:          $(DEMO_RUN)/videos/orbit.mp4, $(DEMO_RUN)/videos/expressions.mp4"

lint: $(STAMP)
	$(BIN)/ruff check npga data_tools tests benchmarks
	$(BIN)/ruff format --check npga data_tools tests benchmarks
	$(BIN)/lint-imports

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# The page `npga export --web` writes, built from viewer/ into npga/viewer/static/ (committed: Python users never
# need node). Needs node and npm; `npm ci` installs exactly the lockfile's packages.
web:
	cd viewer && npm ci --no-audit --no-fund && npm run build

# Fails when the committed bundle is not what the sources and lockfile build (the build is byte-reproducible).
web-check: web
	@test -z "$$(git status --porcelain -- npga/viewer/static)" || \
	    (git status --short -- npga/viewer/static; \
	     echo "npga/viewer/static is not what viewer/ builds: run make web and commit it"; exit 1)

clean-demo:
	rm -rf $(DEMO_CAPTURE) runs/demo
