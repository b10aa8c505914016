"""The Dask task: score one shard. What it needs is loaded once per worker process, not once per task.

A worker keeps one prepared ``Scorer`` (model, factors, preconditioned queries) per run key; every
shard it is given after the first only reads its documents and runs the backward passes. Workers
read their own documents from the corpus Parquet, so no text travels through the scheduler.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from influence import data, measurements, methods, shards
from influence.cluster import pin_gpu
from influence.scoring.scorer import Scorer
from pipeline.core.corpus_reader import read_texts
from pipeline.core.model import load_model, set_threads


@dataclass(frozen=True)
class ScoreJob:
    """Everything a worker needs, small enough to send with every task."""

    run_key: str
    model_dir: str
    factors_dir: str
    corpus_dir: str
    queries_path: str
    segments_path: str | None  # the probe's answer segments: score each one too; None = whole completions only
    out_dir: str  # the paper's influence
    variants: tuple[tuple[str, str], ...]  # (method, its scores directory) of each method derived from the pass
    batch_size: int
    context: int
    whole_documents: bool  # every token, in windows; else the first ``context`` tokens
    damping: float | None
    dtype: str
    threads: int


_PREPARED: dict[str, tuple] = {}


def _prepared(job: ScoreJob):
    if job.run_key not in _PREPARED:
        _PREPARED.clear()  # one run at a time per worker: free the previous model
        pin_gpu()
        set_threads(job.threads)
        transformers.logging.disable_progress_bar()  # a worker's log is the shard bar, not weight loading
        rows = measurements.read(job.queries_path, job.segments_path)
        model, tokenizer = load_model(job.model_dir)
        amp = torch.bfloat16 if job.dtype == "bfloat16" else None
        scorer = Scorer(model, tokenizer.pad_token_id, Path(job.factors_dir), measurements.encoded(tokenizer, rows),
                        job.batch_size, job.damping, amp, variants=bool(job.variants))
        _PREPARED[job.run_key] = (scorer, tokenizer, rows)
    return _PREPARED[job.run_key]


def prepare(job: ScoreJob) -> int:
    """Load what this worker needs for ``job`` ahead of its first shard; returns the worker's pid."""
    _prepared(job)
    return os.getpid()


def shard_paths(shard: shards.Shard, job: ScoreJob) -> list[Path]:
    """The shard's file for every method of the pass, the paper's last (it is written last)."""
    return [shard.path(Path(d)) for _, d in job.variants] + [shard.path(Path(job.out_dir))]


def score_shard(shard: shards.Shard, job: ScoreJob) -> int:
    """Score ``shard`` unless it is already complete; returns the number of documents scored."""
    scorer, tokenizer, rows = _prepared(job)
    paths = shard_paths(shard, job)
    if all(shards.is_complete(p, job.run_key, len(rows) * len(shard.doc_ids)) for p in paths):
        return 0
    docs = data.documents(tokenizer, read_texts(job.corpus_dir, shard.doc_ids), job.context,
                          job.whole_documents).by_length()
    coverage = {"windows": len(docs), "tokens": data.n_targets(docs)}
    if job.variants:
        gradients = scorer.attribute(docs).expand(rows)
        for (name, _), path in zip(job.variants, paths):
            scores = methods.get(name, "scores.variants").from_gradients(gradients)
            shards.write(path, job.run_key, rows.keys, rows.nll, shard.doc_ids, scores, coverage)
        influence = gradients.ekfac
    else:
        influence = rows.expand(docs.per_document(scorer.score(docs)).double().numpy())
    shards.write(paths[-1], job.run_key, rows.keys, rows.nll, shard.doc_ids, influence, coverage)
    return len(shard.doc_ids)
