"""Stage `baselines`: the scores of each corpus method in ``baselines.methods``, for the analysis to set beside
influence.

    wherefrom baselines         # writes results/baselines/METHOD/shard=NNNNN/part.parquet

A baseline is the scores stage run with a corpus method of ``influence/methods`` as ``scores.method``:
BM25 of the query's text against each document (lexical overlap, which influence is not), or seeded
random scores (what chance gives). Same schema, same shards, same resume rules as the influence scores.
"""

from __future__ import annotations

from pathlib import Path

from influence.scoring.runner import score_corpus
from pipeline.core.config import Params
from pipeline.runs import methods, scoring, settings


def run(params: Params) -> Path:
    out = Path(params.baselines.out_dir)
    out.mkdir(parents=True, exist_ok=True)  # the stage's output, even with no baselines
    for method in methods.baselines(params):
        score_corpus(settings.documents(params), settings.queries(params), scoring.score_settings(params, method))
    return out
