"""Influence scores against oracles: plain autograd, kronfluence's own pairwise scores, planted documents."""

from functools import partial

import numpy as np
import pytest
import torch
from kronfluence.analyzer import prepare_model
from kronfluence.arguments import ScoreArguments
from kronfluence.utils.dataset import DataLoaderKwargs
from scipy.stats import spearmanr

from influence import data
from influence.curvature import factors
from influence.scoring.scorer import Scorer
from influence.task import CausalLMTask, summed_token_nll
from pipeline.core.corpus_reader import read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import build_model, load_model, pad_batch


@pytest.fixture(scope="module")
def world(trained):
    """The trained test-profile model, its documents, and queries cut from trivia documents."""
    model, tok = load_model(trained.model.dir)
    texts = read_texts(trained.corpus.out_dir)
    trivia = [t for t in texts if t.count("\n") >= 1 and t.split("\n")[-2].endswith("?")][:4]
    prompts = [t.split("\n")[-2] for t in trivia]
    completions = [t.split("\n")[-1] for t in trivia]
    docs = data.documents(tok, texts[:24], trained.model.context)
    return trained, tok, docs, data.queries(tok, prompts, completions)


def fit(trained, tok, docs, strategy, root, batch_size=8, **kwargs):
    model, _ = load_model(trained.model.dir)
    return factors.fit(model, tok.pad_token_id, docs, strategy, "mlp", batch_size, root, **kwargs)


def scorer(trained, tok, root, queries, batch_size=8):
    model, _ = load_model(trained.model.dir)
    return Scorer(model, tok.pad_token_id, root, queries, batch_size)


def autograd_gradients(trained, tok, tracked: list[str], items) -> torch.Tensor:
    """Each item's gradient over the tracked weights, flattened, by plain autograd: the oracle's dot products."""
    model, _ = load_model(trained.model.dir)
    weights = [model.get_submodule(name).weight for name in tracked]

    def grad(item):
        loss = summed_token_nll(model, pad_batch([item], tok.pad_token_id))
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, weights)])

    return torch.stack([grad(item) for item in items])


def test_identity_scores_equal_autograd_gradient_dot_products(world, tmp_path):
    trained, tok, docs, queries = world
    manifest = fit(trained, tok, docs, "identity", tmp_path)
    ours = scorer(trained, tok, tmp_path, queries).score(docs)
    expected = (autograd_gradients(trained, tok, manifest.tracked, queries.items)
                @ autograd_gradients(trained, tok, manifest.tracked, docs.items).T)
    assert ours.shape == (len(queries), len(docs))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())


def test_scorer_equals_kronfluence_pairwise_scores(world, tmp_path):
    """Same factors, same damping (the paper's 0.1 x mean eigenvalue): kronfluence's own numbers."""
    trained, tok, docs, queries = world
    fit(trained, tok, docs, "ekfac", tmp_path)
    prepared = scorer(trained, tok, tmp_path, queries)
    ours = prepared.score(docs)

    model, _ = load_model(trained.model.dir)
    task = CausalLMTask(factors.Manifest.load(tmp_path).tracked)
    reference = factors.analyzer(prepare_model(model, task), task, tmp_path)
    reference.compute_pairwise_scores(
        "reference", factors.FACTORS_NAME, queries, docs, per_device_query_batch_size=4,
        per_device_train_batch_size=8, overwrite_output_dir=True, score_args=ScoreArguments(damping_factor=None),
        dataloader_kwargs=DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=tok.pad_token_id)))
    expected = reference.load_pairwise_scores("reference")["all_modules"]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    # preconditioned once, scored in pieces: the same numbers
    halves = torch.cat(
        [prepared.score(data.Encoded(docs.items[:10])), prepared.score(data.Encoded(docs.items[10:]))], 1
    )
    torch.testing.assert_close(halves, ours, rtol=1e-5, atol=1e-7 * ours.abs().max().item())


def test_padding_changes_nothing(world, tmp_path):
    """Factors fitted one document at a time equal factors fitted on padded batches, and a document
    scores the same alone as beside a longer one. (Empirical Fisher: sampled targets would differ
    between the two batchings by chance alone.)"""
    trained, tok, docs, queries = world
    fit(trained, tok, docs, "ekfac", tmp_path / "unpadded", batch_size=1, empirical_fisher=True)
    fit(trained, tok, docs, "ekfac", tmp_path / "padded", batch_size=8, empirical_fisher=True)
    unpadded = scorer(trained, tok, tmp_path / "unpadded", queries, batch_size=1).score(docs)
    padded = scorer(trained, tok, tmp_path / "padded", queries, batch_size=8).score(docs)
    assert len({len(ids) for ids, _ in docs.items}) > 1  # the batches really were padded
    torch.testing.assert_close(padded, unpadded, rtol=1e-3, atol=1e-4 * unpadded.abs().max().item())


def test_a_document_with_the_query_text_ranks_first(world, tmp_path):
    trained, tok, docs, queries = world
    ids, start = queries.items[0]
    others = [d for d in docs.items if d[0] != ids]  # the query was cut from a trivia document: drop twins
    planted = data.Encoded([*others, (ids, 0)])  # prompt + completion, scored as a document
    fit(trained, tok, planted, "ekfac", tmp_path)
    scores = scorer(trained, tok, tmp_path, queries).score(planted)
    assert scores[0].argmax().item() == len(planted) - 1
    assert scores[0, -1] > 0  # it makes the completion more likely


def test_factors_of_another_model_are_refused(world, tmp_path):
    trained, tok, docs, queries = world
    fit(trained, tok, docs, "ekfac", tmp_path)
    other = build_model(trained.model, tok, seed=123)
    with pytest.raises(WherefromError, match="factors were fitted on another model"):
        Scorer(other, tok.pad_token_id, tmp_path, queries, 8)


def test_bfloat16_scores_rank_documents_like_float32(world, tmp_path):
    trained, tok, docs, queries = world
    fit(trained, tok, docs, "ekfac", tmp_path)
    full = scorer(trained, tok, tmp_path, queries).score(docs)
    model, _ = load_model(trained.model.dir)
    half = Scorer(model, tok.pad_token_id, tmp_path, queries, 8, amp_dtype=torch.bfloat16).score(docs)
    rho = [spearmanr(half[q], full[q]).statistic for q in range(len(queries))]
    assert min(rho) > 0.95, rho  # measured 0.997-0.999 on this model


@pytest.mark.parametrize("n, context", [(1, 8), (8, 8), (9, 8), (15, 8), (16, 8), (30, 8), (200, 64)])
def test_windows_predict_every_token_once(n, context):
    ids = list(range(n))
    found = data.windows(ids, context)
    assert all(len(w) <= context for w in found)
    assert [t for w in found for t in w[1:]] == ids[1:]  # the loss's targets: each token after the first, once


def test_a_long_document_scores_the_gradient_of_all_its_windows(world, tmp_path):
    """A document of three windows, scored beside a short one: its score is the gradient dot product of its
    whole loss, the sum over its windows (identity curvature, against autograd)."""
    trained, tok, docs, queries = world
    manifest = fit(trained, tok, docs, "identity", tmp_path)
    long_text, short_text = " ".join(read_texts(trained.corpus.out_dir)[:3]), "The answer is 3."
    n = len(tok(long_text)["input_ids"])
    context = -(-(n - 1) // 3) + 1
    pair = data.documents(tok, [long_text, short_text], context)
    assert pair.owners == [0, 0, 0, 1]
    ours = pair.per_document(scorer(trained, tok, tmp_path, queries).score(pair))

    model, _ = load_model(trained.model.dir)
    weights = [model.get_submodule(name).weight for name in manifest.tracked]

    def grad(items):
        loss = sum(summed_token_nll(model, pad_batch([item], tok.pad_token_id)) for item in items)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, weights)])

    q_grads = torch.stack([grad([q]) for q in queries.items])
    expected = q_grads @ torch.stack([grad(pair.items[:3]), grad(pair.items[3:])]).T
    assert ours.shape == (len(queries), 2)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())

    shortest_first = pair.by_length()  # as the stages batch them: the short document's window first
    assert shortest_first.owners[0] == 1
    resorted = shortest_first.per_document(scorer(trained, tok, tmp_path, queries).score(shortest_first))
    torch.testing.assert_close(resorted, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())


def test_length_order_keeps_each_item_with_its_document():
    items = [([1, 2, 3], 0), ([4], 0), ([5, 6], 0)]
    for owners, per_document in [(None, [[20.0, 30.0, 10.0]]), ([0, 0, 1], [[50.0, 10.0]])]:
        shortest_first = data.Encoded(items, owners).by_length()
        assert [len(ids) for ids, _ in shortest_first.items] == [1, 2, 3]
        scores = torch.tensor([[30.0, 10.0, 20.0]])  # one query's scores, in the sorted order
        assert shortest_first.per_document(scores).tolist() == per_document


def test_no_corpus_token_goes_unattributed(trained):
    _, tok = load_model(trained.model.dir)
    texts = read_texts(trained.corpus.out_dir)
    n_tokens = sum(len(ids) for ids in tok(texts)["input_ids"])
    whole = data.documents(tok, texts, trained.model.context)
    truncated = data.documents(tok, texts, trained.model.context, whole=False)
    assert len(whole) > len(texts)  # the test world has documents longer than the context
    assert data.n_targets(whole) == n_tokens - len(texts)  # every token but each document's leading <|endoftext|>
    assert data.n_targets(truncated) < data.n_targets(whole)


def test_the_factors_hash_follows_the_numbers_not_the_file_metadata(tmp_path):
    """kronfluence writes a file's metadata in a per-process order: the same factors must keep one run key."""
    from safetensors.torch import save_file

    tensors = {"layer.b": torch.arange(6.0).reshape(2, 3), "layer.a": torch.tensor([1, 2], dtype=torch.int64)}
    hashes = []
    for i, metadata in enumerate([{"x": "1", "y": "2"}, {"y": "2", "x": "1"}, {"x": "1", "y": "2"}]):
        root = tmp_path / str(i)
        (root / factors.ANALYSIS).mkdir(parents=True)
        if i == 2:
            tensors["layer.b"] = tensors["layer.b"] + 1e-6
        save_file(tensors, root / factors.ANALYSIS / "f.safetensors", metadata=metadata)
        hashes.append(factors.content_hash(root))
    assert hashes[0] == hashes[1] != hashes[2]


def test_segment_scores_add_up_to_the_whole_completion_and_match_autograd(world, tmp_path):
    """Each (query, segment) measures the NLL of that segment's tokens alone: under EK-FAC the segments'
    scores add up to the whole completion's, and under identity curvature each equals the autograd
    gradient dot product of the segment's NLL with the document's loss."""
    from queries.segments import SEGMENTS, token_segments

    trained, tok, docs, _ = world
    prompts = ["Calculate the answer: (7 - 4) * 7\n\nThink step-by-step.", "What is the capital of Bribrun?"]
    completions = ["7 - 4 = 3\n3 * 7 = 21\nThe answer is 21.", "The capital of Bribrun is Koutex."]
    labels = [token_segments(p, c, a, tok(c, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"])
              for p, c, a in zip(prompts, completions, ["21", "Koutex"])]
    assert {"computed", "copied", "answer", "scaffold"} <= set(labels[0])
    whole = data.queries(tok, prompts, completions)
    parts = data.segment_queries(tok, prompts, completions, labels, SEGMENTS)
    for strategy in ("ekfac", "identity"):
        fit(trained, tok, docs, strategy, tmp_path / strategy)
        all_scores = scorer(trained, tok, tmp_path / strategy, whole).score(docs)
        by_segment = scorer(trained, tok, tmp_path / strategy, parts).score(docs).view(2, len(SEGMENTS), -1)
        torch.testing.assert_close(by_segment.sum(1), all_scores, rtol=1e-4, atol=1e-4 * all_scores.abs().max().item())

    tracked = factors.Manifest.load(tmp_path / "identity").tracked
    expected = (autograd_gradients(trained, tok, tracked, parts.items)
                @ autograd_gradients(trained, tok, tracked, docs.items).T)
    ours = by_segment.reshape(len(parts), -1)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())


def test_one_pass_gives_dot_products_and_self_influence_as_kronfluence_and_autograd_do(world, tmp_path):
    """The variants' four quantities from one pass: EK-FAC scores as the plain scorer's, gradient dot products
    as autograd's, each document's self-influence as kronfluence's ``compute_self_scores``, and each query's
    as its own EK-FAC score when its tokens are read as a document. Each window is a document here (the next
    test sums windows)."""
    trained, tok, windows, queries = world
    manifest = fit(trained, tok, windows, "ekfac", tmp_path)
    docs = data.Encoded(windows.items)
    model, _ = load_model(trained.model.dir)
    got = Scorer(model, tok.pad_token_id, tmp_path, queries, 8, variants=True).attribute(docs.by_length())
    plain = scorer(trained, tok, tmp_path, queries)
    expected = plain.score(docs)
    torch.testing.assert_close(torch.from_numpy(got.ekfac).float(), expected, rtol=1e-5,
                               atol=1e-6 * expected.abs().max().item())

    dots = (autograd_gradients(trained, tok, manifest.tracked, queries.items)
            @ autograd_gradients(trained, tok, manifest.tracked, docs.items).T)
    torch.testing.assert_close(torch.from_numpy(got.identity).float(), dots, rtol=1e-4,
                               atol=1e-6 * dots.abs().max().item())

    model, _ = load_model(trained.model.dir)
    reference = factors.analyzer(prepare_model(model, plain.task), plain.task, tmp_path)
    reference.compute_self_scores(
        "self", factors.FACTORS_NAME, docs, per_device_train_batch_size=8, overwrite_output_dir=True,
        score_args=ScoreArguments(damping_factor=None),
        dataloader_kwargs=DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=tok.pad_token_id)))
    self_scores = reference.load_self_scores("self")["all_modules"].double().numpy()
    assert got.doc_self == pytest.approx(self_scores, rel=1e-4)
    assert (got.doc_self > 0).all()
    assert got.query_self == pytest.approx(plain.score(queries).diagonal().double().numpy(), rel=1e-4)


def test_a_long_documents_self_influence_has_its_windows_cross_terms(world, tmp_path):
    """A document of three windows beside a short one: its self-influence is that of its whole gradient, the
    sum over its windows, so it is the sum of every window's score on every window (cross terms included)."""
    trained, tok, docs, queries = world
    fit(trained, tok, docs, "ekfac", tmp_path)
    long_text, short_text = " ".join(read_texts(trained.corpus.out_dir)[:3]), "The answer is 3."
    n = len(tok(long_text)["input_ids"])
    pair = data.documents(tok, [long_text, short_text], -(-(n - 1) // 3) + 1)
    model, _ = load_model(trained.model.dir)
    got = Scorer(model, tok.pad_token_id, tmp_path, queries, 2, variants=True).attribute(pair.by_length())
    windows = scorer(trained, tok, tmp_path, data.Encoded(pair.items)).score(pair).double().numpy()
    assert got.doc_self == pytest.approx([windows[:3, :3].sum(), windows[3, 3]], rel=1e-4)
    assert windows[:3, :3].sum() != pytest.approx(np.trace(windows[:3, :3]), rel=1e-2)  # the cross terms count
