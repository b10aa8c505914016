"""Stage `seed@N` (``make seeds``): one run of the seed study, from pretraining to the baselines' scores.

    wherefrom seed 3            # pretrain.seed = 3; writes results/seeds/seed=3/ (study.runs_dir)

The world (``data/corpus``) and the queries' problems are the main run's; only the training draw
(model initialisation and batch order) changes, so the runs differ as two machines' runs of the same
params do. Each step is that stage's ``run`` on this seed's params (``pipeline/core/seeds.py`` sets the
paths, ``results/seeds/seed=N/params.yaml`` records them) and resumes as that stage does; a finished
step is not run again (``pipeline/core/steps.py``). The ``study`` stage analyses every seed's scores.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.core.config import Params
from pipeline.core.corpus_reader import content_hash
from pipeline.core.hashing import code_hash
from pipeline.core.seeds import for_seed, run_dir
from pipeline.core.steps import run_steps
from pipeline.stages import run_stage

STEPS = ("pretrain", "probe", "factors", "scores", "baselines")
# the code the steps run (seeds/dvc.yaml lists the same as deps): a step done by other code is redone
CODE = ("pipeline/core", "pipeline/world", "pipeline/runs", "influence", "queries",
        *(f"pipeline/stages/{s}.py" for s in STEPS))


def run(params: Params, seed: int) -> Path:
    start = time.perf_counter()
    run = run_dir(params, seed)
    inputs = content_hash(params.corpus.out_dir) + code_hash(CODE)
    ran = run_steps(for_seed(params, seed), STEPS, run, inputs, f"seed {seed}", run_stage)
    print(f"seed {seed}: {', '.join(ran) or 'nothing left'} run in {time.perf_counter() - start:.0f}s -> {run}/")
    return run
