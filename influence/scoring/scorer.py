"""Score documents against every query: precondition the queries once, then stream documents through.

kronfluence's public ``compute_pairwise_scores`` recomputes and re-preconditions the query gradients on
every call. Scoring millions of documents in shards would pay that once per shard, so this class runs
kronfluence's own trackers in two separate halves: it builds the preconditioned query gradients once
(the first half of ``compute_pairwise_scores_with_loader``), then leaves the modules in pairwise-score
mode, where kronfluence's hooks compute each batch's scores during its backward pass. The loop around
them is ``compute_dot_products_with_loader`` without what it does on every call: two ``gc.collect()``
(0.45 s per call in a worker with transformers loaded, 20% of a 128-document shard on the CPU), mode
switches that drop the preconditioned gradients, and a device-to-host copy per batch. The numbers are
kronfluence's; the tests compare them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from kronfluence.module.tracked_module import ModuleMode
from kronfluence.module.utils import accumulate_iterations, set_mode
from kronfluence.utils.constants import PAIRWISE_SCORE_MATRIX_NAME

from influence import data
from influence.curvature.prepared import prepare
from influence.curvature.tap import GradientTap
from influence.data import Encoded
from influence.scoring.variants import GradientScores


class Scorer:
    """A model with loaded factors and preconditioned query gradients, ready to score documents."""

    def __init__(self, model, pad_id: int, factors_root: Path, queries: Encoded, batch_size: int,
                 damping: float | None = None, amp_dtype: torch.dtype | None = None, variants: bool = False) -> None:
        """``variants``: also collect what ``attribute`` returns besides EK-FAC scores
        (``influence/scoring/variants.py``)."""
        ready = prepare(model, factors_root, damping, amp_dtype, ModuleMode.PRECONDITION_GRADIENT)
        manifest, self.task, self.model, self.state = ready.manifest, ready.task, ready.model, ready.state
        self.score_args, self.tracked, self.modules = ready.score_args, ready.tracked, ready.modules
        self.pad_id, self.batch_size = pad_id, batch_size
        if variants and manifest.strategy != "ekfac":
            raise ValueError(f"the gradient variants need EK-FAC factors, not {manifest.strategy}")
        self.tap = GradientTap(self.modules) if variants else None
        self.n_queries = len(queries)
        self._precondition(queries)

    def _precondition(self, queries: Encoded) -> None:
        for batch in data.loader(queries, self.batch_size, self.pad_id):
            batch = {k: v.to(self.state.device) for k, v in batch.items()}
            self.model.zero_grad(set_to_none=True)
            with self._autocast():
                measurement = self.task.compute_measurement(batch, self.model)
            measurement.backward()
            accumulate_iterations(self.model, self.tracked)
            if self.tap:
                self.tap.add_queries()
        self.model.zero_grad(set_to_none=True)
        if self.tap:
            self.tap.finish_queries()
        set_mode(self.model, ModuleMode.PAIRWISE_SCORE, self.tracked, release_memory=False)

    def _autocast(self):
        amp = self.score_args.amp_dtype
        return torch.autocast(self.state.device.type, enabled=amp is not None, dtype=amp or torch.float32)

    def score(self, docs: Encoded) -> torch.Tensor:
        """Influence of each item (document or window) on each query: a float32 tensor ``[n_queries, n_items]``
        on the CPU."""
        return self._pass(docs, collect=False)[0]

    def attribute(self, docs: Encoded) -> GradientScores:
        """Per document (windows summed): EK-FAC scores, gradient dot products and self-influence, from one
        pass (a ``Scorer`` made with ``variants``)."""
        if not self.tap:
            raise ValueError("attribute needs a Scorer made with variants=True")
        self.tap.start_documents(docs.owners if docs.owners is not None else list(range(len(docs))), docs.n_docs)
        ekfac, identity = self._pass(docs, collect=True)
        return GradientScores(docs.per_document(ekfac).double().numpy(), docs.per_document(identity).double().numpy(),
                              self.tap.query_gram, self.tap.doc_self.copy())

    def _pass(self, docs: Encoded, collect: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One backward pass per batch: EK-FAC scores ``[queries, items]``, and with ``collect`` the tap's dot
        products (its self-influence accumulates in the tap)."""
        chunks, dots = [torch.zeros(self.n_queries, 0)], [torch.zeros(self.n_queries, 0, dtype=torch.float64)]
        if self.tap:
            self.tap.enabled = collect
        for batch in data.loader(docs, self.batch_size, self.pad_id):
            batch = {k: v.to(self.state.device) for k, v in batch.items()}
            self.model.zero_grad(set_to_none=True)
            with self._autocast():
                loss = self.task.compute_train_loss(batch, self.model, sample=False)
            loss.backward()  # kronfluence's hooks leave each module's [queries, batch] scores in its storage
            with torch.no_grad():
                chunks.append(sum(m.get_factor(PAIRWISE_SCORE_MATRIX_NAME) for m in self.modules).float())
                if collect:
                    dots.append(self.tap.document_batch())
            accumulate_iterations(self.model, self.tracked)  # and this clears them for the next batch
        return torch.cat([c.cpu() for c in chunks], dim=1), torch.cat(dots, dim=1) if collect else None
