"""MAGIC (influence/exact): the reverse pass through training is the exact derivative of the trained model's
output in each document's weight, and the differentiable replay is the training run itself.

The derivative checks run a float64 model written here: HF's Llama computes RMSNorm and the attention softmax in
float32 whatever the model's dtype, and that rounding makes the trained output noisy at 1e-8 in the weights, so
that no finite difference converges (measured: relative errors of 5% to 170% at ε = 1e-4 to 1e-6). In float64
the central difference agrees to 1e-8.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

from influence.exact.attribution import magic, stream_of
from influence.exact.metagradients import checkpoints, reverse
from influence.exact.replay import Batches, Recipe, initial_state, load_theta, replay
from influence.measurements import Measurements
from pipeline.core.config import ModelConfig, PretrainConfig
from pipeline.core.model import build_model, train_tokenizer
from pipeline.core.schemas import WHOLE
from pipeline.core.training import kept_tokens, token_stream, train


class Float64LM(torch.nn.Module):
    """One causal attention layer and an MLP, all in float64, taking the replay's additive attention mask."""

    def __init__(self, vocab: int = 20, width: int = 8, context: int = 16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width, dtype=torch.float64)
        self.position = torch.nn.Parameter(0.1 * torch.randn(context, width, dtype=torch.float64))
        self.q, self.k, self.v = (torch.nn.Linear(width, width, dtype=torch.float64) for _ in range(3))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 2 * width, dtype=torch.float64), torch.nn.Tanh(),
                                       torch.nn.Linear(2 * width, width, dtype=torch.float64))
        self.out = torch.nn.Linear(width, vocab, dtype=torch.float64)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> types.SimpleNamespace:
        """As a causal LM: ``attention_mask`` additive (the replay's), else causal; with ``labels``, the mean loss."""
        if attention_mask is None:
            context = input_ids.shape[1]
            attention_mask = torch.full((context, context), -1e300, dtype=torch.float64).triu(1)[None, None]
        h = self.embed(input_ids) + self.position[: input_ids.shape[1]]
        logits = self.q(h) @ self.k(h).transpose(1, 2) / h.shape[-1] ** 0.5 + attention_mask[:, 0]
        h = h + torch.softmax(logits, -1) @ self.v(h)
        out = self.out(h + self.mlp(h))
        loss = None if labels is None else torch.nn.functional.cross_entropy(out[:, :-1].flatten(0, 1),
                                                                            labels[:, 1:].flatten())
        return types.SimpleNamespace(logits=out, loss=loss)


QUERY = torch.tensor([[1, 5, 7, 2, 9]])


def log_prob(model: torch.nn.Module, theta: torch.Tensor) -> torch.Tensor:
    """F: the query's mean next-token log-probability under ``theta``."""
    load_theta(model, theta)
    logits = model(QUERY).logits
    return -torch.nn.functional.cross_entropy(logits[0, :-1], QUERY[0, 1:])


def metagradient(model: torch.nn.Module, batches: Batches, recipe: Recipe, every: int = 2) -> tuple[list, torch.Tensor]:
    kept = checkpoints(model, batches, recipe, every)
    params = load_theta(model, kept[-1].theta)
    seed = torch.nn.utils.parameters_to_vector(torch.autograd.grad(log_prob(model, kept[-1].theta), params))
    return kept, reverse(model, batches, recipe, kept, seed[None])[0]


@pytest.fixture
def world():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, size=30)
    return Float64LM(), rng.integers(0, 20, size=lengths.sum()).astype(np.int32), lengths


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.1])  # 0.1: every step clipped, so the clip's transpose counts
def test_magic_is_the_central_difference_of_training_with_a_document_reweighted(world, max_grad_norm):
    model, stream, lengths = world
    recipe = dataclasses.replace(Recipe.of(PretrainConfig(steps=6, batch_size=3, lr=1e-2, warmup_steps=2,
                                                          weight_decay=0.1), 12, 0), max_grad_norm=max_grad_norm)
    batches = Batches(stream, lengths, recipe)
    kept, scores = metagradient(model, batches, recipe)
    in_batches = set(torch.cat([batches.window(t)[1].reshape(-1) for t in range(recipe.steps)]).tolist())
    assert (scores[[d for d in range(30) if d not in in_batches]] == 0).all()  # a document never trained on: 0
    seen = torch.nonzero(scores).flatten()[:6].tolist()
    assert len(seen) == 6
    eps = 1e-4
    for doc in seen:
        ends = []
        for sign in (1, -1):
            weights = torch.ones(30, dtype=torch.float64)
            weights[doc] += sign * eps
            ends.append(log_prob(model, replay(model, batches, recipe, weights, start=kept[0]).theta).item())
        difference = (ends[0] - ends[1]) / (2 * eps)
        assert difference == pytest.approx(scores[doc].item(), rel=1e-5), doc  # measured: within 4e-8


def test_one_sgd_step_is_the_centred_gradient_dot_product(world):
    """One SGD step on whole documents, unclipped: ``dF/dw_d = lr/N (q·∇L_d - mean_b q·∇L_b)``, with ``q`` the
    query's NLL gradient after the step, ``∇L_d`` the document's summed-loss gradient before it (the identity
    method's score) and ``N`` the tokens the batch predicts. Upweighting one document of a mean-normalised batch
    downweights the others: hence the centring."""
    model, _, _ = world
    context, docs = 10, 4
    stream = np.random.default_rng(1).integers(0, 20, size=context * docs).astype(np.int32)
    recipe = Recipe(steps=1, batch_size=3, context=context, seed=0, lrs=(0.05,), weight_decay=0.0,
                    max_grad_norm=None, optimizer="sgd")
    batches = Batches(stream, np.full(docs, context), recipe)
    batches.starts = [torch.tensor([0, 2 * context, 3 * context])]  # each window one whole document
    kept, scores = metagradient(model, batches, recipe)

    params = load_theta(model, kept[-1].theta)
    query = -torch.nn.utils.parameters_to_vector(torch.autograd.grad(log_prob(model, kept[-1].theta), params))
    params = load_theta(model, kept[0].theta)
    identity = []
    for doc in (0, 2, 3):
        ids = torch.from_numpy(stream[doc * context:(doc + 1) * context]).long()[None]
        loss = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:], reduction="sum")
        identity.append(query @ torch.nn.utils.parameters_to_vector(torch.autograd.grad(loss, params)))
    identity = torch.stack(identity)
    expected = 0.05 / (3 * (context - 1)) * (identity - identity.mean())
    assert scores[[0, 2, 3]] == pytest.approx(expected, rel=1e-9)
    assert scores[1] == 0  # not in the batch


@pytest.fixture(scope="module")
def tiny_run():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "one", "two", "three", "plus", "is"]
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(40)]
    tokenizer = train_tokenizer(texts, 300)
    model_cfg = ModelConfig(vocab_size=300, n_layers=1, hidden_size=32, intermediate_size=64, n_heads=2, context=16)
    return tokenizer, texts, model_cfg, PretrainConfig(steps=20, batch_size=4, lr=1e-2, warmup_steps=3,
                                                       weight_decay=0.1)


def trained_weights(tokenizer, texts, model_cfg, cfg, keep=None) -> torch.Tensor:
    model = build_model(model_cfg, tokenizer, 0)
    train(model, token_stream(tokenizer, texts), cfg, model_cfg.context, 0, keep=keep, progress=False)
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


def test_the_replay_is_the_training_run_and_weight_zero_its_retrain(tiny_run):
    """At w = 1 the replay ends where ``train`` does, bit for bit; at w_d = 0 where the retrain without d does, to
    float rounding (the weighted loss runs eager attention, ``train`` SDPA). The retrain
    keeps one difference: a window that starts inside a removed document, whose first kept token SDPA predicts
    from an all-masked row (zeros) and the replay from the limit of its softmax (a uniform mix), so the
    documents removed here start no window."""
    tokenizer, texts, model_cfg, cfg = tiny_run
    recipe = Recipe.of(cfg, model_cfg.context, 0)
    batches = Batches(*stream_of(tokenizer, texts), recipe)
    model = build_model(model_cfg, tokenizer, 0)
    start = initial_state(model)
    assert torch.equal(replay(model, batches, recipe, start=start).theta, trained_weights(tokenizer, texts, model_cfg,
                                                                                          cfg))  # bit for bit

    starting = set(batches.owner[torch.stack(batches.starts).reshape(-1)].tolist())
    inside = set(torch.cat([batches.window(t)[1].reshape(-1) for t in range(cfg.steps)]).tolist())
    removed = sorted(inside - starting)[:2]
    weights = torch.ones(len(texts))
    weights[removed] = 0
    keep = kept_tokens(tokenizer, texts, [d not in removed for d in range(len(texts))])
    retrained = trained_weights(tokenizer, texts, model_cfg, cfg, keep)
    assert (replay(model, batches, recipe, weights, start=start).theta - retrained).abs().max() < 1e-5
    assert (retrained - trained_weights(tokenizer, texts, model_cfg, cfg)).abs().max() > 1e-3  # it removed something


def test_magic_scores_every_row_and_the_segments_add_up_to_the_completion(tiny_run):
    tokenizer, texts, model_cfg, cfg = tiny_run
    cfg = dataclasses.replace(cfg, steps=5)
    prompt, completion = "alpha plus beta", "is gamma one"
    n_tokens = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
    labels = ["scaffold"] + ["answer"] * (n_tokens - 1)
    rows = Measurements([("q", WHOLE), ("q", "answer"), ("q", "scaffold")], np.ones(3), [prompt], [completion],
                        {"q": labels}, {})
    model = build_model(model_cfg, tokenizer, 0)
    scores, _ = magic(model, tokenizer, texts, Recipe.of(cfg, model_cfg.context, 0), rows, block=1, progress=False)
    assert scores.shape == (3, len(texts)) and np.abs(scores).max() > 0
    np.testing.assert_allclose(scores[0], scores[1] + scores[2])
    whole = Measurements([("q", WHOLE)], np.ones(1), [prompt], [completion], {}, {})
    again, _ = magic(build_model(model_cfg, tokenizer, 0), tokenizer, texts, Recipe.of(cfg, model_cfg.context, 0),
                     whole, progress=False)
    np.testing.assert_allclose(again[0], scores[0], rtol=1e-4, atol=1e-6 * np.abs(scores[0]).max())  # float32


def test_the_cost_bench_runs_on_the_test_profile(capsys):
    from pipeline.bench import magic as bench

    bench.main(["--profile", "test", "--steps", "1", "--blocks", "1", "2", "--queries", "3"])
    out = capsys.readouterr().out
    assert "transposed step, K =  2, per query" in out and "projected: 3 queries x 500 steps" in out
