"""An EK-FAC (or K-FAC) fit on Dask: the covariance pass over shards, one eigendecomposition, the lambda pass.

Each pass is one Dask task per shard of ``FactorSettings.shard_size`` documents (``jobs.py``), on the
cluster given (the pipeline's ``dask.*``, as the scores). Their sums are added here in shard order, so the factors
do not depend on the number of workers beyond the rounding of each shard's own arithmetic. What a run
has finished lies under ``OUT_DIR.partial/`` beside a key of everything that determines the
factors (model, corpus, documents, settings, code): a rerun after a kill redoes only unfinished shards,
and the eigendecomposition in between, once done, is kept too. Another key clears it. The factors
then replace ``OUT_DIR`` in one rename and the partial sums are removed.
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

from influence import shards
from influence.cluster import dask_client, run_shards, threads_per_worker, warm_up
from influence.curvature import factors
from influence.curvature.fisher import Factors
from influence.curvature.jobs import (
    FactorJob,
    covariance_shard,
    is_complete,
    lambda_shard,
    prepare,
    read_sums,
    shard_path,
)
from influence.settings import Cluster, Documents, FactorSettings, absolute
from influence.task import CausalLMTask, tracked_module_names
from pipeline.core.atomic import atomic_dir, atomic_path
from pipeline.core.corpus_reader import content_hash, read_doc_ids
from pipeline.core.hashing import code_hash
from pipeline.core.model import load_model

KEY_FILE = "run_key"
EIGEN_DONE = "eigendecomposition.done"
CODE = ("influence/curvature/fisher.py", "influence/curvature/jobs.py", "influence/data.py", "pipeline/core/model.py")


def partial_dir(factors_dir: str | Path) -> Path:
    return Path(f"{factors_dir}.partial")


def run_key(documents: Documents, cfg: FactorSettings, fingerprint: str, names: list[str], doc_ids: list[int]) -> str:
    h = hashlib.sha256()
    h.update(content_hash(documents.path).encode())
    h.update(json.dumps([fingerprint, names, sorted(doc_ids), cfg.strategy, cfg.batch_size, cfg.shard_size, cfg.sample,
                         documents.context, documents.whole, cfg.seed]).encode())
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


def fit(model_dir: str, documents: Documents, cfg: FactorSettings, doc_ids: list[int] | None = None,
        cluster: Cluster = Cluster(), seconds: dict[str, float] | None = None) -> tuple[factors.Manifest, int]:
    """Fit ``cfg.strategy`` (ekfac or kfac) of the model in ``model_dir`` on ``doc_ids`` of ``documents`` (None: all
    of them) into ``cfg.out_dir``; returns the manifest and the number of tokens the covariance counted.
    ``seconds``, when given, receives each step's wall time, the workers' loading of the model (and eigenvectors)
    apart from the passes."""
    seconds = {} if seconds is None else seconds
    doc_ids = read_doc_ids(documents.path) if doc_ids is None else doc_ids
    out = Path(cfg.out_dir)
    model = load_model(model_dir)[0]
    fingerprint = factors.model_fingerprint(model)
    names = tracked_module_names(model, cfg.tracked)
    key = run_key(documents, cfg, fingerprint, names, doc_ids)
    root = partial_dir(out).resolve()
    if not _marked(root / KEY_FILE, key):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _mark(root / KEY_FILE, key)
    fit_root = root / "fit"
    task = CausalLMTask(names)
    run = factors.analyzer(prepare_model(model, task), task, fit_root)
    factors_out = run.factors_output_dir(factors.FACTORS_NAME)
    factors_out.mkdir(parents=True, exist_ok=True)
    plan = shards.plan(doc_ids, cfg.shard_size)
    job = FactorJob(run_key=key, model_dir=absolute(model_dir), corpus_dir=absolute(documents.path),
                    partial_dir=str(root), eigen_dir=str(factors_out), tracked=tuple(names), batch_size=cfg.batch_size,
                    context=documents.context, whole_documents=documents.whole, sample=cfg.sample, seed=cfg.seed,
                    threads=threads_per_worker(cluster.threads_per_worker, cluster.workers))
    steps = [("covariance", covariance_shard)]
    if FactorConfig.CONFIGS[cfg.strategy].requires_lambda_matrices:
        steps.append(("lambda", lambda_shard))
    with dask_client(cluster) as client:
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
                    args = FactorArguments(strategy=cfg.strategy, use_empirical_fisher=not cfg.sample)
                    run.perform_eigendecomposition(factors.FACTORS_NAME, factor_args=args, overwrite_output_dir=True)
                    _mark(root / EIGEN_DONE, key)
                else:
                    print("factors: eigendecomposition kept from the interrupted run")
                seconds["eigendecomposition"] = time.perf_counter() - start
            else:
                save_lambda_matrices(factors_out, sums)
    manifest = factors.Manifest(fingerprint, cfg.strategy, names, len(doc_ids), factors.content_hash(fit_root))
    manifest.save(fit_root)
    with atomic_dir(out) as tmp:
        shutil.copytree(fit_root, tmp, dirs_exist_ok=True)
    shutil.rmtree(root)
    return manifest, tokens
