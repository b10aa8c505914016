"""Stage `scores`: the influence of every document on every query's completion, sharded on Dask.

    wherefrom scores            # reads the model, factors, corpus and queries; writes results/scores/

It also records the run's documents and rate in ``scores.metrics`` (a DVC metrics file).

The run itself (shards, resuming, the Dask cluster) is ``influence/scoring/runner.py``. ``scores.method``
can name a baseline instead, in the same schema.
"""

from __future__ import annotations

from pathlib import Path

from influence.scoring.runner import Scored, score_corpus
from pipeline.core.atomic import write_json
from pipeline.core.config import Params
from pipeline.runs import scoring, settings


def run(params: Params) -> Scored:
    cfg = scoring.score_settings(params, params.scores.method, params.scores.out_dir)
    done = score_corpus(settings.documents(params), settings.queries(params), cfg, **scoring.score_inputs(params),
                        cluster=settings.cluster(params))
    metrics = Path(params.scores.metrics)
    if done.documents or not metrics.is_file():  # a run with nothing left to score keeps the last rate
        write_json({"documents": done.documents, "ready_s": round(done.ready_s, 1),
                    "scoring_s": round(done.scoring_s, 1),
                    "docs_per_s": round(done.documents / done.scoring_s, 2) if done.scoring_s else None}, metrics)
    return done
