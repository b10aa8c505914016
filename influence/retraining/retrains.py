"""Retrains as Dask tasks: what influence estimates, measured by training again without some documents.

A retrain is the original training run (``pipeline/core/training.py``: its initialisation, seed, batches and
steps) with the removed documents' tokens masked out, then every query's completion measured on it (NLL in
nats, float64, prompt masked; the greedy answer too when the job asks). The LDS subsets, the leave-k-out
arms and the counterfactual check's arms are all retrains of one run: each is one Dask task and one small
Parquet file, keyed as score shards are, so on a cluster they run side by side, and a rerun (after a kill -9)
skips the finished ones and resumes an interrupted one from its last checkpoint (``runtime.checkpoint_every``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

from influence import shards
from influence.cluster import pin_gpu, run_shards, threads_per_worker
from influence.settings import Cluster, absolute
from pipeline.core import training
from pipeline.core.atomic import write_parquet
from pipeline.core.config import ModelConfig, PretrainConfig  # the training recipe: pipeline/core/training.py's
from pipeline.core.corpus_reader import content_hash
from pipeline.core.model import completion_nll, greedy_completions, load_model, set_threads
from pipeline.core.schemas import RETRAIN
from pipeline.core.training import Checkpoint, kept_tokens, pretrain, token_stream


@dataclass(frozen=True)
class Retrain:
    """One retrain: its name (its file's), its place in the run (``index``) and the doc ids it goes without."""

    index: int
    name: str
    removed: tuple[int, ...]


@dataclass(frozen=True)
class RetrainJob:
    """What every retrain of one run shares. Paths are absolute: an external cluster's worker resolves a
    relative one against its own directory."""

    run_key: str  # the original run's corpus, queries, tokenizer, settings and this training code
    model_dir: str  # the original model: its tokenizer (the weights are trained again from the seed)
    corpus_dir: str
    queries_path: str
    out_dir: str
    model: ModelConfig
    pretrain: PretrainConfig
    seed: int
    query_batch_size: int
    checkpoint_every: int
    threads: int
    answer_tokens: int = 0  # > 0: each query's greedy answer too, up to this many tokens (the counterfactual check)

    def key(self, retrain: Retrain) -> str:
        answers = f";answers={self.answer_tokens}" if self.answer_tokens else ""
        return hashlib.sha256((self.run_key + ",".join(map(str, sorted(retrain.removed))) + answers).encode()
                              ).hexdigest()[:16]

    def path(self, retrain: Retrain) -> Path:
        return Path(self.out_dir) / f"{retrain.name}.parquet"

    def n_queries(self) -> int:
        return pq.read_metadata(self.queries_path).num_rows

    def is_done(self, retrain: Retrain) -> bool:
        return shards.is_complete(self.path(retrain), self.key(retrain), self.n_queries())


def job_for(model_dir: str, corpus_dir: str, queries_path: str, model: ModelConfig, pretrain: PretrainConfig,
            seed: int, out_dir: Path, *, query_batch_size: int, checkpoint_every: int, cluster: Cluster = Cluster(),
            answer_tokens: int = 0) -> RetrainJob:
    """The job of retraining the run that trained ``model_dir`` (its recipe: ``model``, ``pretrain`` and the
    training ``seed``) on ``corpus_dir``, measured on ``queries_path``, its retrains kept in ``out_dir``."""
    return RetrainJob(
        run_key=run_key(model_dir, corpus_dir, queries_path, model, pretrain, seed), model_dir=absolute(model_dir),
        corpus_dir=absolute(corpus_dir), queries_path=absolute(queries_path), out_dir=absolute(out_dir), model=model,
        pretrain=pretrain, seed=seed,
        query_batch_size=query_batch_size, checkpoint_every=checkpoint_every,
        threads=threads_per_worker(cluster.threads_per_worker, cluster.workers), answer_tokens=answer_tokens)


def run_key(model_dir: str, corpus_dir: str, queries_path: str, model: ModelConfig, pretrain: PretrainConfig,
            seed: int) -> str:
    """What a training run and its measurement depend on: the corpus, the queries, the tokenizer, the recipe and
    this training code. Retrains and exact attribution (``influence/exact/runner.py``) key their files on it."""
    h = hashlib.sha256(content_hash(corpus_dir).encode() + Path(queries_path).read_bytes())
    for path in (*sorted(Path(model_dir).glob("tokenizer*")), Path(training.__file__)):
        h.update(path.read_bytes())
    h.update(json.dumps([dataclasses.asdict(model), dataclasses.asdict(pretrain), seed], sort_keys=True).encode())
    return h.hexdigest()[:16]


_CORPUS: dict[str, tuple] = {}


def _inputs(job: RetrainJob) -> tuple:
    """The tokenizer, the corpus's doc ids and token stream, and the queries: read once per worker and run."""
    if job.run_key not in _CORPUS:
        _CORPUS.clear()
        pin_gpu()
        set_threads(job.threads)
        _, tokenizer = load_model(job.model_dir)
        corpus = ds.dataset(job.corpus_dir, format="parquet").to_table(columns=["doc_id", "text"])
        texts = corpus["text"].to_pylist()  # file order, as pretrain read it
        queries = pq.read_table(job.queries_path, columns=["query_id", "prompt", "completion"]).to_pylist()
        _CORPUS[job.run_key] = (tokenizer, corpus["doc_id"].to_numpy(), texts, token_stream(tokenizer, texts), queries)
    return _CORPUS[job.run_key]


def measure(model, tokenizer, queries: list[dict], batch_size: int) -> list[float]:
    """Each query's completion NLL (nats, float64) on ``model``: what every retrain, and the original, report."""
    return completion_nll(model, tokenizer, [q["prompt"] for q in queries], [q["completion"] for q in queries],
                          batch_size)


def retrain(item: Retrain, job: RetrainJob) -> int:
    """Train without ``item.removed`` and write each query's NLL (unless already done); returns steps trained."""
    if job.is_done(item):
        return 0
    tokenizer, doc_ids, texts, stream, queries = _inputs(job)
    keep = kept_tokens(tokenizer, texts, list(~np.isin(doc_ids, item.removed)))
    checkpoint = Checkpoint(Path(job.out_dir) / f"{item.name}.checkpoint", job.checkpoint_every)
    with torch.random.fork_rng(devices=[]):  # build_model seeds torch: leave the worker's generator as it was
        model, _ = pretrain(tokenizer, stream, job.model, job.pretrain, job.seed, keep=keep, checkpoint=checkpoint,
                            desc=f"retrain {item.name}", progress=False)  # the run's bar counts retrains
    nll = measure(model, tokenizer, queries, job.query_batch_size)
    answers = (greedy_completions(model, tokenizer, [q["prompt"] for q in queries], job.answer_tokens,
                                  job.query_batch_size) if job.answer_tokens else [None] * len(queries))
    table = pa.table({
        "retrain": [item.name] * len(queries), "query_id": [q["query_id"] for q in queries], "nll": nll,
        "docs_removed": [len(item.removed)] * len(queries), "tokens_removed": [int((~keep).sum())] * len(queries),
        "completion": answers,
    }, schema=RETRAIN)
    write_parquet(table, job.path(item), RETRAIN.with_metadata({shards.RUN_KEY: job.key(item).encode()}))
    return job.pretrain.steps


def run_all(client, items: list[Retrain], job: RetrainJob, name: str) -> pa.Table:
    """Every retrain in ``items`` not yet done, as Dask tasks on ``client``; then all of their rows, in
    ``items``' order."""
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        raise ValueError("retrain names must be unique: each is a file")
    todo = [i for i in items if not job.is_done(i)]
    print(f"{name}: {len(items)} retrains of {job.pretrain.steps:,} steps ({len(items) - len(todo)} already done)")
    if todo:
        Path(job.out_dir).mkdir(parents=True, exist_ok=True)
        run_shards(client, retrain, todo, job, name, unit="retrain", counted="steps")
    return pa.concat_tables([pq.read_table(job.path(i), schema=RETRAIN) for i in items])
