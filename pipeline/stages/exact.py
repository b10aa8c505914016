"""Stage `exact`: each training method's scores (``exact.methods``: MAGIC), by replaying the training run.

    wherefrom exact             # writes results/exact/METHOD/shard=NNNNN/part.parquet and metrics/exact.json

The method differentiates each query's log-probability through every training step (``influence/exact``), so a
query row costs about 1.6 training runs of compute: the demo computes none (``exact.methods`` is empty), and make
validate's run (``validation.profile``) computes magic as one of its steps, beside influence and the baselines.
Blocks of query rows are Dask tasks, each written when done, so a killed run resumes with the blocks left.
"""

from __future__ import annotations

from pathlib import Path

from influence.exact.runner import score_training
from pipeline.core.atomic import write_json
from pipeline.core.config import Params
from pipeline.runs import exact, methods, settings


def run(params: Params) -> Path:
    out = Path(params.exact.out_dir)
    out.mkdir(parents=True, exist_ok=True)  # the stage's output, even with no method
    measured = {}
    for name in methods.from_training(params):
        job, replay = exact.exact_job(params, name)
        measured[name] = score_training(job, replay, settings.cluster(params))
    write_json(measured, Path(params.exact.metrics))
    return out
