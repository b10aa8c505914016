"""The Dask tasks of the factors stage: one EK-FAC pass over one shard of documents, its sums kept on disk.

A task runs ``fisher``'s covariance or lambda pass over its shard and writes what it summed
(the covariance pass: activation and output-gradient covariance sums with their token counts; the
lambda pass: corrected-eigenvalue sums with their document count) to
``PARTIAL/PASS/shard=NNNNN.safetensors``, atomically, with the run key in the file's metadata. A shard
whose file carries this run's key is not redone, so a run killed at any moment resumes at its first
unfinished shard. As for scores, the model is loaded once per worker and each worker reads its own
documents from the corpus Parquet.

Sampled (true-Fisher) targets are drawn from a generator seeded with (seed, pass, shard): a shard's sums
do not depend on which worker ran it, how many ran beside it, or whether a kill came before it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from kronfluence.analyzer import prepare_model
from kronfluence.factor.eigen import load_eigendecomposition
from safetensors import safe_open
from safetensors.torch import save_file

from influence import data
from influence.cluster import pin_gpu
from influence.curvature import fisher
from influence.curvature.fisher import Factors
from influence.shards import Shard
from influence.task import CausalLMTask
from pipeline.core.atomic import atomic_path
from pipeline.core.corpus_reader import read_texts
from pipeline.core.model import load_model, set_threads

RUN_KEY = "wherefrom.run_key"


@dataclass(frozen=True)
class FactorJob:
    """Everything a worker needs for a factor pass, small enough to send with every task."""

    run_key: str
    model_dir: str
    corpus_dir: str
    partial_dir: str  # the shards' sums, PASS/shard=NNNNN.safetensors
    eigen_dir: str  # where the eigendecomposition lies once the covariance pass is reduced (kronfluence's layout)
    tracked: tuple[str, ...]  # module names
    batch_size: int
    context: int
    whole_documents: bool
    sample: bool  # true Fisher (targets drawn from the model) or empirical (the documents' own tokens)
    seed: int
    threads: int


def shard_path(partial_dir: str | Path, step: str, index: int) -> Path:
    return Path(partial_dir) / step / f"shard={index:05d}.safetensors"


def is_complete(path: Path, run_key: str) -> bool:
    try:
        with safe_open(path, "pt") as f:
            return (f.metadata() or {}).get(RUN_KEY) == run_key
    except Exception:  # absent, truncated or not a safetensors file: redo the shard
        return False


def write_sums(path: Path, sums: Factors, run_key: str) -> None:
    flat = {f"{factor}/{module}": t.contiguous()
            for factor, by_module in sums.items() for module, t in by_module.items()}
    with atomic_path(path) as tmp:
        save_file(flat, tmp, metadata={RUN_KEY: run_key})


def read_sums(path: Path) -> Factors:
    out: Factors = {}
    with safe_open(path, "pt") as f:
        for name in f.keys():
            factor, module = name.split("/", 1)
            out.setdefault(factor, {})[module] = f.get_tensor(name)
    return out


def shard_seed(seed: int, step: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}-{step}-{index}".encode()).digest()[:8], "little")


_PREPARED: dict[str, tuple] = {}


def _prepared(job: FactorJob, step: str):
    key = f"{job.run_key}-{step}"  # the lambda pass also holds the eigenvectors
    if key not in _PREPARED:
        _PREPARED.clear()  # one run at a time per worker: free the previous model
        pin_gpu()
        set_threads(job.threads)
        transformers.logging.disable_progress_bar()
        model, tokenizer = load_model(job.model_dir)
        model = prepare_model(model, CausalLMTask(list(job.tracked)))
        eigen = load_eigendecomposition(Path(job.eigen_dir)) if step == "lambda" else None
        _PREPARED[key] = (model, tokenizer, eigen)
    return _PREPARED[key]


def prepare(job: FactorJob, step: str) -> int:
    """Load what this worker needs for ``step`` ahead of its first shard; returns the worker's pid."""
    _prepared(job, step)
    return os.getpid()


def run_pass(shard: Shard, job: FactorJob, step: str) -> int:
    """Sum ``step`` over ``shard`` unless its sums are already on disk; returns the documents summed."""
    path = shard_path(job.partial_dir, step, shard.index)
    if is_complete(path, job.run_key):
        return 0
    model, tokenizer, eigen = _prepared(job, step)
    docs = data.documents(tokenizer, read_texts(job.corpus_dir, shard.doc_ids), job.context,
                          job.whole_documents).by_length()
    batches = data.loader(docs, job.batch_size, tokenizer.pad_token_id)
    torch.manual_seed(shard_seed(job.seed, step, shard.index))
    if step == "covariance":
        sums = fisher.covariance(model, batches, job.sample, desc=None)
    else:
        sums = fisher.lambdas(model, batches, eigen, job.sample, desc=None)
    write_sums(path, {f: {m: t.cpu() for m, t in by_module.items()} for f, by_module in sums.items()}, job.run_key)
    return len(shard.doc_ids)


def covariance_shard(shard: Shard, job: FactorJob) -> int:
    return run_pass(shard, job, "covariance")


def lambda_shard(shard: Shard, job: FactorJob) -> int:
    return run_pass(shard, job, "lambda")
