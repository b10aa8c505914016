"""Build the gradient index: one Dask task per document shard, as the scores are, resumable and run-keyed.

The main process fixes the projection (from the factors: the ``eigen`` kind needs them, and the run key holds
them either way) and writes it with the manifest before any shard; each worker loads the model once, hooks a
``ProjectedTap`` on the tracked layers and writes its shards' rows. A shard from another run (other corpus,
model, factors or index settings) is redone; a complete one is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import transformers

from influence import data, shards
from influence.cluster import dask_client, pin_gpu, run_shards, threads_per_worker, warm_up
from influence.curvature.factors import MANIFEST as FACTORS_MANIFEST
from influence.curvature.factors import Manifest
from influence.curvature.prepared import prepare
from influence.index.projection import Projection, make
from influence.index.store import MANIFEST, PROJECTION, IndexManifest, ProjectedTap, project_documents, write_shard
from influence.settings import Cluster, Documents, IndexSettings, absolute
from pipeline.core.corpus_reader import content_hash, read_doc_ids, read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import load_model, set_threads
from pipeline.core.schemas import SHARD_DIRS


@dataclass(frozen=True)
class IndexJob:
    run_key: str
    model_dir: str
    factors_dir: str
    corpus_dir: str
    out_dir: str
    dtype: str
    batch_size: int
    context: int
    whole_documents: bool
    threads: int


def run_key(documents: Documents, factors_dir: str, cfg: IndexSettings) -> str:
    """Everything a document's row depends on: corpus content, the factors (and through their manifest, the
    model), the projection's settings, and how documents are read. Not the queries: they come at ask time."""
    h = hashlib.sha256()
    h.update(content_hash(documents.path).encode())
    h.update((Path(factors_dir) / FACTORS_MANIFEST).read_bytes())
    h.update(json.dumps([cfg.projection, cfg.k, cfg.seed, cfg.dtype, documents.context, documents.whole]).encode())
    return h.hexdigest()[:16]


_PREPARED: dict[str, tuple] = {}


def _prepared(job: IndexJob):
    if job.run_key not in _PREPARED:
        _PREPARED.clear()
        pin_gpu()
        set_threads(job.threads)
        transformers.logging.disable_progress_bar()
        model, tokenizer = load_model(job.model_dir)
        ready = prepare(model, Path(job.factors_dir))
        tap = ProjectedTap(ready.modules, Projection.load(Path(job.out_dir) / PROJECTION), ready.state.device)
        _PREPARED[job.run_key] = (ready, tap, tokenizer)
    return _PREPARED[job.run_key]


def prepare_worker(job: IndexJob) -> int:
    _prepared(job)
    return os.getpid()


def index_shard(shard: shards.Shard, job: IndexJob) -> int:
    """Project every document of ``shard`` (windows summed) unless its file is complete; returns documents done."""
    path = shard.path(Path(job.out_dir))
    if shards.is_complete(path, job.run_key, len(shard.doc_ids)):
        return 0
    ready, tap, tokenizer = _prepared(job)
    docs = data.documents(tokenizer, read_texts(job.corpus_dir, shard.doc_ids), job.context,
                          job.whole_documents).by_length()
    rows = project_documents(ready, tap, docs, job.batch_size, tokenizer.pad_token_id)
    write_shard(path, job.run_key, shard.doc_ids, rows, job.dtype)
    return len(shard.doc_ids)


def _projection(model_dir: str, factors_dir: str, cfg: IndexSettings, out: Path, key: str) -> Projection:
    """This run's projection, made once (kept across resumed runs, remade when the run key changes)."""
    path = out / PROJECTION
    if path.is_file() and (out / MANIFEST).is_file() and IndexManifest.load(out).run_key == key:
        return Projection.load(path)
    model, _ = load_model(model_dir)
    ready = prepare(model, Path(factors_dir))
    projection = make(cfg.projection, cfg.k, cfg.seed, {m.name: m.storage for m in ready.modules})
    projection.save(path)
    return projection


@dataclass(frozen=True)
class Built:
    """What an index run did: documents projected (0 when every shard was complete), its seconds, its size."""

    out: Path
    documents: int = 0
    seconds: float = 0.0
    bytes_per_doc: int = 0


def build_index(model_dir: str, factors_dir: str, documents: Documents, cfg: IndexSettings,
                cluster: Cluster = Cluster()) -> Built:
    """Project every shard of ``documents`` not yet complete for this run: the gradients of the model in
    ``model_dir``, in the eigenbasis of its EK-FAC factors in ``factors_dir``."""
    factors = Path(factors_dir)
    fitted = Manifest.load(factors)
    if fitted.strategy != "ekfac":
        raise WherefromError(f"{factors}: the gradient index preconditions with EK-FAC factors "
                             "(influence.strategy: ekfac)")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = run_key(documents, factors_dir, cfg)
    projection = _projection(model_dir, factors_dir, cfg, out, key)
    doc_ids = read_doc_ids(documents.path)
    plan = shards.plan(doc_ids, cfg.shard_size)
    manifest = IndexManifest(key, fitted.fingerprint, fitted.factors_sha256, projection.kind, cfg.k, cfg.seed,
                             cfg.dtype, projection.width, len(doc_ids))
    manifest.save(out)
    planned = {s.path(out).parent.name for s in plan}
    for stale in out.glob(SHARD_DIRS):
        if stale.name not in planned:
            shutil.rmtree(stale)
    job = IndexJob(key, absolute(model_dir), absolute(factors), absolute(documents.path), absolute(out), cfg.dtype,
                   cfg.batch_size, documents.context, documents.whole,
                   threads_per_worker(cluster.threads_per_worker, cluster.workers))
    todo = [s for s in plan if not shards.is_complete(s.path(out), key, len(s.doc_ids))]
    print(f"index: {len(plan)} shards of up to {cfg.shard_size} documents, {projection.kind} projection k={cfg.k}: "
          f"{manifest.bytes_per_doc:,} bytes per document ({len(plan) - len(todo)} shards already complete)")
    if not todo:
        return Built(out, 0, 0.0, manifest.bytes_per_doc)
    start = time.perf_counter()
    with dask_client(cluster) as client:
        warm_up(client, prepare_worker, job)
        done = run_shards(client, index_shard, todo, job, "index")
    seconds = time.perf_counter() - start
    print(f"index: {done} documents in {seconds:.0f}s -> {out}/ "
          f"({sum(pq.read_metadata(s.path(out)).num_rows for s in plan):,} rows)")
    return Built(out, done, seconds, manifest.bytes_per_doc)
