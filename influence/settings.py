"""The engine's own settings, as kronfluence has ``FactorArguments`` and ``ScoreArguments``: what a run reads and how,
in small dataclasses that know nothing of the pipeline. The pipeline's stages translate their params into these
(``pipeline/runs/settings.py``); a notebook makes them directly (docs/library.md).

Paths are strings, and every run hands its workers absolute ones: a worker of a real cluster starts in a directory of
its own, on another machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def absolute(path: str | Path) -> str:
    return str(Path(path).resolve())


@dataclass(frozen=True)
class Documents:
    """A document source: a folder of Parquet files with ``doc_id`` (int64) and ``text`` columns (and any others), read
    the way the model reads them."""

    path: str
    context: int  # the model's context: a longer document is read in windows of it
    whole: bool = True  # every token, in windows; False: each document's first ``context`` tokens only


@dataclass(frozen=True)
class Queries:
    """The queries measured: a Parquet file with ``query_id``, ``prompt``, ``completion`` and ``completion_nll``
    (nats), and optionally each completion token's answer segment (``segments``: one row per token with
    ``query_id, position, token, segment, nll``), whose segments are then scored as rows of their own."""

    path: str
    segments: str | None = None


@dataclass(frozen=True)
class Cluster:
    """Where the Dask tasks run: an existing ``dask.distributed`` scheduler, or a LocalCluster made for the run."""

    scheduler: str | None = None  # address of a running scheduler
    workers: int = 1  # LocalCluster worker processes (without a scheduler)
    threads_per_worker: int = 0  # torch threads per worker; 0 = cores / workers
    connect_timeout_s: int = 10  # how long to try reaching the scheduler
    processes: bool = True  # False: a one-worker LocalCluster runs in this process (no worker start)


@dataclass(frozen=True)
class FactorSettings:
    """The curvature fit (``influence/curvature``); the paper's settings are the defaults."""

    out_dir: str
    strategy: str = "ekfac"  # ekfac, kfac (wherefrom's passes on Dask), diagonal or identity (kronfluence's)
    tracked: str = "mlp"  # which nn.Linear layers are attributed: mlp or all_linear
    batch_size: int = 16
    shard_size: int = 1000  # documents per Dask task and file of partial sums: a killed fit resumes by shard
    sample: bool = True  # the true Fisher (targets sampled from the model); False: the documents' own tokens
    seed: int = 0  # of the sampled targets


@dataclass(frozen=True)
class ScoreSettings:
    """A scoring run (``influence/scoring``): one method's scores of every document on every query row, in shards."""

    out_dir: str
    method: str = "influence"  # a registered method (influence/methods)
    variants: tuple[tuple[str, str], ...] = ()  # (method, its out_dir) derived from influence's pass
    shard_size: int = 1000  # documents per Dask task and Parquet file
    batch_size: int = 64  # document windows per backward pass
    dtype: str = "float32"  # autocast dtype of the passes: float32 or bfloat16
    damping: float | None = None  # None: 0.1 x the mean eigenvalue per layer (the paper)
    seed: int = 0  # of the methods that draw (random)


@dataclass(frozen=True)
class IndexSettings:
    """The gradient index (``influence/index``): each document's projected gradient, stored once."""

    out_dir: str
    projection: str = "whitened"  # random, eigen or whitened (influence/index/projection.py)
    k: int = 32  # projected size per side of each tracked layer
    seed: int = 0  # of the random projection
    dtype: str = "float16"  # how rows are stored (scored in float32)
    shard_size: int = 1000
    batch_size: int = 64


@dataclass(frozen=True)
class ExactSettings:
    """Exact attribution through the training run (``influence/exact``): one method's scores, its query rows in blocks,
    one Dask task and one file each."""

    out_dir: str
    method: str  # a registered method of kind ``training`` (influence/methods: magic)
    block: int = 16  # query rows whose adjoints share one replay of the run
    every: int = 0  # the state is kept every N steps for the reverse pass; 0 = √steps
    segments: bool = False  # each answer segment as a row of its own (a row costs one reverse pass)
    shard_size: int = 1000  # documents per score shard
