"""The `exact` stage: MAGIC's query blocks as Dask tasks on a short run, written as every method's score table,
the same as the engine computes in one process, and resumed after a kill -9 without redoing finished blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, make_params, write_params

from influence import measurements
from influence.exact.attribution import magic
from influence.exact.replay import Recipe
from influence.shards import whole_scores
from pipeline.analysis.score_matrix import in_memory
from pipeline.core.corpus_reader import read_texts
from pipeline.core.model import build_model, load_model
from pipeline.runs import methods
from pipeline.stages import corpus, exact, pretrain, probe

SHORT: dict = {"pretrain": {"steps": 40}, "exact": {"methods": ["magic"], "block": 3}}
QUERIES = [("What is 3 + 4?", "3 + 4 = 7. The answer is 7.", "arithmetic"),
           ("What is 12 - 5?", "12 - 5 = 7.", "arithmetic"),
           ("Solve 2x + 1 = 5.", "2x = 4, so x = 2.", "linear"),
           ("What is the slope between (0, 1) and (2, 5)?", "The slope is 2.", "slope"),
           ("Where was Foband born?", "Foband was born in Kaisa.", "factual"),
           ("What did Foband invent?", "the loom", "factual"),
           ("What is 6 + 6?", "12", "arithmetic")]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """The test profile's world trained for 40 steps, seven queries with their completions given (a model this
    short writes none), and MAGIC's scores of them."""
    tmp = tmp_path_factory.mktemp("exact")
    file = tmp / "queries.jsonl"
    file.write_text("".join(json.dumps({"prompt": p, "completion": c, "task": t}) + "\n" for p, c, t in QUERIES))
    params = make_params(tmp, **SHORT, queries={"file": str(file)})
    corpus.run(params)
    pretrain.run(params)
    probe.run(params)
    exact.run(params)
    return params


def test_magic_is_a_method_of_the_run_and_its_scores_are_the_engines(short_run):
    params = short_run
    assert methods.selected(params)[-1] == "magic" and methods.stage("magic") == "exact"
    measured = json.loads(Path(params.exact.metrics).read_text())["magic"]
    n_queries = pq.read_metadata(params.queries.out).num_rows
    assert measured["rows"] == n_queries and measured["blocks"] == -(-n_queries // 3)
    assert measured["replay_max_abs_weight_difference"] == 0  # the replay is the run, bit for bit

    query_ids = pq.read_table(params.queries.out)["query_id"].to_pylist()
    doc_ids, scores = in_memory({"magic": methods.scores_dir(params, "magic")}, query_ids)
    _, tokenizer = load_model(params.model.dir)
    rows = measurements.read(params.queries.out, None)
    texts = read_texts(params.corpus.out_dir)
    expected, _ = magic(build_model(params.model, tokenizer, params.training_seed), tokenizer, texts,
                        Recipe.of(params.pretrain, params.model.context, params.training_seed), rows, progress=False)
    np.testing.assert_allclose(scores["magic"], expected / rows.nll[:, None], rtol=1e-3, atol=1e-9)  # float32, per nat
    raw = whole_scores(methods.scores_dir(params, "magic"), query_ids, doc_ids)
    assert np.isfinite(raw).all() and (np.abs(raw) > 0).mean() > 0.5


# A Dask worker preload: the worker writes one block, then its next write blocks until the test kills the run.
BLOCK_AFTER_ONE = """
import threading

from influence.exact import runner

if not hasattr(runner, "unblocked_write"):  # Dask may execute a preload twice in one worker
    runner.unblocked_write, runner.written = runner.write_parquet, []


def write(*args, **kwargs):
    if len(runner.written) == 1:
        threading.Event().wait()  # never set: the test kills the whole run here
    runner.unblocked_write(*args, **kwargs)
    runner.written.append(args[1])


runner.write_parquet = write
"""


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_blocks_left(short_run, tmp_path):
    params = short_run
    out = tmp_path / "exact"
    params_file = write_params(tmp_path, dask={"workers": 1, "threads_per_worker": 1},
                               exact={**SHORT["exact"], "out_dir": str(out)}, pretrain=SHORT["pretrain"],
                               queries={"file": params.queries.file})
    raw = yaml.safe_load(params_file.read_text())
    for section, key in [("corpus", "out_dir"), ("model", "dir"), ("queries", "out"), ("queries", "segments")]:
        raw[section][key] = getattr(getattr(params, section), key)  # the short run's inputs
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    preload = tmp_path / "block_after_one.py"
    preload.write_text(BLOCK_AFTER_ONE)
    cmd = [sys.executable, "-m", "pipeline", "exact", "--params", str(params_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**env, "DASK_DISTRIBUTED__WORKER__PRELOAD": f"['{preload}']"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    blocks = out / "magic" / "blocks"
    deadline = time.time() + 120
    while not list(blocks.glob("block=*.parquet")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # a second block, were the preload not holding, would land now
    assert proc.poll() is None, "the run ended before the kill (run it by hand for its error)"
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its Dask worker
    proc.wait()
    finished = {f: f.stat().st_mtime_ns for f in blocks.glob("block=*.parquet")}
    assert len(finished) == 1 and not list((out / "magic").glob("shard=*"))
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    assert {f: f.stat().st_mtime_ns for f in finished} == finished  # not redone
    assert json.loads((tmp_path / "metrics/exact.json").read_text())["magic"]["blocks_run"] == len(
        list(blocks.glob("block=*.parquet"))) - 1
    query_ids = pq.read_table(params.queries.out)["query_id"].to_pylist()
    resumed = in_memory({"magic": out / "magic"}, query_ids)[1]["magic"]
    whole = in_memory({"magic": methods.scores_dir(params, "magic")}, query_ids)[1]["magic"]
    np.testing.assert_array_equal(resumed, whole)
