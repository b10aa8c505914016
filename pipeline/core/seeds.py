"""Where one run of the seed study lives: the same params, with ``pretrain.seed`` and every output path its own.

The world (``corpus.out_dir``) and the queries' problems (the world's ``seed``) stay the main run's, so
the runs differ only by their training draw: model initialisation and batch order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.core.config import Params
from pipeline.core.errors import ParamsError, WherefromError


def run_dir(params: Params, seed: int) -> Path:
    """The seed's model, queries, factors and scores (the ``seed@N`` stage's output)."""
    return Path(params.study.runs_dir) / f"seed={seed}"


def analysis_dir(params: Params, seed: int) -> Path:
    """The seed's analysis tables and headline metrics (written by the ``study`` stage)."""
    return Path(params.study.out_dir) / f"seed={seed}"


def for_seed(params: Params, seed: int) -> Params:
    """``params`` for the study's run under training seed ``seed``."""
    if params.model.name_or_path:
        raise ParamsError(f"study: a seed study retrains the model, and model.name_or_path is set "
                          f"({params.model.name_or_path}); there is no training run to vary")
    seeded = dataclasses.replace(params, pretrain=dataclasses.replace(params.pretrain, seed=seed))
    return relocated(seeded, run_dir(params, seed), analysis_dir(params, seed))


def relocated(params: Params, run: Path, analysis: Path) -> Params:
    """``params`` with every output of the training run under ``run`` and the analysis's under ``analysis``;
    the corpus stays where it is. Such a run builds no gradient index, so no index method is among its methods."""
    replace = dataclasses.replace
    return replace(
        params,
        model=replace(params.model, dir=str(run / "model")),
        pretrain=replace(params.pretrain, metrics=str(run / "metrics/pretrain.json"),
                         loss_curve=str(run / "metrics/pretrain_loss.csv")),
        queries=replace(params.queries, out=str(run / "queries.parquet"), segments=str(run / "segments.parquet"),
                        metrics=str(run / "metrics/probe.json")),
        influence=replace(params.influence, factors_dir=str(run / "factors")),
        scores=replace(params.scores, out_dir=str(run / "scores"), metrics=str(run / "metrics/scores.json")),
        baselines=replace(params.baselines, out_dir=str(run / "baselines")),
        exact=replace(params.exact, out_dir=str(run / "exact"), metrics=str(run / "metrics/exact.json")),
        index=replace(params.index, out_dir=str(run / "index"), metrics=str(run / "metrics/index.json"),
                      score_queries=False),
        analysis=replace(params.analysis, out_dir=str(analysis), metrics_dir=str(analysis / "metrics")),
    )


def draws(params: Params, folder: Path) -> list[tuple[Params, Path]]:
    """The runs a test of the demo's model repeats over, each with a folder for what it keeps: this run in
    ``folder`` (``validation.seeds`` null), or the seed study's run of each seed in ``folder/seed=N`` (the same
    world; each run must be finished, its analysis included: ``make seeds``)."""
    if params.validation.seeds is None:
        return [(params, folder)]
    out = []
    for seed in params.validation.seeds:
        run = for_seed(params, seed)
        if not (Path(run.analysis.out_dir) / "top_docs.parquet").is_file():
            raise WherefromError(f"{run_dir(params, seed)}: validation.seeds names seed {seed}, and the seed study has "
                                 "not finished it; make seeds first")
        out.append((run, folder / f"seed={seed}"))
    return out
