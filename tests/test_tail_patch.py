"""Tail-patch against its first-order limit: one SGD step at a tiny learning rate on a document raises the
completion's log-probability by the learning rate times the ``identity`` method's score."""

from pathlib import Path

import numpy as np
import pytest
import torch

from influence import data
from influence.curvature import factors
from influence.retraining.tail_patch import completion_log_prob, sgd, tail_patch
from influence.scoring.scorer import Scorer
from influence.task import tracked_module_names
from pipeline.core.corpus_reader import read_texts
from pipeline.core.model import load_model
from pipeline.core.training import FINAL_OPTIMIZER, adamw_after_training

# The first-order limit: the second-order term shrinks with lr against the first-order one (0.76% of the largest
# rise at 1e-5). Not much smaller: the float64 model's RMSNorm still computes in float32, and its rounding moves
# log p by about 1e-6 nats between two nearby weights (1.5% at 1e-7, 0.14% at 1e-6).
LR = 1e-6


@pytest.fixture(scope="module")
def patched(trained, tmp_path_factory):
    """Four trivia queries and eight documents (some in several windows) of the trained test model, the identity
    method's scores from the scoring pass, and each document's tail-patch with SGD on the tracked weights."""
    model, tok = load_model(trained.model.dir)
    texts = read_texts(trained.corpus.out_dir)
    trivia = [t for t in texts if t.count("\n") >= 1 and t.split("\n")[-2].endswith("?")][:4]
    queries = data.queries(tok, [t.split("\n")[-2] for t in trivia], [t.split("\n")[-1] for t in trivia])
    docs = data.documents(tok, texts[:8], 24)  # a short context: several documents in windows
    root = tmp_path_factory.mktemp("factors")
    factors.fit(model, tok.pad_token_id, docs, "ekfac", "mlp", 8, root)
    scores = Scorer(load_model(trained.model.dir)[0], tok.pad_token_id, root, queries, 8,
                    variants=True).attribute(docs.by_length()).identity
    model = load_model(trained.model.dir)[0].double()  # float64: a rise of 1e-4 nats is read exactly
    tracked = [model.get_submodule(name).weight for name in tracked_module_names(model, "mlp")]
    windows = [[item for item, owner in zip(docs.items, docs.owners) if owner == d] for d in range(docs.n_docs)]
    rises = tail_patch(model, queries.items, windows, tok.pad_token_id, sgd(LR), tracked).T
    return model, tok, queries, windows, scores, rises


def test_sgd_tail_patch_is_the_learning_rate_times_the_identity_score(patched):
    _, _, _, windows, scores, rises = patched
    assert any(len(w) > 1 for w in windows)  # documents in windows: their steps are on the whole document
    error = np.abs(rises - LR * scores).max() / np.abs(LR * scores).max()
    assert error < 0.01
    assert np.sign(rises[np.abs(scores) > 0.1 * np.abs(scores).max()]).tolist() == \
        np.sign(scores[np.abs(scores) > 0.1 * np.abs(scores).max()]).tolist()


def test_each_patch_starts_from_the_same_weights_and_the_model_is_left_as_given(patched):
    model, tok, queries, windows, _, rises = patched
    before = completion_log_prob(model, queries.items, tok.pad_token_id)
    model.train()  # as a caller might hold it: given back in train mode
    again = tail_patch(model, queries.items[:1], windows[::-1], tok.pad_token_id, sgd(LR))[:, 0]
    tracked_only = rises[0][::-1]
    assert again.shape == tracked_only.shape and not np.allclose(again, tracked_only)  # every weight moves here
    assert completion_log_prob(model, queries.items, tok.pad_token_id).tolist() == before.tolist()
    in_order = tail_patch(model, queries.items[:1], windows, tok.pad_token_id, sgd(LR))[:, 0]
    assert in_order.tolist() == again[::-1].tolist()  # the order of the documents changes nothing
    assert model.training and all(p.grad is None for p in model.parameters())


def test_pretraining_keeps_adamws_final_state_and_each_patch_starts_from_it(trained):
    """models/lm/optimizer.pt is AdamW after the last step (its step count, its last learning rate of the cosine
    schedule); a patch with it leaves it untouched, so the same document patched twice rises the same."""
    path = Path(trained.model.dir) / FINAL_OPTIMIZER
    saved = torch.load(path, weights_only=False)
    steps = {float(s["step"]) for s in saved["optimizer"]["state"].values()}
    assert steps == {float(trained.pretrain.steps)}
    assert saved["lr"] == [pytest.approx(0.1 * trained.pretrain.lr)]  # the schedule's floor, where training ended
    model, tok = load_model(trained.model.dir)
    assert len(saved["optimizer"]["state"]) == len(list(model.parameters()))
    adamw, clip = adamw_after_training(path)
    texts = read_texts(trained.corpus.out_dir)
    query = data.queries(tok, [texts[0][:20]], [texts[0][20:40]]).items
    windows = [data.documents(tok, [texts[1]], 64).items] * 2
    rises = tail_patch(model, query, windows, tok.pad_token_id, adamw, max_grad_norm=clip, mean_loss=True)
    assert rises[0, 0] == rises[1, 0] != 0
    sgd_rises = tail_patch(model, query, windows[:1], tok.pad_token_id, sgd(LR))
    assert abs(sgd_rises[0, 0]) < abs(rises[0, 0])  # AdamW's step is far larger than a first-order one
