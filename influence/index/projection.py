"""The gradient index's projection: per tracked layer, a ``k × d_out`` matrix for its output gradients and a
``k × d_in`` one for its inputs (LoGra, Choe et al. 2024).

A layer's gradient over one item is ``G = Σ_t g_t a_tᵀ`` (``d_out × d_in``, a ones column in ``a`` for a
bias, as kronfluence flattens it). Its projection ``P_out G P_inᵀ = Σ_t (P_out g_t)(P_in a_t)ᵀ`` is computed
from projected outputs and inputs, never forming ``G``: ``k²`` numbers per layer. The query side is
preconditioned with the full EK-FAC first, so the dot product of two projections estimates the exact score.

Three kinds, compared by measured fidelity per byte (docs/engineering.md):

- ``random``: the first ``k`` rows of a seeded Haar-random orthogonal matrix, scaled by ``sqrt(d / k)`` so that
  ``E[Pᵀ P] = I`` (a Johnson-Lindenstrauss projection; orthogonal rows spread its error better than i.i.d.
  Gaussian ones);
- ``eigen``: the ``k`` EK-FAC eigenvectors whose directions carry the most curvature (the largest row and
  column sums of the corrected eigenvalues ``Λ``), unscaled;
- ``whitened``: ``random`` in the EK-FAC eigenbasis after scaling each side by a Kronecker fit of
  ``(Λ + damping)^(-1/2)`` (``u_o v_i ≈ Λ_oi + damping`` from its row and column means), the query side
  scaled back by ``u^(1/2)``, ``v^(1/2)`` (``query_scales``), so the product is still unbiased. A random
  projection's error grows with the norms of both vectors, and preconditioning puts most of the query's
  norm in low-curvature directions where documents have little: whitening balances the two.

At ``k ≥ d`` every kind is exact (a test checks this).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from kronfluence.utils.constants import ACTIVATION_EIGENVECTORS_NAME, GRADIENT_EIGENVECTORS_NAME, LAMBDA_MATRIX_NAME

from pipeline.core.atomic import atomic_path

KINDS = ("random", "eigen", "whitened")


@dataclass(frozen=True)
class Projection:
    """Per tracked layer, in the factors' order: ``(P_out [k_out, d_out], P_in [k_in, d_in])``, float32, and
    the query side's scales in the eigenbasis (``[d_out]``, ``[d_in]``; ones but for ``whitened``)."""

    kind: str
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    query_scales: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def width(self) -> int:
        """Numbers stored per document: the sum over layers of ``k_out × k_in``."""
        return sum(p_out.shape[0] * p_in.shape[0] for p_out, p_in in self.layers.values())

    def save(self, path: Path) -> None:
        arrays = {f"{name}|{side}": m.numpy() for name in self.layers
                  for side, m in zip("oiuv", (*self.layers[name], *self.query_scales[name]))}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, kind=np.asarray(self.kind), **arrays)

    @classmethod
    def load(cls, path: Path) -> Projection:
        with np.load(path) as f:
            names = dict.fromkeys(key.rsplit("|", 1)[0] for key in f.files if "|" in key)
            pair = {n: {side: torch.from_numpy(f[f"{n}|{side}"]) for side in "oiuv"} for n in names}
            return cls(str(f["kind"]), {n: (p["o"], p["i"]) for n, p in pair.items()},
                       {n: (p["u"], p["v"]) for n, p in pair.items()})


def _random_rows(d: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` orthonormal rows of a Haar-random ``d × d`` orthogonal matrix, times ``sqrt(d / k)``."""
    q, r = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # the sign fix that makes QR's Q Haar-distributed
    return q.T * (d / k) ** 0.5


def _top_eigenvectors(vectors: torch.Tensor, curvature: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` columns of ``vectors`` with the largest ``curvature``, as rows (in their original order)."""
    keep = torch.sort(torch.topk(curvature.double(), k).indices).values
    return vectors[:, keep].T.float().contiguous()


def make(kind: str, k: int, seed: int, storages: dict[str, dict]) -> Projection:
    """The projection of every tracked layer, from its prepared kronfluence storage (eigenvectors and
    ``1 / (Λ + damping)``): ``k`` per side, or the layer's own size where that is smaller."""
    if kind not in KINDS:
        raise ValueError(f"unknown projection {kind!r}: use one of {', '.join(KINDS)}")
    layers, scales = {}, {}
    for index, (name, storage) in enumerate(storages.items()):
        q_a = storage[ACTIVATION_EIGENVECTORS_NAME].cpu().double()
        q_g = storage[GRADIENT_EIGENVECTORS_NAME].cpu().double()
        d_out, d_in = q_g.shape[0], q_a.shape[0]
        k_out, k_in = min(k, d_out), min(k, d_in)
        curvature = 1.0 / storage[LAMBDA_MATRIX_NAME].double().cpu()  # Λ + damping: kronfluence kept its reciprocal
        u, v = torch.ones(d_out, dtype=torch.float64), torch.ones(d_in, dtype=torch.float64)
        if kind == "eigen":
            layers[name] = (_top_eigenvectors(q_g, curvature.sum(dim=1), k_out),
                            _top_eigenvectors(q_a, curvature.sum(dim=0), k_in))
        else:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
            s_out, s_in = _random_rows(d_out, k_out, generator), _random_rows(d_in, k_in, generator)
            if kind == "random":
                layers[name] = (s_out.float(), s_in.float())
            else:  # the random rows act in the eigenbasis, on the whitened gradient
                u, v = curvature.mean(dim=1), curvature.mean(dim=0) / curvature.mean()
                layers[name] = (((s_out / u.sqrt()) @ q_g.T).float(), ((s_in / v.sqrt()) @ q_a.T).float())
        scales[name] = (u.float(), v.float())
    return Projection(kind, layers, scales)
