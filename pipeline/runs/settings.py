"""A run's params as the engine's own settings (``influence/settings.py``), so that the engine never sees ``Params``:
what it reads, where it runs, and how it fits factors and builds the index. A scoring run's settings, which depend
on the run's methods, are ``pipeline/runs/scoring.py``'s."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from influence.settings import Cluster, Documents, FactorSettings, IndexSettings, Queries
from pipeline.core.config import Params


def cluster(params: Params) -> Cluster:
    return Cluster(**dataclasses.asdict(params.dask))


def documents(params: Params) -> Documents:
    return Documents(params.corpus.out_dir, params.model.context, whole=params.corpus.long_docs != "truncate")


def queries(params: Params) -> Queries:
    """The probe's queries, with their answer segments when ``scores.segments``."""
    return Queries(params.queries.out, params.queries.segments if params.scores.segments else None)


def factor_settings(params: Params, out_dir: str | Path | None = None) -> FactorSettings:
    cfg = params.influence
    return FactorSettings(str(out_dir or cfg.factors_dir), cfg.strategy, cfg.tracked, cfg.batch_size, cfg.shard_size,
                          seed=params.seed)


def index_settings(params: Params) -> IndexSettings:
    cfg = params.index
    return IndexSettings(cfg.out_dir, cfg.projection, cfg.k, cfg.seed, cfg.dtype, cfg.shard_size, cfg.batch_size)
