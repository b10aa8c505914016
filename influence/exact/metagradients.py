"""MAGIC (Ilyas & Engstrom 2025): the exact derivative of each query's log-probability after training with
respect to each document's weight, by reverse mode through the whole training run.

With ``F_q`` the completion's log-probability under the trained weights ``θ_T(w)`` (``influence/exact/replay.py``),
the score of document ``d`` is ``dF_q/dw_d`` at ``w = 1``: positive when upweighting ``d`` makes the completion
more likely, as influence's sign. The run is deterministic, so this is the retrain's response to first order
in the weights, with no approximation of the curvature, of the optimizer or of the trajectory.

Reverse mode carries the adjoint ``(θ̄, m̄, v̄)`` of the state from the last step back to the first. Step ``t``'s
transpose needs its state again: the forward pass keeps the state every ``every`` steps (``√T`` by default:
``√T`` states held, each step recomputed once), and each stretch is replayed from its checkpoint before it is
walked back. AdamW and clipping are elementwise and are transposed here by hand; the one second-order quantity,
the gradient's derivative along the adjoint ``ḡ`` in both the weights (``H ḡ``) and the tokens' loss weights
(what becomes ``dF/dw``), is one double-backward through the step's graph. The graph is built once per step and
shared by a block of queries, one double-backward each: a block of ``K`` queries costs one replay and ``K``
double-backwards, not ``K`` replays. A loop, not ``is_grads_batched`` (a vmap over the backward): on 2 cores the
vmap was no faster per query (0.10 s against 0.09 s at ``K = 8`` on the ``lds`` profile's model) and holds
``K`` copies of every intermediate.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from influence.exact.replay import (
    CLIP_EPS,
    Batches,
    Recipe,
    State,
    adamw,
    batch_loss,
    clip_factor,
    gradient_norm,
    initial_state,
    load_theta,
    step,
    views,
)


def checkpoints(model: torch.nn.Module, batches: Batches, recipe: Recipe, every: int) -> list[State]:
    """The states at steps ``0, every, 2·every, …`` and the final one, from one forward pass at ``w = 1``."""
    state, kept = initial_state(model), []
    for t in range(recipe.steps):
        if t % every == 0:
            kept.append(state.clone())
        state = step(model, batches, state, recipe)
    kept.append(state)
    return kept


def default_every(steps: int) -> int:
    return max(1, round(steps ** 0.5))


def transpose_step(model: torch.nn.Module, batches: Batches, state: State, recipe: Recipe, adjoint: State,
                   into: torch.Tensor) -> State:
    """The adjoint of ``state`` from the adjoint of the next state (``[K, P]`` each, one row per query), and each
    document's ``dF/dw`` of this step added into ``into`` (``[K, docs]``)."""
    ids, owners = batches.window(state.step)
    params = load_theta(model, state.theta)
    weight = torch.ones(ids.shape, dtype=state.theta.dtype, requires_grad=True)
    grads = torch.autograd.grad(batch_loss(model, ids, weight), params, create_graph=True)
    raw = torch.cat([g.reshape(-1) for g in grads]).detach()
    norm = gradient_norm(raw, params)
    factor = clip_factor(norm, recipe.max_grad_norm)
    theta_bar, decay = adjoint.theta, 1.0
    if recipe.optimizer == "sgd":  # θ' = θ - lr·ĝ
        g_hat_bar, m_bar, v_bar = -recipe.lrs[state.step] * theta_bar, adjoint.m, adjoint.v
    else:
        g_hat_bar, m_bar, v_bar, decay = _adamw_transpose(state, raw * factor, recipe, adjoint)
    g_bar = factor * g_hat_bar
    if recipe.max_grad_norm is not None and factor < 1:  # d factor / d norm = -max_norm / (norm + eps)²
        slope = -recipe.max_grad_norm / (norm + CLIP_EPS) ** 2
        g_bar = g_bar + (slope * (g_hat_bar @ raw) / norm)[:, None] * raw
    hessian = torch.empty_like(g_bar)
    for k in range(len(g_bar)):
        *along, per_token = torch.autograd.grad(grads, [*params, weight], grad_outputs=views(g_bar[k], params),
                                                retain_graph=k + 1 < len(g_bar))
        hessian[k] = torch.cat([a.reshape(-1) for a in along])
        into[k].index_add_(0, owners.reshape(-1), per_token.reshape(-1).double())
    return State(state.step, theta_bar * decay + hessian, m_bar, v_bar)


def _adamw_transpose(state: State, grad: torch.Tensor, recipe: Recipe,
                     adjoint: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """AdamW's update transposed: the adjoints of the clipped gradient and of the old moments, and the decay
    that carries the weights' adjoint back."""
    new = adamw(state, grad, recipe)
    b1, b2 = recipe.betas
    theta_bar = adjoint.theta
    # θ' = decay·θ - step_size·m'/denom, denom = root + eps, root = sqrt(v'/bias2)
    m_total = adjoint.m - theta_bar * (new.step_size / new.denom)
    root = new.v.sqrt() / new.bias2 ** 0.5  # d root / d v' = 1 / (2 root bias2); where v' = 0, m' = 0 too
    dv = torch.where(root > 0, new.step_size * new.m / (new.denom ** 2 * 2 * root * new.bias2), 0.0)
    v_total = adjoint.v + theta_bar * dv
    g_hat_bar = (1 - b1) * m_total + 2 * (1 - b2) * new.grad * v_total
    return g_hat_bar, b1 * m_total, b2 * v_total, new.decay


def reverse(model: torch.nn.Module, batches: Batches, recipe: Recipe, kept: list[State],
            final_adjoint: torch.Tensor, progress: bool = False) -> torch.Tensor:
    """``[K, docs]`` ``dF/dw`` from ``dF/dθ_T`` (``final_adjoint``, ``[K, P]``), walking back through the run (a bar
    of steps with ``progress``: a block of the ``lds`` run takes tens of minutes)."""
    k = final_adjoint.shape[0]
    adjoint = State(recipe.steps, final_adjoint.clone(), torch.zeros_like(final_adjoint),
                    torch.zeros_like(final_adjoint))
    into = torch.zeros(k, batches.n_docs, dtype=torch.float64)
    with tqdm(total=recipe.steps, desc=f"reverse pass, {k} rows", unit="step", disable=not progress) as bar:
        for start, end in reversed(list(zip(kept[:-1], kept[1:]))):
            stretch = [start]
            while stretch[-1].step + 1 < end.step:
                stretch.append(step(model, batches, stretch[-1], recipe))
            for state in reversed(stretch):
                adjoint = transpose_step(model, batches, state, recipe, adjoint, into)
                bar.update(1)
    return into
