"""Scale-out: the `scores` and `factors` stages' steady rates on two Dask workers over one, against what two
processes reach on this machine without Dask, and what one more shard costs."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import psutil
import torch

from influence import data
from influence.curvature import runner
from influence.methods import PAPER
from influence.scoring.runner import Scored, score_corpus
from influence.scoring.scorer import Scorer
from pipeline.bench.common import timed, two_processes
from pipeline.core.corpus_reader import read_doc_ids
from pipeline.core.model import load_model
from pipeline.runs import scoring, settings


def stage(params, root: Path, workers: int, threads: int, shard_size: int, run: int = 0) -> Scored:
    """The `scores` stage on the bench corpus (float32), from scratch, on ``workers`` x ``threads``."""
    out_dir = root / f"scores-{workers}x{threads}-{shard_size}-{run}"
    cfg = dataclasses.replace(scoring.score_settings(params, PAPER, out_dir), dtype="float32", shard_size=shard_size)
    return score_corpus(settings.documents(params), settings.queries(params), cfg, **scoring.score_inputs(params),
                        cluster=dataclasses.replace(settings.cluster(params), workers=workers,
                                                    threads_per_worker=threads))


def scale_out(params, root: Path, pad_id: int, docs: data.Encoded, queries: data.Encoded, pairs: int) -> None:
    """Steady scoring rate of the stage on two workers over one, each worker one core (or one GPU), in
    ``pairs`` paired runs: on a small machine one pair's ratio moves by +-0.1 with the machine's noise.
    On the CPU it also prints what two processes could reach here without Dask, for the scorer itself
    (two processes share the caches and memory bandwidth) and for plain matmuls (the cores)."""
    units = torch.cuda.device_count() if torch.cuda.is_available() else psutil.cpu_count(logical=False) or 1
    if not pairs:
        return
    if units < 2:
        print(f"scale-out: needs 2 {'GPUs' if torch.cuda.is_available() else 'cores'}, this machine has {units}")
        return
    shard_size = max(1, len(docs) // 16)  # 8 shards a worker: a short tail where one worker idles
    runs = [{n: (lambda run: run.documents / run.scoring_s)(stage(params, root, n, 1, shard_size, i)) for n in (1, 2)}
            for i in range(pairs)]
    ratios = [rate[2] / rate[1] for rate in runs]
    unit = "GPU" if torch.cuda.is_available() else "thread"
    print(f"scale-out (shards of {shard_size}), 2 workers x 1 {unit} over 1 worker x 1 {unit}: "
          f"{statistics.median(ratios):.2f}x, the median of {pairs} paired runs "
          f"({', '.join(f'{rate[2]:.1f}/{rate[1]:.1f}' for rate in runs)} docs/s)")
    if not torch.cuda.is_available():
        scorer = (params.model.dir, params.influence.factors_dir, pad_id, docs, queries, params.scores.batch_size)
        print(f"this machine's ceiling, two single-thread processes without Dask over one: the scorer "
              f"{two_processes(_score_alone, scorer):.2f}x, plain matmuls {two_processes(_matmuls, ()):.2f}x")


_SCORER = None


def _score_alone(model_dir: str, factors_dir: str, pad_id: int, docs: data.Encoded, queries: data.Encoded,
                 batch_size: int) -> float:
    """Documents/s of one single-thread scorer (built on the first call in this process)."""
    global _SCORER
    torch.set_num_threads(1)
    if _SCORER is None:
        _SCORER = Scorer(load_model(model_dir)[0], pad_id, Path(factors_dir), queries, batch_size)
        _SCORER.score(data.Encoded(docs.items[:batch_size]))
    seconds, _ = timed(lambda: _SCORER.score(docs))
    return len(docs) / seconds


def _matmuls(*_) -> float:
    """512x512 matmuls/s on one thread for 3 s: the cores alone, with everything in cache."""
    torch.set_num_threads(1)
    a, n, end = torch.randn(512, 512), 0, time.perf_counter() + 3.0
    while time.perf_counter() < end:
        a @ a
        n += 1
    return n / 3.0


def factors_stage(params, root: Path, workers: int, shard_size: int, run: int = 0) -> float:
    """Seconds of both passes of the `factors` stage's Dask fit (not the workers' start) on the bench corpus,
    from scratch, on ``workers`` single-thread workers."""
    seconds: dict[str, float] = {}
    out = root / f"factors-{workers}x1-{shard_size}-{run}"
    cfg = dataclasses.replace(settings.factor_settings(params, out), shard_size=shard_size)
    runner.fit(params.model.dir, settings.documents(params), cfg, read_doc_ids(params.corpus.out_dir),
               dataclasses.replace(settings.cluster(params), workers=workers, threads_per_worker=1), seconds)
    return seconds["covariance pass"] + seconds["lambda pass"]


def factors_scale_out(params, root: Path, n_docs: int, pairs: int) -> None:
    """Both factor passes on two single-thread workers over one, in ``pairs`` paired runs (on 2 cores or
    2 GPUs), and what one more shard costs: each shard is one covariance task and one lambda task."""
    units = torch.cuda.device_count() if torch.cuda.is_available() else psutil.cpu_count(logical=False) or 1
    if pairs and units >= 2:
        shard_size = max(1, n_docs // 16)
        runs = [{n: factors_stage(params, root, n, shard_size, i) for n in (1, 2)} for i in range(pairs)]
        print(f"factors stage scale-out (shards of {shard_size}), both passes on 2 workers over 1: "
              f"{statistics.median(t[1] / t[2] for t in runs):.2f}x, the median of {pairs} paired runs "
              f"({', '.join(f'{n_docs / t[2]:.1f}/{n_docs / t[1]:.1f}' for t in runs)} docs/s)")
    few, many = max(1, n_docs // 2), max(1, n_docs // 32)
    n_few, n_many = -(-n_docs // few), -(-n_docs // many)
    extra = factors_stage(params, root, 1, many) - factors_stage(params, root, 1, few)
    print(f"factors stage per-shard overhead: {extra / (2 * (n_many - n_few)) * 1000:.0f} ms per shard task "
          f"({n_many} against {n_few} shards of the same {n_docs} documents, 1 worker)")
