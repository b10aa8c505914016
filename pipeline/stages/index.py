"""Stage `index`: every document's projected gradient, stored once, for `wherefrom ask`.

    wherefrom index             # reads the model, factors and corpus; writes results/index/

The build (shards, resuming, the Dask cluster) is ``influence/index/build.py``; it records the run's documents,
seconds and bytes per document in ``index.metrics`` (a DVC metrics file). With ``index.score_queries`` the
stage then scores the run's queries from the index, as method ``index`` (results/index/scores/index/, the
scores schema), so that the analysis sets the compressed estimate beside the exact one.
"""

from __future__ import annotations

from pathlib import Path

from influence.index.build import Built, build_index
from influence.scoring.runner import score_corpus
from pipeline.core.atomic import write_json
from pipeline.core.config import Params
from pipeline.runs import methods, scoring, settings


def run(params: Params) -> Built:
    built = build_index(params.model.dir, params.influence.factors_dir, settings.documents(params),
                        settings.index_settings(params), settings.cluster(params))
    metrics = Path(params.index.metrics)
    if built.documents or not metrics.is_file():  # a run with nothing left to do keeps the last time
        write_json({"documents": built.documents, "seconds": round(built.seconds, 1),
                    "bytes_per_doc": built.bytes_per_doc, "projection": params.index.projection,
                    "k": params.index.k}, metrics)
    for name in methods.from_index(params):
        score_corpus(settings.documents(params), settings.queries(params), scoring.score_settings(params, name),
                     **scoring.score_inputs(params))
    return built
