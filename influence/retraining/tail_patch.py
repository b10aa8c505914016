"""Tail-patch (Chang et al. 2024, TrackStar): what one training step on one document does to a completion.

From the final weights, take one optimizer step on a document's summed token loss (its windows' sum, as
influence's L(d)) and measure how much the query's completion log-probability rises; then restore the
weights. Each document is patched alone, from the same weights. With plain SGD at a small learning rate
the rise is, to first order, the learning rate times the gradient dot product of the completion and the
document: the ``identity`` method's score (tests/test_tail_patch.py holds them to 1%). A method whose top
documents raise the completion more predicts what training on them does; ``make validate`` asks that of
every method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from influence.task import summed_token_nll
from pipeline.core.model import IGNORE, pad_batch, sequence_nll

Optimizer = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def sgd(lr: float) -> Optimizer:
    """Plain SGD: the first-order limit, where tail-patch is the gradient dot product times ``lr``."""
    return lambda params: torch.optim.SGD(params, lr=lr)


def completion_log_prob(model, queries: Sequence[tuple], pad_id: int) -> np.ndarray:
    """Each query's log p(completion | prompt) in nats: minus the summed NLL of its completion's tokens, in float64
    (a step's rise of a thousandth of a nat is lost in a float32 sum of a few nats)."""
    with torch.no_grad():
        return -sequence_nll(model, pad_batch(list(queries), pad_id), dtype=torch.float64).numpy()


def tail_patch(model, queries: Sequence[tuple], documents: Sequence[Sequence[tuple]], pad_id: int, optimizer: Optimizer,
               params: list[torch.nn.Parameter] | None = None, max_grad_norm: float | None = None,
               mean_loss: bool = False) -> np.ndarray:
    """``[documents, queries]``: Δ log p of each query's completion after one step of ``optimizer`` on each
    document alone (a document is its windows, as ``data.Encoded`` items), from the same weights each time;
    ``params``: what the step updates (every trainable parameter by default). A step as training takes it:
    ``mean_loss`` (the document's mean token loss, not its sum) and ``max_grad_norm`` (the gradient clipped
    first). The model is left as it was given."""
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    training = model.training
    model.eval()  # no dropout: the measurement before and after sees the same function of the weights
    before = completion_log_prob(model, queries, pad_id)
    rises = []
    try:
        for windows in documents:
            step = optimizer(params)
            model.zero_grad(set_to_none=True)
            batch = pad_batch(list(windows), pad_id)
            loss = summed_token_nll(model, batch)
            (loss / (batch["labels"][:, 1:] != IGNORE).sum() if mean_loss else loss).backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            step.step()
            rises.append(completion_log_prob(model, queries, pad_id) - before)
            with torch.no_grad():
                for p, value in zip(params, saved):
                    p.copy_(value)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(training)
    return np.asarray(rises, dtype=np.float64).reshape(len(documents), len(queries))
