"""A training method's scores (``from_training``: MAGIC) as Dask tasks: blocks of query rows, keyed and resumable.

Each task is one block of ``ExactSettings.block`` query rows: the worker replays the run once (``replayed``, kept
per worker and run), walks the block's adjoints back through it and writes ``blocks/block=NNNNN.parquet`` (each
row's scores of every document, in stream order). A block counts as done only if its file carries this run's key
and all its rows, so a rerun after a kill -9 redoes only the blocks unfinished. When every block is done, the rows
are written as the score table every method has (``influence/shards.py``: ``shard=NNNNN/part.parquet`` by doc id),
which the analysis reads as any other method's.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from influence import measurements, shards
from influence.cluster import dask_client, pin_gpu, run_shards, threads_per_worker
from influence.exact.attribution import Replay, replayed
from influence.exact.replay import Recipe
from influence.methods import get
from influence.retraining.retrains import run_key
from influence.settings import Cluster, Documents, ExactSettings, Queries, absolute
from pipeline.core.atomic import write_parquet
from pipeline.core.config import ModelConfig, PretrainConfig  # the training recipe: pipeline/core/training.py's
from pipeline.core.corpus_reader import read_doc_ids, read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import build_model, load_model, set_threads

BLOCKS = "blocks"
BLOCK = pa.schema([pa.field("row", pa.int32(), nullable=False),  # the row's index among the measured rows
                   pa.field("scores", pa.list_(pa.float64()), nullable=False)])  # dF/dw of every document, stream order


@dataclass(frozen=True)
class Block:
    index: int
    rows: tuple[int, ...]  # indices into the measured rows

    def path(self, out_dir: str) -> Path:
        return Path(out_dir) / BLOCKS / f"block={self.index:05d}.parquet"


@dataclass(frozen=True)
class ExactJob:
    """What every block of one run shares. Paths are absolute (a cluster's worker starts elsewhere)."""

    run_key: str
    method: str
    model_dir: str  # the trained model: its tokenizer, and the weights the replay must end at
    corpus_dir: str
    queries_path: str
    segments_path: str | None
    out_dir: str
    model: ModelConfig
    pretrain: PretrainConfig
    seed: int
    every: int
    threads: int

    def is_done(self, block: Block) -> bool:
        return shards.is_complete(block.path(self.out_dir), self.run_key, len(block.rows))


def job_for(model_dir: str, documents: Documents, queries: Queries, model: ModelConfig, pretrain: PretrainConfig,
            seed: int, cfg: ExactSettings, cluster: Cluster = Cluster()) -> ExactJob:
    """The job of ``cfg.method`` on the run that trained ``model_dir`` (``model``, ``pretrain``, ``seed``) on
    ``documents``, for ``queries``' rows (and their segments', with ``cfg.segments``)."""
    if get(cfg.method, "exact.methods").from_training is None:
        raise WherefromError(f"exact: {cfg.method!r} is not derived from the training run")
    segments = queries.segments if cfg.segments else None
    h = hashlib.sha256((run_key(model_dir, documents.path, queries.path, model, pretrain, seed) + cfg.method).encode())
    if segments:
        h.update(Path(segments).read_bytes())
    return ExactJob(h.hexdigest()[:16], cfg.method, absolute(model_dir), absolute(documents.path),
                    absolute(queries.path), absolute(segments) if segments else None, absolute(cfg.out_dir), model,
                    pretrain, seed, cfg.every, threads_per_worker(cluster.threads_per_worker, cluster.workers))


_REPLAYS: dict[str, tuple] = {}


def _replay(job: ExactJob) -> tuple[Replay, list[tuple], float]:
    """The run replayed, the measured rows' model inputs and the replay's error: once per worker and run."""
    if job.run_key not in _REPLAYS:
        _REPLAYS.clear()
        pin_gpu()
        set_threads(job.threads)
        _, tokenizer = load_model(job.model_dir)
        texts = read_texts(job.corpus_dir)  # file order, as pretrain read it
        with torch.random.fork_rng(devices=[]):  # build_model seeds torch: leave the worker's generator as it was
            model = build_model(job.model, tokenizer, job.seed)
        replay = replayed(model, tokenizer, texts, Recipe.of(job.pretrain, job.model.context, job.seed), job.every)
        rows = measurements.read(job.queries_path, job.segments_path)
        _REPLAYS[job.run_key] = (replay, measurements.encoded(tokenizer, rows).items, _replay_error(job, replay))
    return _REPLAYS[job.run_key]


def score_block(block: Block, job: ExactJob) -> int:
    """Write ``block``'s rows (unless already done); returns how many."""
    if job.is_done(block):
        return 0
    replay, items, error = _replay(job)
    scores = get(job.method, "exact").from_training(replay, [items[r] for r in block.rows])
    table = pa.table({"row": list(block.rows), "scores": list(scores)}, schema=BLOCK)
    meta = {shards.RUN_KEY: job.run_key.encode(), REPLAY_ERROR: str(error).encode()}
    write_parquet(table, block.path(job.out_dir), BLOCK.with_metadata(meta))
    return len(block.rows)


REPLAY_ERROR = b"wherefrom.replay_error"


def _replay_error(job: ExactJob, replay: Replay) -> float:
    """The largest difference between the replay's final weights and the trained model's: 0 when the replay retraces
    the run bit for bit (on the machine and threads that trained it)."""
    model, _ = load_model(job.model_dir)
    return float((replay.final.theta - torch.nn.utils.parameters_to_vector(model.parameters()).detach()).abs().max())


def score_training(job: ExactJob, cfg: ExactSettings, cluster: Cluster = Cluster()) -> dict:
    """Every block not yet done, as Dask tasks, then the score shards; returns what the run measured."""
    rows = measurements.read(job.queries_path, job.segments_path)
    measured = rows.measured
    blocks = [Block(i, tuple(range(at, min(at + cfg.block, len(measured)))))
              for i, at in enumerate(range(0, len(measured), cfg.block))]
    todo = [b for b in blocks if not job.is_done(b)]
    name = f"{job.method} blocks"
    print(f"{name}: {len(measured)} query rows in {len(blocks)} blocks of {cfg.block}, each a reverse pass through "
          f"{job.pretrain.steps:,} steps ({len(blocks) - len(todo)} already done)")
    start = time.perf_counter()
    if todo:
        (Path(job.out_dir) / BLOCKS).mkdir(parents=True, exist_ok=True)
        with dask_client(cluster) as client:
            run_shards(client, score_block, todo, job, name, unit="block", counted="rows")
    seconds = time.perf_counter() - start
    tables = [pq.read_table(b.path(job.out_dir)) for b in blocks]
    scores = rows.expand(np.stack([np.asarray(s) for t in tables for s in t["scores"].to_pylist()]))
    doc_ids = np.asarray(read_doc_ids(job.corpus_dir))
    order = np.argsort(doc_ids)  # the replay's columns are in stream (file) order; shards by ascending doc id
    for shard in shards.plan(doc_ids.tolist(), cfg.shard_size):
        columns = order[np.searchsorted(doc_ids, shard.doc_ids, sorter=order)]
        shards.write(shard.path(Path(job.out_dir)), job.run_key, rows.keys, rows.nll, shard.doc_ids, scores[:, columns])
    return {"method": job.method, "rows": len(measured), "blocks": len(blocks), "blocks_run": len(todo),
            "steps": job.pretrain.steps, "seconds": round(seconds, 1),
            "replay_max_abs_weight_difference": max(float(t.schema.metadata[REPLAY_ERROR]) for t in tables)}
