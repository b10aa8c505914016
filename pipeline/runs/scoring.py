"""A scoring run's settings from the run's params: which method, where its shards and its variants' go, and what it
reads besides the documents and queries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from influence.methods import PAPER, get
from influence.settings import ScoreSettings, absolute
from pipeline.core.config import Params
from pipeline.runs.methods import scores_dir, variants


def score_settings(params: Params, method: str, out_dir: str | Path | None = None) -> ScoreSettings:
    """Method ``method``'s scoring run, into its own directory; the paper's pass writes this run's variants too.
    ``out_dir`` puts the scores elsewhere (the scores stage's ``scores.method``, a benchmark's pass), the paper's
    variants with them (each in a folder of its own there)."""
    if out_dir is not None:
        params = dataclasses.replace(params, scores=dataclasses.replace(params.scores, out_dir=str(out_dir)))
    cfg = params.scores
    kind = get(method, "scores.method").kind
    return ScoreSettings(
        out_dir=str(out_dir or scores_dir(params, method)), method=method,
        variants=tuple((name, absolute(scores_dir(params, name))) for name in variants(params)) if method == PAPER
        else (),
        shard_size=cfg.shard_size,
        batch_size=params.index.batch_size if kind == "index" else cfg.batch_size,  # an index method's queries
        dtype=cfg.dtype, damping=params.influence.damping, seed=params.seed)


def score_inputs(params: Params) -> dict[str, str]:
    """What ``score_corpus`` reads besides the documents and queries: the model, its factors and the index."""
    return dict(model_dir=params.model.dir, factors_dir=params.influence.factors_dir, index_dir=params.index.out_dir)
