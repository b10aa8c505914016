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

.PHONY: demo validate seeds test bench screenshot install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps kronfluence==1.0.1  # see pyproject.toml
	touch $(STAMP)

install: $(STAMP)

## make demo: the whole pipeline on the embedded world (demo profile), then the headline numbers
demo: $(STAMP)
	@test -d .git || { echo "make demo: run it inside the git checkout (DVC needs the repository)"; exit 2; }
	dvc repro
	@echo
	@echo "Results:"
	@echo "  corpus   data/corpus/        queries  data/queries.parquet"
	@echo "  model    models/lm/          metrics  metrics/ (dvc exp show, dvc plots show)"
	@echo "  factors  results/factors/    scores   results/scores/shard=*/part.parquet, results/baselines/"
	@echo "  analysis results/*.parquet   query them: wherefrom sql --list"
	@echo
	@wherefrom sql --name findings --max-rows 20
	@echo
	@echo "Open the report: $(CURDIR)/reports/out/procedural_vs_factual.html"

## make validate: after make demo, every method against retraining: LDS and leave-k-out on the lds profile's own run
## (stage lds, results/validation/), leave-500-out on the demo (stage counterfactual); then the report again.
validate: $(STAMP)
	@test -d .git || { echo "make validate: run it inside the git checkout (DVC needs the repository)"; exit 2; }
	dvc repro validate/dvc.yaml
	dvc repro --force --single-item report
	@echo
	@wherefrom sql "SELECT test, setting, method, round(avg(value), 4) AS mean, count(value) AS queries, any_value(docs_removed) AS docs, any_value(tokens_removed) AS tokens FROM validation GROUP BY ALL ORDER BY test, setting, mean DESC" --max-rows 60
	@echo
	@wherefrom sql "SELECT method, task, round(avg(delta_nll), 4) AS mean_delta_nll, round(avg(correct_after::INT), 3) AS accuracy_after FROM counterfactual GROUP BY ALL ORDER BY task, method" --max-rows 30
	@echo
	@echo "Open the report (sections 13 and 14): $(CURDIR)/reports/out/procedural_vs_factual.html"

## make seeds: the seed study. One full training run per seed in params.yaml's study.seeds (5 by default, about
## 30 min each on 2 cores), the world fixed; then every finding over the runs, and the report with the study.
seeds: $(STAMP)
	@test -d .git || { echo "make seeds: run it inside the git checkout (DVC needs the repository)"; exit 2; }
	dvc repro seeds/dvc.yaml
	@echo
	@wherefrom sql --name finding_spread --max-rows 40
	@echo
	@if [ -f reports/out/procedural_vs_factual.html ]; then dvc repro --force --single-item report && \
		echo "Open the report (section 2 shows the study): $(CURDIR)/reports/out/procedural_vs_factual.html"; \
	else echo "The report shows the study once the main pipeline has run: make demo"; fi

## make test: unit tests plus one end-to-end `dvc repro` on the test profile
# One pytest worker per core (a test file stays on one worker, with its fixtures), one torch thread each; files
# go out in conftest.py's order (most slow tests first), not xdist's (most tests first, which leaves a long
# one-test file running alone at the end).
test: $(STAMP)
	$(BIN)/ruff check .  # the lint rules and 120 columns: pyproject.toml's [tool.ruff]
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

## make bench: docs/s of plain forward+backward, kronfluence and wherefrom, side by side (not a test); MAGIC's cost
## against a training step; after make demo, also the gradient index against exact scoring (fidelity, build time,
## a question's time)
bench: $(STAMP)
	$(BIN)/python -m pipeline.bench
	$(BIN)/python -m pipeline.bench.magic
	@if [ -f results/factors/manifest.json ] && [ -f data/queries.parquet ]; then $(BIN)/python -m pipeline.bench.index; \
	else echo "The gradient index's lines need a finished run: make demo, then make bench again"; fi

## make screenshot: the HTML report in headless Chromium, as reports/out/screenshot-NN.png (needs Debian's chromium)
screenshot: $(STAMP)
	$(BIN)/python reports/screenshot.py reports/out/procedural_vs_factual.html

clean:
	rm -rf data models results .dvc/cache .dvc/tmp
