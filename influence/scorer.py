"""Score documents against every query: precondition the queries once, then stream documents through.

kronfluence's public ``compute_pairwise_scores`` recomputes and re-preconditions the query gradients on
every call. Scoring millions of documents in shards would pay that once per shard, so this class does
the two halves of kronfluence's own implementation separately: it builds the preconditioned query
gradients once (the first half of ``compute_pairwise_scores_with_loaders``), then calls kronfluence's
``compute_dot_products_with_loader`` for each batch of documents. The numbers are kronfluence's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from kronfluence.analyzer import prepare_model
from kronfluence.arguments import ScoreArguments
from kronfluence.module.tracked_module import ModuleMode, TrackedModule
from kronfluence.module.utils import (
    accumulate_iterations,
    get_tracked_module_names,
    prepare_modules,
    set_factors,
    set_mode,
    update_factor_args,
    update_score_args,
)
from kronfluence.score.dot_product import compute_dot_products_with_loader
from kronfluence.utils.constants import ACCUMULATED_PRECONDITIONED_GRADIENT_NAME, ALL_MODULE_NAME
from torch.amp import GradScaler

from influence import data
from influence.curvature import FACTORS_NAME, Manifest, analyzer
from influence.data import Encoded
from influence.task import CausalLMTask


class Scorer:
    """A model with loaded factors and preconditioned query gradients, ready to score documents."""

    def __init__(self, model, pad_id: int, factors_root: Path, queries: Encoded, batch_size: int,
                 damping: float | None = None, amp_dtype: torch.dtype | None = None) -> None:
        manifest = Manifest.load(factors_root)
        manifest.check(model, factors_root)
        self.task = CausalLMTask(manifest.tracked)
        self.model = prepare_model(model, self.task)
        run = analyzer(self.model, self.task, factors_root)
        if torch.cuda.is_available():
            self.model.to(run.state.device)
        self.state, self.pad_id, self.batch_size = run.state, pad_id, batch_size
        self.factor_args = run.load_factor_args(FACTORS_NAME)
        self.score_args = ScoreArguments(damping_factor=damping, amp_dtype=amp_dtype)
        update_factor_args(self.model, self.factor_args)
        update_score_args(self.model, self.score_args)
        self.tracked = get_tracked_module_names(self.model)
        set_mode(self.model, ModuleMode.PRECONDITION_GRADIENT, self.tracked, release_memory=True)
        for name, factors in run.load_all_factors(FACTORS_NAME).items():
            set_factors(self.model, name, factors, clone=True)
        prepare_modules(self.model, self.tracked, device=self.state.device)
        self.scaler = GradScaler(enabled=False)
        self.n_queries = len(queries)
        self._precondition(queries)

    def _precondition(self, queries: Encoded) -> None:
        for batch in data.loader(queries, self.batch_size, self.pad_id):
            batch = {k: v.to(self.state.device) for k, v in batch.items()}
            self.model.zero_grad(set_to_none=True)
            with torch.autocast(self.state.device.type, enabled=self.score_args.amp_dtype is not None,
                                dtype=self.score_args.amp_dtype):
                measurement = self.task.compute_measurement(batch, self.model)
            measurement.backward()
            accumulate_iterations(self.model, self.tracked)
        self.model.zero_grad(set_to_none=True)
        # kronfluence drops these after each scoring pass; keep references to put them back every time.
        self._preconditioned = {m.name: m.storage[ACCUMULATED_PRECONDITIONED_GRADIENT_NAME] for m in self._modules()}

    def _modules(self) -> list[TrackedModule]:
        return [m for m in self.model.modules() if isinstance(m, TrackedModule) and m.name in self.tracked]

    def score(self, docs: Encoded) -> torch.Tensor:
        """Influence of each document on each query: a float32 tensor ``[n_queries, n_docs]``."""
        for module in self._modules():
            module.storage[ACCUMULATED_PRECONDITIONED_GRADIENT_NAME] = self._preconditioned[module.name]
        scores = compute_dot_products_with_loader(
            model=self.model, task=self.task, state=self.state,
            train_loader=data.loader(docs, self.batch_size, self.pad_id),
            factor_args=self.factor_args, score_args=self.score_args, tracked_module_names=self.tracked,
            scaler=self.scaler, disable_tqdm=True)
        return scores[ALL_MODULE_NAME].float()
