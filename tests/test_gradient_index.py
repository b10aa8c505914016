"""The gradient index: exact at full dimension, the planted document first at the default size, resumable,
invalidated by what it depends on, and `wherefrom ask`'s one-line errors."""

from pathlib import Path

import numpy as np
import pytest
from conftest import make_params

from influence import data, measurements, projection
from influence.asker import Asker
from influence.scorer import Scorer
from pipeline.core.corpus_reader import read_doc_ids, read_texts
from pipeline.core.model import load_model
from pipeline.stages import factors, index, probe


@pytest.fixture(scope="module")
def staged(trained):
    """The test profile through probe and factors (shared, read-only)."""
    probe.run(trained)
    factors.run(trained)
    return trained


def with_index(staged, tmp_path, **index_cfg):
    return make_params(Path(staged.corpus.out_dir).parents[1], dask={"workers": 1, "threads_per_worker": 1},
                       index={"out_dir": str(tmp_path / "index"), "metrics": str(tmp_path / "index.json"),
                              "shard_size": 20, **index_cfg})


def exact_scores(params) -> np.ndarray:
    """Every query row's exact EK-FAC influence on every document (doc ids ascending), in this process."""
    model, tok = load_model(params.model.dir)
    rows = measurements.read(params.queries.out, params.queries.segments)
    scorer = Scorer(model, tok.pad_token_id, Path(params.influence.factors_dir), measurements.encoded(tok, rows), 8)
    ids = sorted(read_doc_ids(params.corpus.out_dir))
    docs = data.documents(tok, read_texts(params.corpus.out_dir, ids), params.model.context)
    return rows.expand(docs.per_document(scorer.score(docs)).double().numpy())


@pytest.mark.parametrize("kind", projection.KINDS)
def test_at_full_dimension_the_index_scores_are_the_exact_scores(staged, tmp_path, kind):
    params = with_index(staged, tmp_path, projection=kind, k=10_000, dtype="float32")
    index.run(params)
    asker = Asker.from_params(params)
    assert list(asker.index.doc_ids) == sorted(read_doc_ids(params.corpus.out_dir))
    got = asker.scores(measurements.read(params.queries.out, params.queries.segments))
    expected = exact_scores(params)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


@pytest.fixture(scope="module")
def indexed(staged, tmp_path_factory):
    """The default index (random projection, k = 16, float16) of the staged run, and its asker."""
    params = with_index(staged, tmp_path_factory.mktemp("indexed"))
    index.run(params)
    return params, Asker.from_params(params)


def trivia(params) -> tuple[list[str], list[str]]:
    """The questions and answers of the corpus's trivia documents (a question line, then its answer)."""
    texts = [t.split("\n") for t in read_texts(params.corpus.out_dir)]
    pairs = dict.fromkeys((t[-2], t[-1]) for t in texts if len(t) >= 2 and t[-2].endswith("?"))
    return [q for q, _ in pairs], [a for _, a in pairs]


def test_where_the_exact_top_document_is_clear_the_default_index_ranks_it_first(indexed):
    """The planted case: a document stating a question's answer, its exact score at least twice the runner-up's."""
    params, asker = indexed
    questions, answers = trivia(params)
    model, tok = load_model(params.model.dir)
    texts = read_texts(params.corpus.out_dir, asker.index.doc_ids.tolist())
    docs = data.documents(tok, texts, params.model.context)
    queries = data.queries(tok, questions, answers)
    exact = docs.per_document(Scorer(model, tok.pad_token_id, Path(params.influence.factors_dir), queries, 8)
                              .score(docs)).numpy()
    top2 = np.sort(exact, axis=1)[:, -2:]
    clear = np.flatnonzero(top2[:, 1] >= 2 * np.abs(top2[:, 0]))
    assert len(clear) >= 2
    for q in clear:
        planted = texts[int(exact[q].argmax())]
        assert questions[q] in planted and answers[q] in planted  # what was planted: the answer, stated
        got = asker.ask(questions[q], answers[q], top=3)
        assert got.top[0]["text"] == planted
        assert got.top[0]["score_per_nat"] == pytest.approx(got.top[0]["score"] / got.nll)
    assert asker.index.manifest.bytes_per_doc == asker.index.manifest.width * 2  # float16
