"""The Dask task: score one shard. What it needs is loaded once per worker process, not once per task.

A worker keeps one prepared ``Scorer`` (model, factors, preconditioned queries) per run key; every
shard it is given after the first only reads its documents and runs the backward passes. Workers
read their own documents from the corpus Parquet, so no text travels through the scheduler.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from influence import data, measurements, shards
from influence.baselines import random_scores
from influence.scorer import Scorer
from pipeline.core.corpus_reader import read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import load_model, set_threads


@dataclass(frozen=True)
class ScoreJob:
    """Everything a worker needs, small enough to send with every task."""

    run_key: str
    method: str  # influence | random
    model_dir: str
    factors_dir: str
    corpus_dir: str
    queries_path: str
    segments_path: str | None  # the probe's answer segments: score each one too; None = whole completions only
    out_dir: str
    batch_size: int
    context: int
    whole_documents: bool  # every token, in windows; else the first ``context`` tokens
    damping: float | None
    dtype: str
    threads: int
    seed: int


_PREPARED: dict[str, tuple] = {}


def pin_gpu() -> int | None:
    """On a machine with several GPUs, LocalCluster worker ``i`` takes GPU ``i mod n``: one worker per GPU.
    (Workers of an external cluster are pinned by whoever starts them, e.g. ``dask cuda worker``.)"""
    if not torch.cuda.is_available():
        return None
    try:
        from distributed import get_worker

        name = get_worker().name
    except ValueError:  # not inside a Dask worker
        return None
    if not isinstance(name, int):
        return None
    device = name % torch.cuda.device_count()
    torch.cuda.set_device(device)
    return device


def _prepared(job: ScoreJob):
    if job.run_key not in _PREPARED:
        _PREPARED.clear()  # one run at a time per worker: free the previous model
        pin_gpu()
        set_threads(job.threads)
        transformers.logging.disable_progress_bar()  # a worker's log is the shard bar, not weight loading
        rows = measurements.read(job.queries_path, job.segments_path)
        scorer = tokenizer = None
        if job.method == "influence":
            model, tokenizer = load_model(job.model_dir)
            amp = torch.bfloat16 if job.dtype == "bfloat16" else None
            scorer = Scorer(model, tokenizer.pad_token_id, Path(job.factors_dir), measurements.encoded(tokenizer, rows),
                            job.batch_size, job.damping, amp)
        _PREPARED[job.run_key] = (scorer, tokenizer, rows)
    return _PREPARED[job.run_key]


def prepare(job: ScoreJob) -> int:
    """Load what this worker needs for ``job`` ahead of its first shard; returns the worker's pid."""
    _prepared(job)
    return os.getpid()


def score_shard(shard: shards.Shard, job: ScoreJob) -> int:
    """Score ``shard`` unless it is already complete; returns the number of documents scored."""
    scorer, tokenizer, rows = _prepared(job)
    path = shard.path(Path(job.out_dir))
    if shards.is_complete(path, job.run_key, len(rows) * len(shard.doc_ids)):
        return 0
    coverage = None
    if job.method == "random":
        scores = random_scores(job.seed, shard.index, len(rows), len(shard.doc_ids))
    else:
        docs = data.documents(tokenizer, read_texts(job.corpus_dir, shard.doc_ids), job.context,
                              job.whole_documents).by_length()
        scores = rows.expand(docs.per_document(scorer.score(docs)).double().numpy())
        coverage = {"windows": len(docs), "tokens": data.n_targets(docs)}
    shards.write(path, job.run_key, rows.keys, rows.nll, shard.doc_ids, scores, coverage)
    return len(shard.doc_ids)


# Dask defaults that cost torch dearly, measured with two single-threaded workers on two cores:
# - ``MALLOC_TRIM_THRESHOLD_=65536`` makes glibc hand every large tensor back to the OS and fault it in
#   again: scoring in such a worker ran 1.85x slower than the same code in the main process;
# - the worker's sampling profiler takes the GIL every 10 ms: two workers scored 1.31-1.80x one worker's
#   rate with it, 1.64-1.92x without;
# - every event loop (client, scheduler, each nanny and worker) wakes every 20 ms for a health check that
#   only logs, and the memory and system monitors poll every 0.1 and 0.5 s: the main process burnt 0.8 s
#   of CPU per 14 s of scoring and each worker switched context ~800 times. With these at 1 s, 1 s and
#   5 s, two workers scored 1.89-2.01x one worker in four paired runs.
# The README gives them as YAML for workers started by hand.
TORCH_FRIENDLY_DASK = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None, timeout_s: int = 10) -> Iterator:
    """A client on the given scheduler, or on a LocalCluster of ``workers`` single-threaded processes
    (torch threads inside each worker are set by the job, so processes never oversubscribe cores),
    both under ``TORCH_FRIENDLY_DASK``."""
    import dask
    from dask.distributed import Client, LocalCluster

    with dask.config.set(TORCH_FRIENDLY_DASK):
        if scheduler:
            try:
                client = Client(scheduler, timeout=timeout_s)
            except OSError as err:
                raise WherefromError(f"dask.scheduler: {scheduler}: cannot connect within {timeout_s}s "
                                     f"(dask.connect_timeout_s): {str(err).splitlines()[0]}") from None
            with client:
                yield client
            return
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            yield client


def threads_per_worker(requested: int, workers: int) -> int:
    return requested or max(1, (os.cpu_count() or 1) // workers)
