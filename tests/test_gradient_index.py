"""The gradient index: exact at full dimension, the planted document first at the default size, resumable,
invalidated by what it depends on, and `wherefrom ask`'s one-line errors."""

import dataclasses
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import REPO, make_params, write_params

from influence import data, measurements
from influence.curvature.prepared import prepare
from influence.curvature.tap import GradientTap
from influence.index import build as index_build
from influence.index import projection
from influence.index.store import GradientIndex, ProjectedTap, project_documents, project_query_gradients
from influence.scoring.scorer import Scorer
from pipeline.core import schemas
from pipeline.core.corpus_reader import read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import build_model, load_model
from pipeline.core.seeds import for_seed
from pipeline.runs import asking, settings
from pipeline.runs import methods as run_methods
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
                              "shard_size": 20, "score_queries": True, **index_cfg})


@pytest.mark.parametrize("kind", projection.KINDS)
def test_at_full_dimension_the_index_scores_are_the_exact_scores(staged, kind):
    """Every document and every query row (whole completions and answer segments) of the staged run."""
    model, tok = load_model(staged.model.dir)
    ready = prepare(model, Path(staged.influence.factors_dir))
    full = projection.make(kind, 10_000, 0, {m.name: m.storage for m in ready.modules})
    assert full.width == sum(m.original_module.weight.numel() for m in ready.modules)  # no bias in the test model
    docs = data.documents(tok, read_texts(staged.corpus.out_dir), staged.model.context)
    rows = project_documents(ready, ProjectedTap(ready.modules, full, torch.device("cpu")), docs, 8, tok.pad_token_id)
    measured = measurements.read(staged.queries.out, staged.queries.segments)
    queries = measurements.encoded(tok, measured)
    asking = prepare(load_model(staged.model.dir)[0], Path(staged.influence.factors_dir))  # as `ask` has it, alone
    projected = project_query_gradients(asking, GradientTap(asking.modules), full, queries, 8, tok.pad_token_id)
    got = measured.expand(projected.double().numpy() @ rows.T)
    model, tok = load_model(staged.model.dir)
    exact = Scorer(model, tok.pad_token_id, Path(staged.influence.factors_dir), queries, 8)
    expected = measured.expand(docs.per_document(exact.score(docs)).double().numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


@pytest.fixture(scope="module")
def indexed(staged, tmp_path_factory):
    """The default index (whitened, k = 32, float16) of the staged run, its queries scored from it, and its asker."""
    params = with_index(staged, tmp_path_factory.mktemp("indexed"))
    index.run(params)
    return params, asking.asker(params)


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


def test_the_index_stage_scores_the_runs_queries_as_method_index_beside_the_exact_ones(indexed):
    """index.score_queries: every row of the run (whole completions and answer segments) scored from the index,
    in the scores schema, where the analysis and the SQL views read each method's scores."""
    params, asker = indexed
    assert run_methods.selected(params)[-1] == "index" and run_methods.stage("index") == "index"
    files = sorted(run_methods.scores_dir(params, "index").glob(schemas.SHARD_FILES))
    table = pa.concat_tables(pq.read_table(f) for f in files)
    assert table.schema.remove_metadata() == schemas.SCORES
    rows = measurements.read(params.queries.out, params.queries.segments)
    expected = asker.scores(rows)
    assert table.num_rows == expected.size
    column = {int(d): i for i, d in enumerate(asker.index.doc_ids)}
    at = {key: i for i, key in enumerate(rows.keys)}
    got = np.zeros_like(expected)
    for q, s, d, v in zip(*(table.column(c).to_pylist() for c in ("query_id", "segment", "doc_id", "score"))):
        got[at[q, s], column[d]] = v
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert "index" not in run_methods.selected(for_seed(params, 1))  # a seed's run builds no index


# A Dask worker preload: the worker writes two index shards, then its next write blocks until the test kills the run.
BLOCK_AFTER_TWO_SHARDS = """
import threading

from influence.index import build as index_build

if not hasattr(index_build, "unblocked_write"):  # Dask may execute a preload twice in one worker
    index_build.unblocked_write, index_build.written = index_build.write_shard, []


def write(*args, **kwargs):
    if len(index_build.written) == 2:
        threading.Event().wait()  # never set: the test kills the whole run here
    index_build.unblocked_write(*args, **kwargs)
    index_build.written.append(args[0])


index_build.write_shard = write
"""


def index_rows(out_dir) -> list[tuple]:
    tables = [pq.read_table(f) for f in sorted(Path(out_dir).glob("shard=*/part.parquet"))]
    return [(d, tuple(g)) for t in tables for d, g in zip(t.column("doc_id").to_pylist(),
                                                          t.column("gradient").to_pylist())]


@pytest.mark.slow
def test_a_killed_index_build_resumes_from_its_finished_shards(indexed, tmp_path):
    params, _ = indexed
    params_file = write_params(tmp_path, dask={"workers": 1, "threads_per_worker": 1},
                               index={"out_dir": str(tmp_path / "index"), "shard_size": 20})
    raw = yaml.safe_load(params_file.read_text())
    for section, key in [("corpus", "out_dir"), ("model", "dir"), ("influence", "factors_dir")]:
        raw[section][key] = getattr(getattr(params, section), key)  # the staged run's inputs
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    preload = tmp_path / "block_after_two_shards.py"
    preload.write_text(BLOCK_AFTER_TWO_SHARDS)
    cmd = [sys.executable, "-m", "pipeline", "index", "--params", str(params_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**env, "DASK_DISTRIBUTED__WORKER__PRELOAD": f"['{preload}']"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = tmp_path / "index"
    deadline = time.time() + 120
    while len(list(out.glob("shard=*/part.parquet"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # a third shard, were the block not holding, would land now
    assert proc.poll() is None, "the run ended before the kill (run it by hand for its error)"
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its Dask worker
    proc.wait()
    finished = {f: f.stat().st_mtime_ns for f in out.glob("shard=*/part.parquet")}
    assert len(finished) == 2 < len(list(Path(params.index.out_dir).glob("shard=*")))
    with pytest.raises(WherefromError, match="the index is incomplete"):
        GradientIndex.load(out)
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    assert {f: f.stat().st_mtime_ns for f in finished} == finished
    assert index_rows(out) == index_rows(params.index.out_dir)  # as the uninterrupted build wrote them


def index_key(params) -> str:
    factors = params.influence.factors_dir
    return index_build.run_key(settings.documents(params), factors, settings.index_settings(params))


def test_a_changed_corpus_model_or_factors_makes_a_new_index(indexed, tmp_path):
    params, _ = indexed
    key = index_key(params)
    corpus = tmp_path / "corpus"
    shutil.copytree(params.corpus.out_dir, corpus)
    first = sorted(corpus.glob("*.parquet"))[0]
    table = pq.read_table(first)
    texts = table.column("text").to_pylist()
    texts[0] += " Edited."
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)), first)
    assert index_key(dataclasses.replace(
        params, corpus=dataclasses.replace(params.corpus, out_dir=str(corpus)))) != key
    factors = tmp_path / "factors"  # refitted on another model: its manifest holds the model's fingerprint
    shutil.copytree(params.influence.factors_dir, factors)
    manifest = json.loads((factors / "manifest.json").read_text())
    (factors / "manifest.json").write_text(json.dumps({**manifest, "fingerprint": "0" * 16}))
    assert index_key(dataclasses.replace(
        params, influence=dataclasses.replace(params.influence, factors_dir=str(factors)))) != key
    assert index_key(dataclasses.replace(params, index=dataclasses.replace(params.index, k=8))) != key


def test_an_index_of_another_model_or_other_factors_is_refused(indexed, tmp_path):
    params, _ = indexed
    model, tok = load_model(params.model.dir)
    other = build_model(params.model, tok, seed=123)
    other.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    moved = dataclasses.replace(params, model=dataclasses.replace(params.model, dir=str(tmp_path / "other")))
    with pytest.raises(WherefromError, match=r"index: the index was built from another model \(fingerprint"):
        asking.asker(moved)
    factors = tmp_path / "factors"
    shutil.copytree(params.influence.factors_dir, factors)
    manifest = json.loads((factors / "manifest.json").read_text())
    (factors / "manifest.json").write_text(json.dumps({**manifest, "factors_sha256": "f" * 16}))
    refitted = dataclasses.replace(params, influence=dataclasses.replace(params.influence, factors_dir=str(factors)))
    with pytest.raises(WherefromError, match="the index was built with other factors"):
        asking.asker(refitted)


def test_ask_refuses_a_prompt_too_long_for_the_context_and_an_empty_one(indexed):
    params, asker = indexed
    with pytest.raises(WherefromError, match=rf"^the prompt takes \d+ tokens, more than the model's context "
                                             rf"\({params.model.context}\)$"):
        asker.ask("seven " * 200)
    with pytest.raises(WherefromError, match="^empty prompt$"):
        asker.ask("   ", "an answer")


@pytest.mark.parametrize("argv, message", [
    (["ask", " "], "ask: empty prompt"),
    (["ask"], 'ask: give a prompt (wherefrom ask "QUESTION") or --queries FILE'),
    (["ask", "--queries", "q.jsonl"], "ask: --queries needs --out FILE.parquet"),
    (["ask", "Why?", "--top", "0"], "ask: --top 0: must be positive"),
])
def test_ask_with_bad_arguments_says_so_in_one_line_before_loading_anything(tmp_path, argv, message):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert (proc.returncode, proc.stderr.strip()) == (2, f"wherefrom: error: {message}")


def test_ask_before_the_index_is_built_says_which_stage_to_run(staged, tmp_path):
    params = with_index(staged, tmp_path)
    with pytest.raises(WherefromError, match=rf"^{re.escape(str(tmp_path / 'index'))}: no gradient index here; run "
                                             r"the index stage first \(wherefrom index, or dvc repro index\)$"):
        asking.asker(params)


def test_wherefrom_ask_prints_the_top_documents_and_writes_a_suite_in_the_scores_schema(indexed, tmp_path):
    params, asker = indexed
    questions, answers = trivia(params)
    params_file = write_params(tmp_path, index={"out_dir": params.index.out_dir})
    raw = yaml.safe_load(params_file.read_text())
    for section, key in [("corpus", "out_dir"), ("model", "dir"), ("influence", "factors_dir")]:
        raw[section][key] = getattr(getattr(params, section), key)
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps({"query_id": f"q{i}", "prompt": q, "completion": a,
                                                             "task": "factual"}) + "\n"
                                                 for i, (q, a) in enumerate(zip(questions[:3], answers[:3]))))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    shown = subprocess.run([sys.executable, "-m", "pipeline", "ask", questions[0], "--completion", answers[0], "--top",
                            "2", "--params", str(params_file)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    expected = asker.ask(questions[0], answers[0], top=2)
    ranked = [line.split()[:2] for line in lines if line.strip()[:1].isdigit()]
    assert ranked == [["1", str(expected.top[0]["doc_id"])], ["2", str(expected.top[1]["doc_id"])]]
    suite = subprocess.run([sys.executable, "-m", "pipeline", "ask", "--queries", "mine.jsonl", "--out", "mine.parquet",
                            "--params", str(params_file)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert suite.returncode == 0, suite.stderr
    table = pq.read_table(tmp_path / "mine.parquet")
    assert table.schema.remove_metadata() == schemas.SCORES
    assert table.num_rows == 3 * len(asker.index.doc_ids)
    first = table.filter(pc.equal(table.column("query_id"), "q0"))
    best = first.column("doc_id")[pc.index(first.column("score"), pc.max(first.column("score"))).as_py()].as_py()
    assert best == expected.top[0]["doc_id"]


def test_a_search_on_dask_workers_that_each_hold_some_shards_gives_the_same_top_documents(indexed):
    from dask.distributed import Client, LocalCluster

    params, asker = indexed
    questions, answers = trivia(params)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        on_dask = asking.asker(params, client)
        assert len(on_dask.index.rows) == 0  # the rows stay in the workers
        for question, answer in zip(questions[:3], answers[:3]):
            here, there = asker.ask(question, answer, top=5), on_dask.ask(question, answer, top=5)
            assert [d["doc_id"] for d in there.top] == [d["doc_id"] for d in here.top]
            np.testing.assert_allclose([d["score"] for d in there.top], [d["score"] for d in here.top], rtol=1e-5)
        held = client.run(lambda: len(importlib.import_module("influence.index.search")._OWNED))
    # in-process workers share one module: each shard was read once, and kept for the next question
    assert set(held.values()) == {len(list(Path(params.index.out_dir).glob("shard=*")))}
