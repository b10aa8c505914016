"""Per-item gradients of the tracked layers in the EK-FAC eigenbasis, from hooks beside kronfluence's trackers.

Exact scoring reads them for the quantities derived from its pass (``influence/scoring/variants.py``), and the
gradient index's queries for their preconditioned gradients (``influence/index/store.py``).

Self-influence in the eigenbasis: with ``R = Q_gᵀ G Q_a``, ``G · H⁻¹ G = Σ R² / (Λ + damping)``, the same
number kronfluence's preconditioning gives, without forming the preconditioned gradient. A document
read in windows has the sum of its windows' gradients (its loss is their sum), so its self-influence has
cross terms between windows: the tap keeps a long document's rotated gradient until its last window.
"""

from __future__ import annotations

import numpy as np
import torch
from kronfluence.module.tracked_module import TrackedModule
from kronfluence.utils.constants import ACTIVATION_EIGENVECTORS_NAME, GRADIENT_EIGENVECTORS_NAME, LAMBDA_MATRIX_NAME


class GradientTap:
    """Forward hooks on kronfluence's tracked modules that collect, per batch, each item's gradient of each
    module in the EK-FAC eigenbasis (``[items, out, in]``).

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
        self.bases: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self.enabled = True  # off while the scorer runs a pass without variants

    def _forward(self, module: TrackedModule, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not (self.enabled and output.requires_grad):
            return
        q_a, q_g, _ = self._basis(module, output.device)
        # kronfluence's own flattening (a ones column for a bias), then the activations in the eigenbasis
        activation = module._flatten_input_activation(inputs[0].detach().float()) @ q_a

        def backward(gradient: torch.Tensor) -> None:
            rotated = torch.einsum("b...o,b...i->boi", gradient.float() @ q_g, activation)
            held = self.gradients.get(module.name)
            self.gradients[module.name] = rotated if held is None else held + rotated

        output.register_hook(backward)

    def take(self) -> dict[str, torch.Tensor]:
        """The last backward pass's per-item gradients in the eigenbasis, ``R = Q_gᵀ G Q_a``, by module (cleared
        for the next pass). The basis is orthogonal, so dot products of R are those of G: rotating each token's
        activation and output gradient costs less than rotating every item's ``[out, in]`` gradient."""
        out, self.gradients = self.gradients, {}
        return out

    def _basis(self, module: TrackedModule, device: torch.device) -> tuple[torch.Tensor, ...]:
        """``Q_a``, ``Q_g`` and ``1 / (Λ + damping)`` (kronfluence's prepared lambda matrix) on ``device``."""
        key = (module.name, device)
        if key not in self.bases:
            self.bases[key] = tuple(module.storage[name].to(device, torch.float32) for name in (
                ACTIVATION_EIGENVECTORS_NAME, GRADIENT_EIGENVECTORS_NAME, LAMBDA_MATRIX_NAME))
        return self.bases[key]

    def add_queries(self) -> None:
        """Keep one query batch's gradients (call after its backward pass)."""
        for name, grad in self.take().items():
            held = self.query_gradients.get(name)
            self.query_gradients[name] = grad if held is None else torch.cat([held, grad])

    def finish_queries(self) -> None:
        """The queries' Gram matrix in the EK-FAC metric, ``[rows, rows]``: its diagonal is each measured row's
        self-influence, and a row that sums others (a whole completion from its segments) sums its block."""
        gram = None
        for m in self.modules:
            rotated = self.query_gradients[m.name]
            part = torch.einsum("aoi,oi,boi->ab", rotated, self._basis(m, rotated.device)[2], rotated).double()
            gram = part if gram is None else gram + part
        self.query_gram = gram.cpu().numpy()

    def start_documents(self, owners: list[int], n_docs: int) -> None:
        """Expect items owned by ``owners`` (document index per item, in batch order)."""
        self.owners, self.position = owners, 0
        self.windows_left = np.bincount(np.asarray(owners, dtype=np.int64), minlength=n_docs)
        self.pending: dict[int, dict[str, torch.Tensor]] = {}
        self.doc_self = np.zeros(n_docs, dtype=np.float64)

    def document_batch(self) -> torch.Tensor:
        """After a document batch's backward pass: its ``[query rows, items]`` gradient dot products with the
        queries; the batch's self-influence goes into ``doc_self``."""
        grads = self.take()
        n = next(iter(grads.values())).shape[0]
        owners = self.owners[self.position:self.position + n]
        self.position += n
        dots = None
        for m in self.modules:
            part = torch.einsum("qoi,boi->qb", self.query_gradients[m.name], grads[m.name]).double()
            dots = part if dots is None else dots + part
        inverse = {m.name: self._basis(m, grads[m.name].device)[2] for m in self.modules}
        alone = sum((grads[name].square() * inv).sum(dim=(1, 2)).double() for name, inv in inverse.items()).cpu()
        for item, doc in enumerate(owners):
            self.windows_left[doc] -= 1
            if doc not in self.pending and self.windows_left[doc] == 0:  # a document in one window
                self.doc_self[doc] = float(alone[item])
                continue
            held = self.pending.setdefault(doc, {})  # a window of a longer document: its sum so far
            for name, r in grads.items():
                held[name] = r[item] if name not in held else held[name] + r[item]
            if self.windows_left[doc] == 0:
                whole = self.pending.pop(doc)
                self.doc_self[doc] = sum(float((whole[name].square() * inv).sum()) for name, inv in inverse.items())
        return dots.cpu()
