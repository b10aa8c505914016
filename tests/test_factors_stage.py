"""The factors stage on Dask: shards on 1 or 2 workers, a resumed kill -9, an external cluster, all the same factors.

The reference is ``factors.fit`` in one process (tests/test_fisher.py holds it to kronfluence). Sampled
(true-Fisher) targets are drawn per shard, so a sharded fit equals another sharded fit (any workers,
resumed or not) and the one-process fit only where nothing is sampled: with the empirical Fisher. With
sampled targets the two are two Monte Carlo draws of one Fisher, and they differ as much as the one-process
fit differs from itself under another seed.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, external_dask_cluster, in_eigenbasis, make_params
from safetensors.torch import load_file
from scipy.stats import spearmanr

from influence import data
from influence.curvature import factors
from influence.curvature import runner as factor_runner
from influence.curvature.jobs import shard_path
from influence.scoring.scorer import Scorer
from pipeline.core.corpus_reader import read_doc_ids, read_texts
from pipeline.core.model import load_model
from pipeline.runs import settings
from pipeline.stages import factors as factors_stage

SHARD = 20  # documents per shard: the test corpus makes several


def fit_params(trained, out: Path, workers: int = 1, scheduler: str | None = None):
    """One torch thread per worker, whatever the number of workers: the thread count changes float rounding."""
    params = make_params(Path(trained.corpus.out_dir).parents[1], dask={"workers": workers, "threads_per_worker": 1},
                         influence={"factors_dir": str(out), "shard_size": SHARD})
    return dataclasses.replace(params, dask=dataclasses.replace(params.dask, scheduler=scheduler))


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory) -> Path:
    """The test profile's factors fitted on one worker, shards of ``SHARD`` documents (shared, read-only)."""
    out = tmp_path_factory.mktemp("reference") / "factors"
    factors_stage.run(fit_params(trained, out))
    return out


def factor_files(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.stem: load_file(p) for p in (root / factors.ANALYSIS / f"factors_{factors.FACTORS_NAME}").glob(
        "*.safetensors")}


def assert_same_factors(got: Path, expected: Path, rtol: float = 1e-5) -> None:
    """Covariances, eigenvalues and corrected eigenvalues to ``rtol`` of their largest value; eigenvectors
    by the matrix they span with the reference's eigenvalues (``in_eigenbasis``), to the same."""
    ours, reference = factor_files(got), factor_files(expected)
    assert set(ours) == set(reference) and "lambda_matrix" in reference
    for factor, by_module in reference.items():
        assert set(ours[factor]) == set(by_module), factor
        for module, want in by_module.items():
            have = ours[factor][module].double()
            want = want.double()
            if factor.endswith("eigenvectors"):
                values = reference[factor.replace("eigenvectors", "eigenvalues")][module]
                have, want = in_eigenbasis(have, values), in_eigenbasis(want, values)
            scale = want.abs().max().item()
            torch.testing.assert_close(have, want, rtol=0, atol=rtol * scale, msg=f"{factor} of {module}")


def scores(trained, root: Path) -> torch.Tensor:
    """Every document's influence on a few documents read as queries (their last 8 tokens measured)."""
    model, tok = load_model(trained.model.dir)
    texts = read_texts(trained.corpus.out_dir)
    docs = data.documents(tok, texts, trained.model.context)
    queries = data.Encoded([(ids, len(ids) - 8) for ids, _ in docs.items[:4] if len(ids) > 10])
    return Scorer(model, tok.pad_token_id, root, queries, 16).score(docs)


def min_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return min(spearmanr(a[q], b[q]).statistic for q in range(a.shape[0]))


@pytest.mark.slow
def test_one_and_two_workers_fit_the_same_factors_and_one_process_agrees_without_sampling(trained, reference,
                                                                                          tmp_path):
    factors_stage.run(fit_params(trained, tmp_path / "two", workers=2))
    assert not factor_runner.partial_dir(reference).exists()  # the partial sums are cleaned up
    assert_same_factors(tmp_path / "two", reference)
    assert min_spearman(scores(trained, tmp_path / "two"), scores(trained, reference)) >= 0.9999

    # with the documents' own tokens as targets (nothing drawn), the sums are the one-process fit's
    doc_ids = read_doc_ids(trained.corpus.out_dir)
    one = fit_params(trained, tmp_path / "sharded")
    empirical = dataclasses.replace(settings.factor_settings(one, tmp_path / "sharded"), sample=False)
    factor_runner.fit(one.model.dir, settings.documents(one), empirical, doc_ids, settings.cluster(one))
    model, tok = load_model(trained.model.dir)
    docs = data.documents(tok, read_texts(trained.corpus.out_dir, doc_ids), trained.model.context).by_length()
    factors.fit(model, tok.pad_token_id, docs, "ekfac", one.influence.tracked, one.influence.batch_size,
                tmp_path / "single", empirical_fisher=True)
    assert_same_factors(tmp_path / "sharded", tmp_path / "single")
    assert min_spearman(scores(trained, tmp_path / "sharded"), scores(trained, tmp_path / "single")) >= 0.9999


def relative_distance(got: Path, expected: Path, factor: str = "lambda_matrix") -> float:
    """The largest relative Frobenius distance of one factor over the tracked modules."""
    ours, reference = factor_files(got)[factor], factor_files(expected)[factor]
    return max(((ours[m].double() - want.double()).norm() / want.double().norm()).item()
               for m, want in reference.items())


@pytest.mark.slow
def test_sampled_factors_differ_from_one_process_as_much_as_its_own_seeds_do(trained, reference, tmp_path):
    """The sharded true Fisher (per-shard draws) against the one-process fit (one draw over all documents,
    kronfluence's): no farther from it, in corrected eigenvalues and in scores, than twice the distance
    between two one-process fits whose seeds differ: two independent draws are as far apart on average
    (on the test profile: corrected eigenvalues 0.28 against 0.28 apart, 1 - Spearman 0.020 against 0.020).
    The sums themselves are held to 1e-5 where nothing is drawn, in the test above."""
    params = fit_params(trained, tmp_path / "unused")
    tok = load_model(trained.model.dir)[1]
    docs = data.documents(tok, read_texts(trained.corpus.out_dir), trained.model.context).by_length()
    for seed in (params.seed, params.seed + 1):  # a fresh model each: fitting wraps its modules
        factors.fit(load_model(trained.model.dir)[0], tok.pad_token_id, docs, "ekfac", params.influence.tracked,
                    params.influence.batch_size, tmp_path / f"seed={seed}", seed=seed)
    one, other = tmp_path / f"seed={params.seed}", tmp_path / f"seed={params.seed + 1}"
    draws = relative_distance(other, one)
    assert 0 < relative_distance(reference, one) <= 2 * draws
    by_seed = scores(trained, one)
    draws = 1 - min_spearman(scores(trained, other), by_seed)
    assert 0 < 1 - min_spearman(scores(trained, reference), by_seed) <= 2 * draws


# A Dask worker preload: the worker writes two shards of the pass named in $BLOCK_PASS, then its next
# write of that pass blocks until the test kills the run, so the kill lands at the same point on any machine.
BLOCK_AFTER_TWO_SHARDS = """
import os
import threading

from influence.curvature import jobs as factor_jobs

if not hasattr(factor_jobs, "unblocked_write"):  # Dask may execute a preload twice in one worker
    factor_jobs.unblocked_write, factor_jobs.written = factor_jobs.write_sums, []


def write_sums(path, *args, **kwargs):
    if path.parent.name == os.environ["BLOCK_PASS"] and len(factor_jobs.written) == 2:
        threading.Event().wait()  # never set: the test kills the whole run here
    factor_jobs.unblocked_write(path, *args, **kwargs)
    if path.parent.name == os.environ["BLOCK_PASS"]:
        factor_jobs.written.append(path)


factor_jobs.write_sums = write_sums
"""


@pytest.mark.slow
@pytest.mark.parametrize("step", ["covariance", "lambda"])
def test_killed_fit_resumes_without_redoing_finished_shards(trained, reference, tmp_path, step):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "test"
    raw["profiles"]["test"] |= {"influence": {"shard_size": SHARD}, "dask": {"workers": 1, "threads_per_worker": 1}}
    raw["corpus"]["out_dir"], raw["model"]["dir"] = trained.corpus.out_dir, trained.model.dir
    raw["influence"]["factors_dir"] = str(tmp_path / "factors")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    preload = tmp_path / "block_after_two_shards.py"
    preload.write_text(BLOCK_AFTER_TWO_SHARDS)
    cmd = [sys.executable, "-m", "pipeline", "factors", "--params", str(params_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**env, "BLOCK_PASS": step,
                                                     "DASK_DISTRIBUTED__WORKER__PRELOAD": f"['{preload}']"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = factor_runner.partial_dir(tmp_path / "factors")
    shard_files = partial / step
    deadline = time.time() + 180
    while len(list(shard_files.glob("*.safetensors"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # a third shard, were the block not holding, would land now
    assert proc.poll() is None, "the run ended before the kill (run it by hand for its error)"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: the run and its Dask workers
    proc.wait()
    n_shards = -(-len(read_doc_ids(trained.corpus.out_dir)) // SHARD)
    assert len(list(shard_files.glob("*.safetensors"))) == 2 < n_shards, "the kill lands after the second shard"
    assert not (tmp_path / "factors").exists() and not list(partial.rglob("*.tmp"))
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    assert f"{step} pass over {n_shards} shards of up to {SHARD} documents (2 already complete)" in rerun.stdout
    if step == "lambda":  # the covariance pass and the eigendecomposition were finished before the kill
        assert f"covariance pass over {n_shards} shards of up to {SHARD} documents ({n_shards} already" in rerun.stdout
        assert "eigendecomposition kept from the interrupted run" in rerun.stdout
    assert_same_factors(tmp_path / "factors", reference)  # the uninterrupted run's
    manifests = [json.loads((d / factors.MANIFEST).read_text()) for d in (tmp_path / "factors", reference)]
    assert manifests[0] | {"factors_sha256": ""} == manifests[1] | {"factors_sha256": ""}  # model, modules, documents


@pytest.mark.slow
def test_an_external_dask_cluster_fits_the_same_factors(trained, reference, tmp_path):
    """`dask scheduler` and `dask worker` started by hand, the worker in another directory."""
    with external_dask_cluster(tmp_path) as address:
        factors_stage.run(fit_params(trained, tmp_path / "external", scheduler=address))
    assert_same_factors(tmp_path / "external", reference)


def test_a_shard_file_that_is_not_whole_is_redone(tmp_path):
    from influence.curvature.jobs import is_complete, write_sums

    path = shard_path(tmp_path, "covariance", 3)
    write_sums(path, {"activation_covariance": {"m": torch.ones(2, 2)}}, "key")
    assert path.name == "shard=00003.safetensors" and is_complete(path, "key") and not is_complete(path, "other")
    path.write_bytes(path.read_bytes()[:20])
    assert not is_complete(path, "key")
