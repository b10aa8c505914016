"""make validate's retraining tests (stage `lds`): LDS and leave-k-out of every method on retrains that are
Dask tasks, killed (kill -9) during the retrains and resumed; a method registered as a plugin joins the table."""

from __future__ import annotations

import json
import os
import re
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
from conftest import REPO, make_params
from safetensors.torch import load_file
from test_config import _documented_messages
from test_pipeline_e2e import _run, new_project, run_env

from pipeline.analysis import validation
from pipeline.core import schemas, seeds
from pipeline.core.config import load_params
from pipeline.core.errors import ParamsError, WherefromError
from pipeline.core.stages import of_one_draw, resolved
from pipeline.sql import db
from pipeline.stages import lds
from pipeline.stages.lds import leave_k_sets

SUBSETS, KS, SINGLES = 3, [2], 3
# Each retrain is a training run of the test profile's full steps: at half as many, a model completed a query with
# nothing on one machine and not on another (float rounding), and the probe refuses an empty completion.
STEPS = yaml.safe_load((REPO / "params.yaml").read_text())["profiles"]["test"]["pretrain"]["steps"]


def _edit(params: dict) -> None:
    assert params["profiles"]["test"]["validation"] == {"profile": "test", "subsets": SUBSETS, "leave_k": KS,
                                                        "leave_one_out": SINGLES}
    params["baselines"]["methods"] = ["bm25"]  # two methods: more test nothing the retrains do not
    params["scores"]["variants"] = []
    params["runtime"]["checkpoint_every"] = 25
    params["validation"]["fractions"] = [0.5]  # random halves here; 1% dropped in the seeds' test


@pytest.mark.slow
def test_lds_retrains_resume_after_kill_9_and_a_registered_method_joins_an_uninterrupted_runs_table(
        toy_method, tmp_path, monkeypatch):
    """`dvc repro` killed during the third retrain, then again: the finished retrains are not redone. Then the
    same run uninterrupted, in this process, with a method registered as a plugin would (``register``, with no
    other edit: ``baselines.methods`` null selects every registered method): its rows join the table, and
    every other row is the resumed run's."""
    root = new_project(tmp_path / "project", _edit)
    retrains = root / "results/validation/retrains"
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "validate/dvc.yaml:lds"], cwd=root, env=run_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while len(list(retrains.glob("*.parquet"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # during the third retrain
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in retrains.glob("*.parquet")}
    assert len(finished) == 2 and not (root / "results/validation/lds.parquet").exists()

    out = _run([sys.executable, "-m", "dvc", "repro", "validate/dvc.yaml:lds"], root)
    n = SUBSETS + 2 * len(KS) + SINGLES + 1  # subsets, an arm per method and k, single documents and no document
    assert f"lds retrains: {n} retrains of {STEPS} steps (2 already done)" in out
    assert "lds run: nothing left" in out  # its world, model and scores were not built again
    assert "the retrain that removes nothing is 0 nats from the run" in out  # retrains are the run, bit for bit
    assert {p: (retrains / p).stat().st_mtime_ns for p in finished} == finished  # finished retrains not redone
    resumed = pq.read_table(root / "results/validation/lds.parquet")
    assert resumed.schema == schemas.VALIDATION

    rows = resumed.to_pylist()
    queries = pq.read_table(root / "results/validation/lds_run/queries.parquet").to_pylist()
    scored = [q["query_id"] for q in queries if not q["task"].endswith("control")]
    assert {(r["test"], r["setting"]) for r in rows} == {("lds", f"M={SUBSETS}, fraction=0.5"), ("leave_k_out", "k=2"),
                                                         ("leave_one_out", f"pearson over {SINGLES} documents")}
    for test, setting in {(r["test"], r["setting"]) for r in rows}:
        for method in ("influence", "bm25"):
            got = [r for r in rows if r["test"] == test and r["setting"] == setting and r["method"] == method]
            assert [r["query_id"] for r in got] == scored
    arm = [r for r in rows if r["test"] == "leave_k_out"]
    groups = {q["task"] for q in queries if not q["task"].endswith("control")}
    assert {r["docs_removed"] for r in arm} <= set(range(2, 2 * len(groups) + 1))  # k per group, overlaps once
    assert all(r["tokens_removed"] > r["docs_removed"] for r in arm)

    for path in retrains.iterdir():  # the same run, uninterrupted, every registered method
        path.unlink()
    monkeypatch.chdir(root)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["baselines"]["methods"] = None
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lds.run(load_params("params.yaml"))
    rows = pq.read_table("results/validation/lds.parquet").to_pylist()
    assert [r for r in rows if r["method"] in ("influence", "bm25")] == resumed.to_pylist()
    every = ("influence", "bm25", "random", "toy")
    assert {(r["method"], r["test"]) for r in rows} == {(m, t) for m in every
                                                        for t in ("lds", "leave_k_out", "leave_one_out")}
    assert [r["query_id"] for r in rows if r["method"] == "toy" and r["test"] == "lds"] == scored


def test_leave_k_takes_k_documents_per_group_by_each_querys_ranking():
    doc_ids = np.array([10, 11, 12, 13, 14, 15])
    scores = np.array([[5, 4, 0, 0, 0, 1],    # f1: 10, 11, 15
                       [0, 5, 4, 0, 0, 0],    # f2: 11, 12
                       [0, 0, 0, 3, 2, 1.0]])  # s1: 13, 14
    tasks = {"f1": "factual", "f2": "factual", "s1": "slope"}
    # factual round-robin: f1's 10, f2's 11, then f1's 11 (taken) -> f2's 12 is third; slope: 13, 14
    assert leave_k_sets(scores, doc_ids, ["f1", "f2", "s1"], tasks, 2, "x") == (10, 11, 13, 14)
    assert leave_k_sets(scores, doc_ids, ["f1", "f2", "s1"], tasks, 3, "x") == (10, 11, 12, 13, 14, 15)


def test_leave_one_out_is_each_querys_pearson_r_with_minus_the_scores_of_the_removed_documents():
    scores = np.array([[1.0, 2, 3, 4], [4, 3, 2, 1], [1, 1, 1, 1]])
    columns = np.array([3, 0, 1])  # documents removed, in retrain order
    change = np.array([[-8.0, -2, -4], [-2, -8, -6], [-1, -2, -3]])  # log p after minus before
    r = lds.leave_one_out(scores, columns, change)
    assert r[:2] == pytest.approx([1.0, 1.0])  # removing a document costs twice its score: a perfect prediction
    assert np.isnan(r[2])  # scores all equal: no correlation to speak of
    assert lds.leave_one_out(-scores[:2], columns, change[:2]) == pytest.approx([-1.0, -1.0])


def test_leave_one_out_removes_the_documents_exact_attribution_ranks_highest_then_random_ones():
    doc_ids = np.arange(100, 110)
    exact = np.zeros((2, 10))
    exact[0, 7], exact[1, 2], exact[1, 5] = 5.0, -9.0, 1.0  # |score| ranks documents 102, 107, 105
    chosen = lds.leave_one_out_documents({"influence": np.ones((2, 10)), "magic": exact}, doc_ids, 6, seed=0)
    assert chosen[:3] == [102, 107, 105] and len(set(chosen)) == 6 and set(chosen) <= set(doc_ids)
    assert chosen == lds.leave_one_out_documents({"influence": np.ones((2, 10)), "magic": exact}, doc_ids, 6, 0)
    assert lds.leave_one_out_documents({"influence": exact}, doc_ids, 3, 0)[:2] == [102, 107]  # no magic: influence
    assert sorted(lds.leave_one_out_documents({"bm25": exact}, doc_ids, 20, 0)) == doc_ids.tolist()  # at most all


SPREAD = np.array([-0.1, -0.05, 0, 0, 0, 0, 0.05, 0.1])


def _draw(seed: int, means: dict[str, float], spread: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One draw's LDS rows: each method's value on eight queries, spread about ``means`` (by ``SPREAD``, or the
    method's own ``spread``)."""
    queries, tasks = [f"factual-{i}" for i in range(8)], {f"factual-{i}": "factual" for i in range(8)}
    return [r for m, mean in means.items() for r in validation.rows(
        m, "lds", "M=2, fraction=0.5", queries, tasks, mean + (spread or {}).get(m, SPREAD), seed)]


def test_each_declared_expectation_is_reported_as_held_in_k_of_n_draws(tmp_path):
    """Three planted draws: influence above identity in two; bm25 absent from the third, so 'bm25 below
    influence' is judged on two draws only; random's interval covers 0 in one."""
    table = pa.Table.from_pylist(
        _draw(0, {"influence": 0.3, "identity": 0.1, "bm25": 0.2, "random": 0.0})
        + _draw(1, {"influence": 0.1, "identity": 0.2, "bm25": 0.3, "random": 0.5})
        + _draw(2, {"influence": 0.4, "identity": 0.2, "random": 0.6}), schema=schemas.VALIDATION)
    held = {v["statement"]: (v["held"], v["draws"]) for v in validation.verdicts(table)}
    assert held == {"influence above identity": (2, 3), "bm25 below influence": (1, 2),
                    "random's interval covers 0": (1, 3)}
    validation.write(table.to_pylist(), str(tmp_path), str(tmp_path), "lds", 0)
    metrics = json.loads((tmp_path / "validation_lds.json").read_text())
    assert metrics["declared"]["lds"]["M=2, fraction=0.5"]["influence above identity"] == {"held": 2, "draws": 3}
    assert metrics["lds"]["M=2, fraction=0.5"]["influence"]["queries"] == 24  # each draw's queries count once


def test_a_higher_mean_is_not_held_unless_the_paired_test_says_so():
    """Influence's mean above identity's by 0.02, below it on 6 of 8 queries: not held. A gap of 0.01 on every
    query (a constant difference): held."""
    noisy = {"influence": np.array([0.5, 0.5, -0.1, -0.1, -0.1, -0.1, -0.1, -0.1]), "identity": np.zeros(8)}
    table = pa.Table.from_pylist(_draw(0, {"influence": 0.0, "identity": 0.03}, noisy)
                                 + _draw(1, {"influence": 0.31, "identity": 0.3}), schema=schemas.VALIDATION)
    assert np.mean(noisy["influence"]) > 0.03  # influence's mean is the higher in both draws
    held = {v["statement"]: (v["held"], v["draws"]) for v in validation.verdicts(table)}
    assert held["influence above identity"] == (1, 2)


def test_training_draws_of_the_tests_need_a_run_of_their_own_to_retrain(tmp_path):
    documented = _documented_messages("docs/bad-input.md")["training draws of the tests with no run to retrain"]
    params = make_params(tmp_path, validation={"profile": None, "seeds": [0, 1]})
    with pytest.raises(ParamsError, match=re.escape(documented)):
        lds.draws(params)


def test_a_test_over_a_draw_the_seed_study_has_not_finished_says_so(tmp_path):
    """tail_patch and counterfactual: the demo's tests, over the seed study's runs."""
    row = "a test over a training draw the seed study has not finished"
    documented = _documented_messages("docs/bad-input.md")[row]
    params = make_params(tmp_path, validation={"seeds": [7]})
    with pytest.raises(WherefromError) as err:
        seeds.draws(params, tmp_path / "kept")
    assert str(err.value) == documented.replace("results/seeds", params.study.runs_dir)


@pytest.mark.slow
def test_the_tests_repeat_under_each_training_seed_on_one_world(tmp_path, monkeypatch):
    """validation.seeds [0, 1]: two runs of their own models on one world, retrained apart; rows of both draws."""
    root = new_project(tmp_path / "project", _edit)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    monkeypatch.chdir(root)
    raw["validation"]["seeds"] = [0, 1]
    raw["validation"]["fractions"] = [0.99]  # 1% dropped (the other test's are random halves)
    raw["profiles"]["test"]["validation"]["leave_one_out"] = 0  # none (the other test's), nor their reference
    Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params("params.yaml")
    lds.run(params)
    run = Path("results/validation/lds_run")
    assert sorted(p.name for p in run.glob("seed=*")) == ["seed=0", "seed=1"] and (run / "corpus").is_dir()
    assert not list(run.glob("seed=*/corpus"))  # one world
    weights = [load_file(run / f"seed={s}/model/model.safetensors") for s in (0, 1)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # two training draws
    assert [len(list(Path(f"results/validation/retrains/seed={s}").glob("*.parquet"))) for s in (0, 1)] \
        == [SUBSETS + 2 * len(KS)] * 2
    table = pq.read_table("results/validation/lds.parquet")
    assert table.schema == schemas.VALIDATION
    for s in (0, 1):
        drawn = table.filter(pc.equal(table["seed"], s))
        queries = pq.read_table(run / f"seed={s}/queries.parquet").to_pylist()
        scored = [q["query_id"] for q in queries if not q["task"].endswith("control")]
        assert [r["query_id"] for r in drawn.to_pylist() if r["method"] == "influence" and r["test"] == "lds"
                and r["setting"] == f"M={SUBSETS}, fraction=0.99"] == scored
    declared = json.loads(Path("metrics/validation_lds.json").read_text())["declared"]
    assert declared["lds"][f"M={SUBSETS}, fraction=0.99"]["bm25 below influence"]["draws"] == 2
    # each draw's run analysed: every finding of every method, per draw as that draw's own analysis has it
    by_draw = pq.read_table("results/validation/findings/findings_by_draw.parquet")
    assert by_draw.schema == schemas.FINDINGS_BY_SEED
    for s in (0, 1):
        own = pq.read_table(run / f"seed={s}/analysis/findings.parquet").to_pylist()
        assert [{k: v for k, v in r.items() if k != "seed"} for r in by_draw.to_pylist() if r["seed"] == s] == own
    assert {r["method"] for r in by_draw.to_pylist()} == {"influence", "bm25"}
    spread = db.query(db.connect(params), "SELECT DISTINCT n_runs FROM validation_finding_spread WHERE segment = 'all'")
    assert spread["n_runs"].to_pylist() == [2]


@pytest.mark.parametrize("stage", ["counterfactual", "tail_patch"])
def test_naming_another_training_draw_keeps_the_finished_draws_keys(tmp_path, stage):
    """DVC reruns the stage when validation.seeds changes; the kept arms and parts of a draw stay valid."""
    one, two = (resolved(make_params(tmp_path, validation={"seeds": seeds}), stage) for seeds in ([0], [0, 1]))
    assert one != two and of_one_draw(one) == of_one_draw(two)


def test_a_validation_file_from_before_training_draws_reads_with_a_null_seed(tmp_path):
    """The report and `wherefrom sql` read a test's file written before the seed column, as one draw."""
    params = make_params(tmp_path)
    old = pa.Table.from_pylist(_draw(0, {"influence": 0.3, "identity": 0.1}), schema=schemas.VALIDATION).drop(["seed"])
    (Path(params.validation.out_dir)).mkdir(parents=True)
    pq.write_table(old, Path(params.validation.out_dir) / "tail_patch.parquet")
    table = db.query(db.connect(params), "SELECT * FROM validation")
    assert table["seed"].null_count == table.num_rows == old.num_rows
    assert {v["statement"]: (v["held"], v["draws"]) for v in validation.verdicts(table)} == {
        "influence above identity": (1, 1)}
