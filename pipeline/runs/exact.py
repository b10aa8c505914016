"""The job of replaying a run for a training method (``influence/exact/runner.py``), from its params."""

from __future__ import annotations

from influence.exact.runner import ExactJob, job_for
from influence.settings import ExactSettings
from pipeline.core.config import Params
from pipeline.runs.methods import scores_dir
from pipeline.runs.settings import cluster, documents, queries


def exact_job(params: Params, method: str) -> tuple[ExactJob, ExactSettings]:
    """The job of replaying ``params``' run for training method ``method``, and its settings."""
    cfg = params.exact
    settings = ExactSettings(str(scores_dir(params, method)), method, cfg.block, cfg.every, cfg.segments,
                             params.scores.shard_size)
    return job_for(params.model.dir, documents(params), queries(params), params.model, params.pretrain,
                   params.training_seed, settings, cluster(params)), settings
