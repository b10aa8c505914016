"""The training run as a function of each document's weight: pretrain's run, replayed differentiably.

``pipeline/core/training.py`` trains with AdamW (decoupled weight decay), a warmup and cosine schedule and
gradient clipping, on windows of one token stream drawn by a seeded generator. Here every document ``d`` has a
weight ``w_d`` that scales it in every window it falls in, in two places:

- its tokens' loss terms weigh ``w_d``, and a batch's loss is their weighted mean (the sum over the weights);
- every attention logit onto one of its tokens gets ``log w_d``.

At ``w = 1`` that is the run itself. At ``w_d = 0`` it is the retrain without ``d``
(``influence/retraining/retrains.py``): its tokens are neither predicted (weight 0, and the mean is over
the rest, as HF's mean over the tokens not masked) nor attended to (``log 0``: the mask's most negative
logit). So a derivative in ``w`` at 1 is the first-order prediction of exactly what a retrain measures. (One
case differs at ``w_d = 0``: a window that starts inside a removed document, whose all-masked query rows SDPA
answers with zeros and the softmax's limit with a uniform mix; one loss term per such window.)

The optimizer is written out rather than taken from ``torch.optim.AdamW``: its update must be replayed in the
same arithmetic forwards and transposed backwards (``influence/exact/metagradients.py``), and torch's
optimizers are not differentiable in their state. ``tests/test_magic.py`` checks the replay against
``train``'s weights, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from pipeline.core.config import PretrainConfig
from pipeline.core.training import BETAS, MAX_GRAD_NORM

EPS = 1e-8  # torch.optim.AdamW's default, which training uses
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s: max_norm / (norm + 1e-6)


@dataclass(frozen=True)
class Recipe:
    """What a deterministic training run is, beside its data: the steps, the batches and the optimizer."""

    steps: int
    batch_size: int
    context: int
    seed: int
    lrs: tuple[float, ...]  # the learning rate of each step
    weight_decay: float
    betas: tuple[float, float] = BETAS
    eps: float = EPS
    max_grad_norm: float | None = MAX_GRAD_NORM  # None: no clipping
    optimizer: str = "adamw"  # or "sgd": θ - lr·g, no moments and no weight decay (tests/test_magic.py's closed form)

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}: adamw or sgd")
        if len(self.lrs) != self.steps:
            raise ValueError(f"{len(self.lrs)} learning rates for {self.steps} steps")

    @classmethod
    def of(cls, cfg: PretrainConfig, context: int, seed: int) -> Recipe:
        """The recipe ``train`` follows for ``cfg``: its schedule read from the same scheduler, step by step."""
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)  # train's scheduler, as train builds it
        sched = get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps, min_lr_rate=0.1)
        lrs = []
        for _ in range(cfg.steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return cls(cfg.steps, cfg.batch_size, context, seed, tuple(lrs), cfg.weight_decay)


@dataclass
class State:
    """The training state after some steps: weights, AdamW's two moments, each one flat float32 vector."""

    step: int
    theta: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor

    def clone(self) -> State:
        return State(self.step, self.theta.clone(), self.m.clone(), self.v.clone())


def initial_state(model: torch.nn.Module) -> State:
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    return State(0, theta, torch.zeros_like(theta), torch.zeros_like(theta))


class Batches:
    """Each step's windows, as ``train`` draws them, and the document that owns each of their tokens."""

    def __init__(self, stream: np.ndarray, doc_lengths: np.ndarray, recipe: Recipe) -> None:
        if len(stream) != int(np.sum(doc_lengths)):
            raise ValueError(f"{len(stream)} stream tokens, but the documents' lengths add up to {np.sum(doc_lengths)}")
        self.data = torch.from_numpy(stream.astype(np.int64))
        self.owner = torch.from_numpy(np.repeat(np.arange(len(doc_lengths)), doc_lengths))
        self.n_docs = len(doc_lengths)
        gen = torch.Generator().manual_seed(recipe.seed)  # train's: on the CPU, one randint call a step
        self.starts = [torch.randint(0, len(self.data) - recipe.context, (recipe.batch_size,), generator=gen)
                       for _ in range(recipe.steps)]
        self.offsets = torch.arange(recipe.context)

    def window(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, owners)``: step ``step``'s ``[batch, context]`` token ids and their documents."""
        at = self.starts[step][:, None] + self.offsets
        return self.data[at], self.owner[at]


def attention_bias(weight: torch.Tensor) -> torch.Tensor:
    """``[batch, 1, C, C]`` additive attention mask: causal, plus ``log w`` of each key's document (the most
    negative float at ``w = 0``, as HF's masks)."""
    lowest = torch.finfo(weight.dtype).min
    context = weight.shape[1]
    causal = torch.full((context, context), lowest, dtype=weight.dtype).triu(1)
    return causal + torch.log(weight).clamp(min=lowest)[:, None, None, :]


def batch_loss(model: torch.nn.Module, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The weighted mean next-token loss of ``[batch, C]`` windows, ``weight`` per token (its document's), with eager
    attention (twice differentiable)."""
    with attention(model, "eager"):
        logits = model(input_ids=ids, attention_mask=attention_bias(weight)).logits.to(weight.dtype)
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    counted = weight[:, 1:]
    return (losses * counted).sum() / counted.sum()


def load_theta(model: torch.nn.Module, theta: torch.Tensor) -> list[torch.nn.Parameter]:
    """Copy the flat ``theta`` into ``model``'s parameters; returns them, in ``theta``'s order."""
    params = list(model.parameters())
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta, params)
    return params


def gradient_norm(grad: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The norm ``clip_grad_norm_`` clips by, in its arithmetic: each parameter's norm, then the norm of those."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in views(grad, params)]))


def views(flat: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """A flat vector (or ``[K, P]`` rows) as one tensor per parameter, in ``params``' order."""
    out, at = [], 0
    for p in params:
        out.append(flat[..., at:at + p.numel()].reshape(*flat.shape[:-1], *p.shape))
        at += p.numel()
    return out


def clip_factor(norm: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """The factor clipping multiplies the gradient by: ``min(1, max_norm / (norm + 1e-6))``."""
    if max_norm is None:
        return torch.ones_like(norm)
    return (max_norm / (norm + CLIP_EPS)).clamp(max=1.0)


@dataclass
class Moments:
    """One AdamW update's intermediate quantities, which its transpose needs."""

    grad: torch.Tensor  # the clipped gradient
    m: torch.Tensor  # the new moments
    v: torch.Tensor
    denom: torch.Tensor  # sqrt(v) / sqrt(bias2) + eps
    bias2: float  # 1 - beta2^t
    step_size: float  # lr / bias1
    decay: float  # 1 - lr * weight decay


def adamw(state: State, grad: torch.Tensor, recipe: Recipe) -> Moments:
    """AdamW's update of ``state`` with the clipped gradient ``grad``, in the operations ``torch.optim.AdamW`` runs on
    the CPU (its single-tensor path), so that the replay retraces ``train`` bit for bit."""
    b1, b2 = recipe.betas
    lr, t = recipe.lrs[state.step], state.step + 1
    m = torch.lerp(state.m, grad, 1 - b1)
    v = (state.v * b2).addcmul_(grad, grad, value=1 - b2)
    bias2 = 1 - b2 ** t
    denom = (v.sqrt() / bias2 ** 0.5).add_(recipe.eps)
    return Moments(grad, m, v, denom, bias2, lr / (1 - b1 ** t), 1 - lr * recipe.weight_decay)


def step(model: torch.nn.Module, batches: Batches, state: State, recipe: Recipe,
         weights: torch.Tensor | None = None) -> State:
    """One training step from ``state``; ``weights`` (per document; None = all 1) scale the documents.

    At ``w = 1`` the loss is ``train``'s own (the model's attention, no mask, HF's loss), so the replay's states are
    the run's; with weights, the weighted loss (``batch_loss``: eager attention, the weights' logits)."""
    ids, owners = batches.window(state.step)
    params = load_theta(model, state.theta)
    with torch.enable_grad():
        if weights is None:
            with attention(model, "sdpa"):
                loss = model(input_ids=ids, labels=ids).loss
        else:
            loss = batch_loss(model, ids, weights[owners].to(state.theta.dtype))
        grad = torch.nn.utils.parameters_to_vector(torch.autograd.grad(loss, params))
    grad = grad * clip_factor(gradient_norm(grad, params), recipe.max_grad_norm)
    if recipe.optimizer == "sgd":
        return State(state.step + 1, state.theta - recipe.lrs[state.step] * grad, state.m, state.v)
    new = adamw(state, grad, recipe)
    theta = (state.theta * new.decay).addcdiv_(new.m, new.denom, value=-new.step_size)
    return State(state.step + 1, theta, new.m, new.v)


@contextlib.contextmanager
def attention(model: torch.nn.Module, implementation: str) -> Iterator[None]:
    """``model`` with another attention implementation for a while: the run's own (SDPA) for the forward replay, eager
    (twice differentiable: SDPA's CPU kernels have no double backward) for the weighted loss and its transpose."""
    if not hasattr(model, "set_attn_implementation"):  # not a transformers model: one attention, as it is
        yield
        return
    was = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(was)


def replay(model: torch.nn.Module, batches: Batches, recipe: Recipe, weights: torch.Tensor | None = None,
           start: State | None = None, until: int | None = None) -> State:
    """The run from ``start`` (the initial state: ``model``'s weights) to step ``until`` (the end)."""
    state = start.clone() if start is not None else initial_state(model)
    for _ in range(state.step, recipe.steps if until is None else until):
        state = step(model, batches, state, recipe, weights)
    return state
