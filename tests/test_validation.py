"""make validate's retraining tests (stage `lds`): LDS and leave-k-out of every method on retrains that are
Dask tasks, killed (kill -9) during the retrains and resumed; a method registered as a plugin joins the table."""

from __future__ import annotations

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
from test_pipeline_e2e import _run, new_project, run_env

from pipeline.core import schemas
from pipeline.core.config import load_params
from pipeline.stages import lds
from pipeline.stages.lds import leave_k_sets

SUBSETS, KS = 3, [2]
STEPS = 250  # each retrain is a training run: half the test profile's, still completing every query


def _edit(params: dict) -> None:
    assert params["profiles"]["test"]["validation"] == {"profile": "test", "subsets": SUBSETS, "leave_k": KS}
    params["baselines"]["methods"] = ["bm25"]  # two methods: more test nothing the retrains do not
    params["scores"]["variants"] = []
    params["profiles"]["test"]["pretrain"]["steps"] = STEPS
    params["runtime"]["checkpoint_every"] = 25


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
    n = SUBSETS + 2 * len(KS)  # the subsets, then one arm per method and k
    assert f"lds retrains: {n} retrains of {STEPS} steps (2 already done)" in out
    assert "lds run: nothing left" in out  # its world, model and scores were not built again
    assert {p: (retrains / p).stat().st_mtime_ns for p in finished} == finished  # finished retrains not redone
    resumed = pq.read_table(root / "results/validation/lds.parquet")
    assert resumed.schema == schemas.VALIDATION

    rows = resumed.to_pylist()
    queries = pq.read_table(root / "results/validation/lds_run/queries.parquet").to_pylist()
    scored = [q["query_id"] for q in queries if not q["task"].endswith("control")]
    for test, setting in (("lds", f"M={SUBSETS}, fraction=0.5"), ("leave_k_out", "k=2")):
        for method in ("influence", "bm25"):
            got = [r for r in rows if r["test"] == test and r["method"] == method]
            assert [r["query_id"] for r in got] == scored and {r["setting"] for r in got} == {setting}
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
    assert {(r["method"], r["test"]) for r in rows} == {(m, t) for m in every for t in ("lds", "leave_k_out")}
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
