"""What the scoring pass gives besides EK-FAC scores, from the same backward passes: plain gradient dot
products, and every document's and query's self-influence ``g · H⁻¹ g``.

The estimator variants the field compares are built from these four quantities (``influence/methods``):
gradient dot products (``identity``), scores divided by the document's self-influence's square root
(RelatIF, Barshan et al. 2020) or by both square roots (the cosine in the EK-FAC metric, as TrackStar's
unit-normalised gradients). kronfluence computes self-influence only in a pass of its own
(``compute_self_scores``), which would double the cost of scoring, so ``GradientTap`` hooks the tracked
modules beside kronfluence's trackers and reads each batch's activations and output gradients once more.

Self-influence in the eigenbasis: with ``R = Q_gᵀ G Q_a``, ``G · H⁻¹ G = Σ R² / (Λ + damping)``, the same
number kronfluence's preconditioning gives, without forming the preconditioned gradient. A document
read in windows has the sum of its windows' gradients (its loss is their sum), so its self-influence has
cross terms between windows: the tap keeps a long document's rotated gradient until its last window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from kronfluence.module.tracked_module import TrackedModule
from kronfluence.utils.constants import ACTIVATION_EIGENVECTORS_NAME, GRADIENT_EIGENVECTORS_NAME, LAMBDA_MATRIX_NAME


@dataclass(frozen=True)
class GradientScores:
    """One shard's four quantities, per document (windows summed) and per query row."""

    ekfac: np.ndarray  # [rows, docs] q · H⁻¹ g, the paper's influence
    identity: np.ndarray  # [rows, docs] q · g
    query_gram: np.ndarray  # [rows, rows] q_a · H⁻¹ q_b: the diagonal is each row's self-influence
    doc_self: np.ndarray  # [docs] g · H⁻¹ g

    @property
    def query_self(self) -> np.ndarray:
        return np.diag(self.query_gram).copy()

    def expand(self, rows) -> GradientScores:
        """The measured rows into every row of ``rows`` (``Measurements.expand``: a whole completion is the sum
        of its segments, so its gradient is theirs, and its self-influence sums their block of the Gram matrix)."""
        mix = rows.expand(np.eye(self.query_gram.shape[0]))
        return GradientScores(mix @ self.ekfac, mix @ self.identity, mix @ self.query_gram @ mix.T, self.doc_self)


class GradientTap:
    """Forward hooks on kronfluence's tracked modules that collect, per batch, the per-item gradient of each
    module (``[items, out, in]``, kronfluence's own ``compute_per_sample_gradient``).

    ``add_queries`` keeps the raw query gradients (for the dot products) and ``finish_queries`` their Gram
    matrix; ``start_documents`` then ``document_batch`` after each document batch give its dot products and
    accumulate each document's self-influence.
    """

    def __init__(self, modules: list[TrackedModule]) -> None:
        self.modules = modules
        self.gradients: dict[str, torch.Tensor] = {}
        for m in modules:
            m.register_forward_hook(self._forward)
        self.query_gradients: dict[str, torch.Tensor] = {}
        self.enabled = True  # off while the scorer runs a pass without variants

    def _forward(self, module: TrackedModule, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not (self.enabled and output.requires_grad):
            return
        activation = inputs[0].detach().float()

        def backward(gradient: torch.Tensor) -> None:
            grad = module.compute_per_sample_gradient(input_activation=activation, output_gradient=gradient.float())
            held = self.gradients.get(module.name)
            self.gradients[module.name] = grad if held is None else held + grad

        output.register_hook(backward)

    def take(self) -> dict[str, torch.Tensor]:
        """The last backward pass's per-item gradients, by module (cleared for the next pass)."""
        out, self.gradients = self.gradients, {}
        return out

    @staticmethod
    def _rotated(module: TrackedModule, grad: torch.Tensor) -> torch.Tensor:
        q_a = module.storage[ACTIVATION_EIGENVECTORS_NAME].to(grad.device, grad.dtype)
        q_g = module.storage[GRADIENT_EIGENVECTORS_NAME].to(grad.device, grad.dtype)
        return q_g.t() @ grad @ q_a

    @staticmethod
    def _inverse(module: TrackedModule, device: torch.device) -> torch.Tensor:
        """``1 / (Λ + damping)``: kronfluence's prepared lambda matrix (EK-FAC's preconditioner)."""
        return module.storage[LAMBDA_MATRIX_NAME].to(device, torch.float32)

    def add_queries(self) -> None:
        """Keep one query batch's raw gradients (call after its backward pass)."""
        for name, grad in self.take().items():
            held = self.query_gradients.get(name)
            self.query_gradients[name] = grad if held is None else torch.cat([held, grad])

    def finish_queries(self) -> None:
        """The queries' Gram matrix in the EK-FAC metric, ``[rows, rows]``: its diagonal is each measured row's
        self-influence, and a row that sums others (a whole completion from its segments) sums its block."""
        gram = None
        for m in self.modules:
            rotated = self._rotated(m, self.query_gradients[m.name])
            part = torch.einsum("aoi,oi,boi->ab", rotated, self._inverse(m, rotated.device), rotated).double()
            gram = part if gram is None else gram + part
        self.query_gram = gram.cpu().numpy()

    def start_documents(self, owners: list[int], n_docs: int) -> None:
        """Expect items owned by ``owners`` (document index per item, in batch order)."""
        self.owners, self.position = owners, 0
        self.windows_left = np.bincount(np.asarray(owners, dtype=np.int64), minlength=n_docs)
        self.pending: dict[int, dict[str, torch.Tensor]] = {}
        self.doc_self = np.zeros(n_docs, dtype=np.float64)

    def document_batch(self) -> torch.Tensor:
        """After a document batch's backward pass: its ``[query rows, items]`` dot products with the raw query
        gradients; the batch's self-influence goes into ``doc_self``."""
        grads = self.take()
        n = next(iter(grads.values())).shape[0]
        owners = self.owners[self.position:self.position + n]
        self.position += n
        dots = None
        rotated = {}
        for m in self.modules:
            grad = grads[m.name]
            part = torch.einsum("qoi,boi->qb", self.query_gradients[m.name].to(grad.device), grad).double()
            dots = part if dots is None else dots + part
            rotated[m.name] = self._rotated(m, grad)
        for item, doc in enumerate(owners):
            self.windows_left[doc] -= 1
            if doc in self.pending or self.windows_left[doc] > 0:  # a window of a longer document
                held = self.pending.setdefault(doc, {})
                for name, r in rotated.items():
                    held[name] = r[item] if name not in held else held[name] + r[item]
                if self.windows_left[doc] > 0:
                    continue
                whole = self.pending.pop(doc)
            else:
                whole = {name: r[item] for name, r in rotated.items()}
            self.doc_self[doc] = sum(float((whole[m.name].square() * self._inverse(m, whole[m.name].device)).sum())
                                     for m in self.modules)
        return dots.cpu()
