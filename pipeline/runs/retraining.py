"""The job of retraining a run (``influence/retraining/retrains.py``), from its params."""

from __future__ import annotations

from pathlib import Path

from influence.retraining.retrains import RetrainJob, job_for
from pipeline.core.config import Params
from pipeline.runs.settings import cluster


def retrain_job(params: Params, out_dir: Path, answer_tokens: int = 0) -> RetrainJob:
    """The job of retraining ``params``' run, its retrains kept in ``out_dir``."""
    return job_for(params.model.dir, params.corpus.out_dir, params.queries.out, params.model, params.pretrain,
                   params.training_seed, out_dir, query_batch_size=params.queries.batch_size,
                   checkpoint_every=params.runtime.checkpoint_every, cluster=cluster(params),
                   answer_tokens=answer_tokens)
