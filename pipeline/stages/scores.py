"""Stage `scores`: the influence of every document on every query's completion, sharded on Dask.

    wherefrom scores            # reads the model, factors, corpus and queries; writes results/scores/

The run itself (shards, resuming, the Dask cluster) is ``influence/runner.py``. ``scores.method``
can name a baseline instead, in the same schema.
"""

from __future__ import annotations

from influence.runner import Scored, score_corpus
from pipeline.core.config import Params


def run(params: Params) -> Scored:
    return score_corpus(params)
