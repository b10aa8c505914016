"""The seed study end to end: `dvc repro seeds/dvc.yaml` on the test profile with 2 seeds, killed (kill -9)
during the second seed's run, then resumed."""

from __future__ import annotations

import csv
import hashlib
import io
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
from test_pipeline_e2e import _run, new_project, run_env

from pipeline.analysis import findings
from pipeline.core import schemas

SEEDS = [0, 1]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_seed_study_resumes_after_kill_9_and_varies_only_the_training_run(tmp_path):
    def edit(params: dict) -> None:
        params["study"]["seeds"] = SEEDS
        params["baselines"]["methods"] = ["bm25"]  # one baseline and no variants: more methods test nothing new here
        params["scores"]["variants"] = []

    root = new_project(tmp_path / "project", edit)
    runs = root / "results/seeds"

    def done(step: str) -> set[int]:
        return {s for s in SEEDS if (runs / f"seed={s}/.done/{step}").is_file()}

    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "seeds/dvc.yaml"], cwd=root, env=run_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # DVC picks the order of the seeds' stages: wait until the second has trained
    deadline = time.monotonic() + 900
    while len(done("pretrain")) < len(SEEDS) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(done("pretrain")) == len(SEEDS), "the second seed never finished pretraining"
    os.killpg(proc.pid, signal.SIGKILL)  # during the second seed's next step
    proc.wait()
    assert not (root / "results/seed_study").exists()
    assert len(done("baselines")) == 1
    (killed,) = set(SEEDS) - done("baselines")
    models = {s: _digest(runs / f"seed={s}/model/model.safetensors") for s in SEEDS}

    out = _run([sys.executable, "-m", "dvc", "repro", "seeds/dvc.yaml"], root)
    rerun = [s for s in SEEDS if f"Running stage 'seeds/dvc.yaml:seed@{s}'" in out]
    assert rerun == [killed]  # the finished seeds are not redone
    assert f"seed {killed}: pretrain already done" in out
    assert {s: _digest(runs / f"seed={s}/model/model.safetensors") for s in SEEDS} == models  # nothing retrained

    # the world is the same for every seed, and the training runs differ
    seed_params = [yaml.safe_load((runs / f"seed={s}/params.yaml").read_text()) for s in SEEDS]
    assert {p["corpus"]["out_dir"] for p in seed_params} == {"data/corpus"}
    assert [p["pretrain"]["seed"] for p in seed_params] == SEEDS
    prompts = [pq.read_table(runs / f"seed={s}/queries.parquet").column("prompt").to_pylist() for s in SEEDS]
    assert all(p == prompts[0] for p in prompts)
    assert len(set(models.values())) == len(SEEDS)

    by_seed = pq.read_table(root / "results/seed_study/findings_by_seed.parquet")
    assert by_seed.schema == schemas.FINDINGS_BY_SEED
    paper = [r for r in by_seed.to_pylist() if r["segment"] == schemas.WHOLE]
    assert len(paper) == len(findings.FINDINGS) * 2 * len(SEEDS)  # every finding x 2 methods x 2 seeds
    assert {(r["seed"], r["method"]) for r in paper} == {(s, m) for s in SEEDS for m in ("influence", "bm25")}
    assert all(r["reason"] for r in paper if r["verdict"] == schemas.UNTESTABLE)
    spread = pq.read_table(root / "results/seed_study/finding_spread.parquet").to_pylist()
    assert {r["n_runs"] for r in spread if r["segment"] == schemas.WHOLE} == {len(SEEDS)}
    shown = _run(["wherefrom", "sql", "--name", "finding_spread", "--format", "csv"], root).splitlines()
    assert shown[0] == "finding,paper,n_runs,mean,sd,ci_low,ci_high,holds_in"
    assert len(shown) == 1 + len(findings.FINDINGS)
    assert "Running stage 'seeds" not in _run([sys.executable, "-m", "dvc", "repro", "seeds/dvc.yaml"], root)

    # make validate's tail-patch over the study's draws: each seed's own model and scores, one row set per draw
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["validation"]["seeds"] = SEEDS
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(["wherefrom", "tail_patch"], root)
    patched = pq.read_table(root / "results/validation/tail_patch.parquet")
    grouped = [q["query_id"] for q in pq.read_table(runs / "seed=0/queries.parquet").to_pylist()
               if q["task"] in ("factual", "arithmetic", "slope", "linear")]
    assert patched.schema == schemas.VALIDATION
    assert sorted(patched["seed"].to_pylist()) == sorted(SEEDS * (2 * 2 * 2 * len(grouped)))  # methods x tests x top
    assert [len(list((root / f"results/validation/tail_patch_parts/seed={s}").glob("*.parquet"))) > 0 for s in SEEDS] \
        == [True] * len(SEEDS)
    declared = json.loads((root / "metrics/validation_tail_patch.json").read_text())["declared"]
    assert declared["tail_patch_adamw"]["top=1"]["bm25 below influence"]["draws"] == len(SEEDS)
    # the named query over draws: each method's mean in each draw, then their mean, lowest and highest
    by_draw = list(csv.DictReader(io.StringIO(_run(["wherefrom", "sql", "--name", "validation_by_draw", "--format",
                                                    "csv"], root))))
    assert len(by_draw) == 2 * 2  # top 1 and 10 x influence and bm25
    adamw = [r for r in patched.to_pylist() if r["test"] == "tail_patch_adamw" and r["value"] is not None]
    for shown in by_draw:
        means = [np.mean([r["value"] for r in adamw if (r["seed"], r["setting"], r["method"])
                          == (s, shown["setting"], shown["method"])]) for s in SEEDS]
        assert int(shown["draws"]) == len(SEEDS)
        assert [float(shown[c]) for c in ("mean", "lowest", "highest")] \
            == pytest.approx([np.mean(means), min(means), max(means)], abs=6e-5)  # shown to 4 decimals
    failed = subprocess.run(["wherefrom", "sql", "--name", "validation_by_draw", "--param", "test=lds"], cwd=root,
                            env=run_env(), capture_output=True, text=True)  # lds has not run here
    assert failed.returncode == 2 and failed.stderr.strip().endswith(
        "reports/sql/validation_by_draw.sql: test 'lds' does not exist (known: tail_patch_adamw, tail_patch_sgd)")

    # and the leave-k-out check on the demo (counterfactual) over the same draws, each draw's arms apart
    raw["counterfactual"]["methods"] = ["influence", "bm25"]  # the methods this project scores
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(["wherefrom", "counterfactual"], root)
    checked = pq.read_table(root / "results/counterfactual.parquet")
    assert checked.schema == schemas.COUNTERFACTUAL
    methods = raw["counterfactual"]["methods"]
    assert sorted(checked["seed"].to_pylist()) == sorted(SEEDS * len(methods) * len(prompts[0]))
    for s in SEEDS:
        assert sorted(p.stem for p in (root / f"results/counterfactual/seed={s}").glob("*.parquet")) \
            == sorted(methods)
    shown = _run(["wherefrom", "sql", "SELECT seed, count(*) AS n FROM validation WHERE setting LIKE '%demo' "
                  "GROUP BY ALL ORDER BY ALL", "--format", "csv"], root).splitlines()
    assert [line.split(",")[0] for line in shown[1:]] == [str(s) for s in SEEDS]
