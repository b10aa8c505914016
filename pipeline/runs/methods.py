"""Which of the registered methods (``influence/methods``) this run computes, which stage writes each, and where
its score shards lie. Every stage, table, view and report section asks here, so none lists a method by name."""

from __future__ import annotations

from pathlib import Path

from influence.methods import PAPER, corpus_methods, get, gradient_methods, index_methods, training_methods
from pipeline.core.config import Params
from pipeline.core.errors import WherefromError
from pipeline.core.stages import STAGES


def variants(params: Params) -> list[str]:
    """The gradient methods this run derives beside the paper's (``scores.variants``; null = all)."""
    names = gradient_methods() if params.scores.variants is None else list(params.scores.variants)
    for name in names:
        if get(name, "scores.variants").from_gradients is None or name == PAPER:
            raise WherefromError(f"scores.variants: {name!r} is not derived from the scoring pass "
                                 f"(those are: {', '.join(gradient_methods())})")
    return names


def baselines(params: Params) -> list[str]:
    """The corpus methods this run scores (``baselines.methods``; null = all)."""
    names = corpus_methods() if params.baselines.methods is None else list(params.baselines.methods)
    for name in names:
        if get(name, "baselines.methods").from_corpus is None:
            raise WherefromError(f"baselines.methods: {name!r} is not a corpus method "
                                 f"(those are: {', '.join(corpus_methods())})")
    return names


def from_index(params: Params) -> list[str]:
    """The index methods this run scores: every registered one when ``index.score_queries``, else none."""
    return index_methods() if params.index.score_queries else []


def from_training(params: Params) -> list[str]:
    """The training methods this run computes (``exact.methods``; null = none: each replays the run)."""
    names = list(params.exact.methods or ())
    for name in names:
        if get(name, "exact.methods").from_training is None:
            raise WherefromError(f"exact.methods: {name!r} is not derived from the training run "
                                 f"(those are: {', '.join(training_methods())})")
    return names


def selected(params: Params) -> list[str]:
    """Every method of this run, the paper's first."""
    return [PAPER, *variants(params), *baselines(params), *from_index(params), *from_training(params)]


def stage(name: str) -> str:
    """The stage that writes method ``name``'s scores: the one that writes its kind."""
    kind = get(name, "method").kind
    return next(s.name for s in STAGES.values() if s.writes == kind)


def scores_dir(params: Params, name: str) -> Path:
    """Where method ``name``'s score shards lie: the paper's in ``scores.out_dir``, each variant in a folder of
    its own there (written by the same pass), each corpus method under ``baselines.out_dir``, each index method
    under ``index.out_dir``/scores, each training method under ``exact.out_dir``."""
    if name == PAPER:
        return Path(params.scores.out_dir)
    return {"gradients": Path(params.scores.out_dir), "corpus": Path(params.baselines.out_dir),
            "index": Path(params.index.out_dir) / "scores", "training": Path(params.exact.out_dir)}[
        get(name, "method").kind] / name

