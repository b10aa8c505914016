"""An EK-FAC (or K-FAC) fit on Dask: the covariance pass over shards, one eigendecomposition, the lambda pass.

Each pass is one Dask task per shard of ``influence.shard_size`` documents (``factor_jobs.py``), on the
cluster the `scores` stage uses (``dask.*``). Their sums are added here in shard order, so the factors
do not depend on the number of workers beyond the rounding of each shard's own arithmetic. What a run
has finished lies under ``FACTORS_DIR.partial/`` beside a key of everything that determines the
factors (model, corpus, documents, settings, code): a rerun after a kill redoes only unfinished shards,
and the eigendecomposition in between, once done, is kept too. Another key clears it. The factors
then replace ``FACTORS_DIR`` in one rename and the partial sums are removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from functools import partial
from pathlib import Path

from kronfluence.analyzer import prepare_model
from kronfluence.arguments import FactorArguments
from kronfluence.factor.config import FactorConfig
from kronfluence.factor.covariance import save_covariance_matrices
from kronfluence.factor.eigen import save_lambda_matrices
from kronfluence.utils.constants import NUM_ACTIVATION_COVARIANCE_PROCESSED

from influence import curvature, shards
from influence.cluster import dask_client, run_shards, threads_per_worker, warm_up
from influence.factor_jobs import (
    FactorJob,
    covariance_shard,
    is_complete,
    lambda_shard,
    prepare,
    read_sums,
    shard_path,
)
from influence.fisher import Factors
from influence.task import CausalLMTask, tracked_module_names
from pipeline.core.atomic import atomic_dir, atomic_path
from pipeline.core.config import Params
from pipeline.core.corpus_reader import content_hash
from pipeline.core.model import load_model
from pipeline.core.steps import code_hash

KEY_FILE = "run_key"
EIGEN_DONE = "eigendecomposition.done"
CODE = ("influence/fisher.py", "influence/factor_jobs.py", "influence/data.py", "pipeline/core/model.py")


def partial_dir(factors_dir: str | Path) -> Path:
    return Path(f"{factors_dir}.partial")


def run_key(params: Params, fingerprint: str, names: list[str], doc_ids: list[int], sample: bool) -> str:
    cfg = params.influence
    h = hashlib.sha256()
    h.update(content_hash(params.corpus.out_dir).encode())
    h.update(json.dumps([fingerprint, names, sorted(doc_ids), cfg.strategy, cfg.batch_size, cfg.shard_size, sample,
                         params.model.context, params.corpus.long_docs, params.seed]).encode())
    h.update(code_hash(CODE).encode())
    return h.hexdigest()[:16]


def reduce(partial_root: Path, step: str, plan: list[shards.Shard]) -> Factors:
    """The shards' sums added in shard order (not in the order the workers finished)."""
    total: Factors = {}
    for shard in plan:
        for factor, by_module in read_sums(shard_path(partial_root, step, shard.index)).items():
            for module, tensor in by_module.items():
                if module in total.setdefault(factor, {}):
                    total[factor][module].add_(tensor)
                else:
                    total[factor][module] = tensor
    return total


def _mark(path: Path, key: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(key)


def _marked(path: Path, key: str) -> bool:
    return path.is_file() and path.read_text() == key


def fit(params: Params, doc_ids: list[int], out: Path, seconds: dict[str, float],
        sample: bool = True) -> tuple[curvature.Manifest, int]:
    """Fit ``params.influence.strategy`` (ekfac or kfac) on ``doc_ids`` into ``out``; returns the manifest
    and the number of tokens the covariance counted. ``seconds`` receives each step's wall time, the
    workers' loading of the model (and eigenvectors) apart from the passes."""
    cfg = params.influence
    model = load_model(params.model.dir)[0]
    fingerprint = curvature.model_fingerprint(model)
    names = tracked_module_names(model, cfg.tracked)
    key = run_key(params, fingerprint, names, doc_ids, sample)
    root = partial_dir(cfg.factors_dir).resolve()
    if not _marked(root / KEY_FILE, key):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _mark(root / KEY_FILE, key)
    fit_root = root / "fit"
    task = CausalLMTask(names)
    run = curvature.analyzer(prepare_model(model, task), task, fit_root)
    factors_out = run.factors_output_dir(curvature.FACTORS_NAME)
    factors_out.mkdir(parents=True, exist_ok=True)
    plan = shards.plan(doc_ids, cfg.shard_size)
    job = FactorJob(run_key=key, model_dir=str(Path(params.model.dir).resolve()),
                    corpus_dir=str(Path(params.corpus.out_dir).resolve()), partial_dir=str(root),
                    eigen_dir=str(factors_out), tracked=tuple(names), batch_size=cfg.batch_size,
                    context=params.model.context, whole_documents=params.corpus.long_docs != "truncate",
                    sample=sample, seed=params.seed,
                    threads=threads_per_worker(params.dask.threads_per_worker, params.dask.workers))
    steps = [("covariance", covariance_shard)]
    if FactorConfig.CONFIGS[cfg.strategy].requires_lambda_matrices:
        steps.append(("lambda", lambda_shard))
    with dask_client(params.dask) as client:
        for step, task_fn in steps:
            todo = [s for s in plan if not is_complete(shard_path(root, step, s.index), key)]
            print(f"factors: {step} pass over {len(plan)} shards of up to {cfg.shard_size} documents "
                  f"({len(plan) - len(todo)} already complete)")
            start = time.perf_counter()
            if todo:
                warm_up(client, partial(prepare, step=step), job)
                ready = time.perf_counter()
                seconds["workers ready"] = seconds.get("workers ready", 0.0) + ready - start
                start = ready
                run_shards(client, task_fn, todo, job, f"factors-{step}")
            sums = reduce(root, step, plan)
            seconds[f"{step} pass"] = time.perf_counter() - start
            if step == "covariance":
                tokens = int(sums[NUM_ACTIVATION_COVARIANCE_PROCESSED][names[0]])
                start = time.perf_counter()
                if not _marked(root / EIGEN_DONE, key):
                    save_covariance_matrices(factors_out, sums)
                    args = FactorArguments(strategy=cfg.strategy, use_empirical_fisher=not sample)
                    run.perform_eigendecomposition(curvature.FACTORS_NAME, factor_args=args, overwrite_output_dir=True)
                    _mark(root / EIGEN_DONE, key)
                else:
                    print("factors: eigendecomposition kept from the interrupted run")
                seconds["eigendecomposition"] = time.perf_counter() - start
            else:
                save_lambda_matrices(factors_out, sums)
    manifest = curvature.Manifest(fingerprint, cfg.strategy, names, len(doc_ids), curvature.content_hash(fit_root))
    manifest.save(fit_root)
    with atomic_dir(out) as tmp:
        shutil.copytree(fit_root, tmp, dirs_exist_ok=True)
    shutil.rmtree(root)
    return manifest, tokens
