"""MAGIC scores of every training document on every measured completion: the replay, then the reverse pass.

``magic`` takes the model as training initialised it, the run's documents in stream order and its ``Recipe``;
it replays the run (``influence/exact/replay.py``), keeps the states it needs, seeds one adjoint per measured
row with the gradient of that row's log-probability at the replay's end, and walks back in blocks of rows
(``influence/exact/metagradients.py``). Rows are ``influence/measurements.py``'s: the whole completion, or
each answer segment (the segments add up to ``all`` as influence's do, since ``dF/dw`` is linear in ``F``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from influence.exact.metagradients import checkpoints, default_every, reverse
from influence.exact.replay import Batches, Recipe, State, load_theta
from influence.measurements import Measurements, encoded
from pipeline.core.model import pad_batch, sequence_nll


@dataclass(frozen=True)
class Replay:
    """A training run replayed once, ready for reverse passes: the model (its weights are overwritten), the run's
    batches and recipe, and the states kept (the last one the run's end)."""

    model: torch.nn.Module
    tokenizer: object
    batches: Batches
    recipe: Recipe
    kept: list[State]

    @property
    def final(self) -> State:
        return self.kept[-1]

    def metagradients(self, items: Sequence[tuple], progress: bool = False) -> np.ndarray:
        """``[len(items), docs]``: each item's ``dF/dw`` (float64), its adjoints walked back together."""
        seeds = log_prob_gradients(self.model, self.tokenizer, self.final.theta, items)
        return reverse(self.model, self.batches, self.recipe, self.kept, seeds, progress).numpy()


def stream_of(tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The token stream ``train`` reads (``training.token_stream``'s) and each document's length."""
    ids = tokenizer(list(texts))["input_ids"]
    return np.fromiter((t for doc in ids for t in doc), dtype=np.int32), np.array([len(doc) for doc in ids])


def log_prob_gradients(model: torch.nn.Module, tokenizer, theta: torch.Tensor, items: Sequence[tuple]) -> torch.Tensor:
    """``[rows, P]``: each item's gradient of its counted tokens' log-probability (``-NLL``) at ``theta``."""
    params = load_theta(model, theta)
    out = torch.empty(len(items), theta.numel(), dtype=theta.dtype)
    for i, item in enumerate(items):
        nll = sequence_nll(model, pad_batch([item], tokenizer.pad_token_id), dtype=theta.dtype).sum()
        out[i] = -torch.nn.utils.parameters_to_vector(torch.autograd.grad(nll, params))
    return out


def replayed(model: torch.nn.Module, tokenizer, texts: Sequence[str], recipe: Recipe, every: int = 0) -> Replay:
    """The run that trained ``model`` from its current (initial) weights on ``texts``, replayed once at ``w = 1``
    with its state kept every ``every`` steps (0: √steps)."""
    model.train()  # as training: the world's models have no dropout (a model with dropout trains at random)
    batches = Batches(*stream_of(tokenizer, texts), recipe)
    return Replay(model, tokenizer, batches, recipe, checkpoints(model, batches, recipe, every or default_every(
        recipe.steps)))


def magic(model: torch.nn.Module, tokenizer, texts: Sequence[str], recipe: Recipe, rows: Measurements,
          block: int = 16, every: int = 0, progress: bool = True) -> tuple[np.ndarray, Replay]:
    """Every document's ``dF/dw`` on every row of ``rows`` (``[len(rows.keys), docs]``), in one process, and the
    replay; ``model`` holds the run's initial weights. ``block`` rows share each reverse pass."""
    replay = replayed(model, tokenizer, texts, recipe, every)
    items = encoded(tokenizer, rows).items
    measured = np.zeros((len(items), replay.batches.n_docs))
    for at in range(0, len(items), block):
        measured[at:at + block] = replay.metagradients(items[at:at + block], progress)
    return rows.expand(measured), replay
