"""Stage `index`: every document's projected gradient, stored once, for `wherefrom ask`.

    wherefrom index             # reads the model, factors and corpus; writes results/index/

The build (shards, resuming, the Dask cluster) is ``influence/index_build.py``; it records the run's documents,
seconds and bytes per document in ``index.metrics`` (a DVC metrics file).
"""

from __future__ import annotations

from pathlib import Path

from influence.index_build import Built, build_index
from pipeline.core.atomic import write_json
from pipeline.core.config import Params


def run(params: Params) -> Built:
    built = build_index(params)
    metrics = Path(params.index.metrics)
    if built.documents or not metrics.is_file():  # a run with nothing left to do keeps the last time
        write_json({"documents": built.documents, "seconds": round(built.seconds, 1),
                    "bytes_per_doc": built.bytes_per_doc, "projection": params.index.projection,
                    "k": params.index.k}, metrics)
    return built
