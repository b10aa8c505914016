"""A model with its fitted factors loaded into kronfluence's tracked modules, ready for the preconditioner: what
exact scoring (``influence/scoring/scorer.py``) and the gradient index's queries (``influence/index/asker.py``)
start from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from kronfluence.analyzer import prepare_model
from kronfluence.arguments import ScoreArguments
from kronfluence.module.tracked_module import ModuleMode, TrackedModule
from kronfluence.module.utils import (
    get_tracked_module_names,
    prepare_modules,
    set_factors,
    set_mode,
    update_factor_args,
    update_score_args,
)

from influence.curvature.factors import FACTORS_NAME, Manifest, analyzer
from influence.task import CausalLMTask


@dataclass
class Prepared:
    model: torch.nn.Module  # its tracked nn.Linear layers wrapped by kronfluence
    task: CausalLMTask
    state: object  # kronfluence's run state (its ``device``)
    tracked: list[str]
    modules: list[TrackedModule]
    score_args: ScoreArguments
    manifest: Manifest


def prepare(model: torch.nn.Module, factors_root: Path, damping: float | None = None,
            amp_dtype: torch.dtype | None = None, mode: ModuleMode | None = None) -> Prepared:
    """Check the factors belong to ``model``, wrap its tracked modules, load the factors and prepare them
    (kronfluence turns Λ into ``1 / (Λ + damping)``). ``mode``: the modules' kronfluence mode, set before the
    factors are loaded; None leaves kronfluence's own hooks off (only the loaded factors are read)."""
    manifest = Manifest.load(factors_root)
    manifest.check(model, factors_root)
    task = CausalLMTask(manifest.tracked)
    model = prepare_model(model, task)
    run = analyzer(model, task, factors_root)
    if torch.cuda.is_available():
        model.to(run.state.device)
    score_args = ScoreArguments(damping_factor=damping, amp_dtype=amp_dtype)
    update_factor_args(model, run.load_factor_args(FACTORS_NAME))
    update_score_args(model, score_args)
    tracked = get_tracked_module_names(model)
    if mode is not None:
        set_mode(model, mode, tracked, release_memory=True)
    for name, factors in run.load_all_factors(FACTORS_NAME).items():
        set_factors(model, name, factors, clone=True)
    prepare_modules(model, tracked, device=run.state.device)
    modules = [m for m in model.modules() if isinstance(m, TrackedModule) and m.name in tracked]
    return Prepared(model, task, run.state, tracked, modules, score_args, manifest)
