# wherefrom: `make demo` runs the whole pipeline on the embedded world; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# One torch thread per core, and no DVC usage reports (this project runs offline).
export DVC_NO_ANALYTICS := 1
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make demo: corpus -> pretrain -> probe on the embedded world (demo profile), then the headline numbers
demo: $(STAMP)
	@test -d .git || { echo "make demo: run it inside the git checkout (DVC needs the repository)"; exit 2; }
	dvc repro
	@echo
	@echo "Results:"
	@echo "  corpus   data/corpus/        queries  data/queries.parquet"
	@echo "  model    models/lm/          metrics  results/probe.json, results/pretrain.json"
	@dvc metrics show

## make test: unit tests plus one end-to-end `dvc repro` on the test profile
test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf data models results .dvc/cache .dvc/tmp
