"""A scoring run: the score of every document on every query, one shard at a time, resumable.

Each shard of ``ScoreSettings.shard_size`` documents is one Dask task and one Parquet file
(``shard=NNNNN/part.parquet``). Shards already complete for this run are skipped, so an interrupted
run resumes where it stopped; shards from another run (other queries, factors or method) are redone.
The paper's influence runs on Dask, and its pass also writes the methods derived from it (``variants``),
each in its own directory; a corpus or index method runs in this process (``influence/methods``). The
pipeline's ``scores``, ``baselines`` and ``index`` stages run it with their params as settings
(``pipeline/runs/settings.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from influence import measurements, methods, shards
from influence.cluster import dask_client, run_shards, threads_per_worker, warm_up
from influence.curvature.factors import MANIFEST
from influence.index.asker import Asker
from influence.index.store import MANIFEST as INDEX_MANIFEST
from influence.scoring.jobs import ScoreJob, prepare, score_shard, shard_paths
from influence.settings import Cluster, Documents, Queries, ScoreSettings, absolute
from pipeline.core.corpus_reader import content_hash, read_doc_ids
from pipeline.core.errors import WherefromError
from pipeline.core.schemas import SHARD_DIRS


def check_queries(path: str) -> int:
    table = pq.read_table(path, columns=["query_id", "completion", "completion_nll"])
    for qid, completion, nll in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        if not completion.strip():
            raise WherefromError(f"{path}: query {qid} has an empty completion; influence needs completion tokens")
        if not nll > 0:
            raise WherefromError(f"{path}: query {qid} has completion_nll {nll}; scores per nat need a positive NLL")
    return table.num_rows


def run_key(documents: Documents, queries: Queries, cfg: ScoreSettings, factors_dir: str | None,
            index_dir: str | None) -> str:
    """Everything that determines the scores (corpus content, queries and their segments, factors or index, settings):
    a shard written under another key is recomputed."""
    h = hashlib.sha256()
    h.update(content_hash(documents.path).encode())
    h.update(Path(queries.path).read_bytes())
    if queries.segments:
        h.update(Path(queries.segments).read_bytes())
    if cfg.method == methods.PAPER:
        h.update((Path(factors_dir) / MANIFEST).read_bytes())
        h.update(json.dumps([name for name, _ in cfg.variants]).encode())
    elif methods.get(cfg.method, "method").from_index:  # its manifest names the model, factors and projection
        h.update((Path(index_dir) / INDEX_MANIFEST).read_bytes())
    h.update(json.dumps([cfg.method, queries.segments is not None, cfg.dtype, cfg.damping, documents.context,
                         documents.whole, cfg.seed]).encode())
    return h.hexdigest()[:16]


def _in_process(documents: Documents, cfg: ScoreSettings, rows: measurements.Measurements, todo: list[shards.Shard],
                key: str, out: Path, asker: Callable[[], Asker] | None) -> None:
    """A corpus or index method's shards, in this process: each scores the whole corpus at once (BM25's IDF is
    corpus-wide; the index is one matrix product per query)."""
    method = methods.get(cfg.method, "scores.method")
    score = method.from_index(methods.IndexInputs(asker(), rows)) if method.from_index else \
        method.from_corpus(methods.CorpusInputs(documents.path, rows, cfg.seed))
    for shard in tqdm(todo, desc=f"scores ({cfg.method})", unit="shard", mininterval=1.0):
        shards.write(shard.path(out), key, rows.keys, rows.nll, shard.doc_ids, score(shard))


@dataclasses.dataclass(frozen=True)
class Scored:
    """What a scores run did: documents scored, seconds until every worker held its prepared scorer
    (model, factors, preconditioned queries), and seconds from then until the last shard was written."""

    out: Path
    documents: int = 0
    ready_s: float = 0.0
    scoring_s: float = 0.0


def score_corpus(documents: Documents, queries: Queries, cfg: ScoreSettings, *, model_dir: str | None = None,
                 factors_dir: str | None = None, index_dir: str | None = None, cluster: Cluster = Cluster()) -> Scored:
    """Score every shard of ``documents`` not yet complete for this run by ``cfg.method``: the paper's influence
    (with ``cfg.variants`` from the same pass) on Dask, from the model in ``model_dir`` and its factors in
    ``factors_dir``; a corpus method from the texts alone; an index method from the gradient index in
    ``index_dir`` (built from that model and those factors)."""
    check_queries(queries.path)
    rows = measurements.read(queries.path, queries.segments)
    paper = cfg.method == methods.PAPER
    method = methods.get(cfg.method, "scores.method")
    if paper and not (factors_dir and (Path(factors_dir) / MANIFEST).is_file()):
        raise WherefromError(f"{factors_dir or 'factors_dir'}: no factors here; run the factors stage first")
    if method.from_index and not index_dir:
        raise WherefromError(f"scores.method: {cfg.method!r} reads the gradient index, and no index_dir is given")
    if not paper and method.from_gradients:
        raise WherefromError(f"scores.method: {cfg.method!r} is derived from influence's pass, not scored alone")
    doc_ids = read_doc_ids(documents.path)
    plan = shards.plan(doc_ids, cfg.shard_size)
    key = run_key(documents, queries, cfg, factors_dir, index_dir)
    out = Path(cfg.out_dir)
    variants = tuple((name, absolute(folder)) for name, folder in cfg.variants) if paper else ()
    planned = {s.path(out).parent.name for s in plan}
    for folder in [out, *(Path(d) for _, d in variants)]:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(SHARD_DIRS):  # shards of a larger, earlier plan
            if stale.name not in planned:
                shutil.rmtree(stale)
    job = ScoreJob(
        run_key=key,
        model_dir=absolute(model_dir) if paper else "",  # only the paper's pass loads a model on the workers
        factors_dir=absolute(factors_dir) if paper else "",
        corpus_dir=absolute(documents.path),
        queries_path=absolute(queries.path),
        segments_path=queries.segments and absolute(queries.segments),
        out_dir=absolute(out),
        variants=variants,
        batch_size=cfg.batch_size,
        context=documents.context,
        whole_documents=documents.whole,
        damping=cfg.damping,
        dtype=cfg.dtype,
        threads=threads_per_worker(cluster.threads_per_worker, cluster.workers),
    )
    todo = [s for s in plan if not all(shards.is_complete(p, key, len(rows) * len(s.doc_ids))
                                       for p in shard_paths(s, job))]
    n_queries = len(rows.prompts)
    print(f"scores: {len(plan)} shards of up to {cfg.shard_size} documents x {n_queries} queries"
          + (f" ({len(rows)} rows: each whole completion and its answer segments)" if queries.segments else "")
          + (f"; with {', '.join(n for n, _ in variants)} from the same pass" if variants else "")
          + f" ({len(plan) - len(todo)} already complete)")
    if todo and not paper:
        asker = (lambda: Asker(model_dir, factors_dir, index_dir, documents.path, documents.context,
                               damping=cfg.damping, batch_size=cfg.batch_size)) if method.from_index else None
        _in_process(documents, cfg, rows, todo, key, out, asker)
    elif todo:
        return _on_dask(cluster, todo, job, out)
    return Scored(out)


def _on_dask(cluster: Cluster, todo: list[shards.Shard], job: ScoreJob, out: Path) -> Scored:
    start = time.perf_counter()
    with dask_client(cluster) as client:
        workers = warm_up(client, prepare, job)
        ready = time.perf_counter()
        scored = run_shards(client, score_shard, todo, job, "scores")
        done = Scored(out, scored, ready - start, time.perf_counter() - ready)  # not the cluster's shutdown
    read = shards.coverage([s.path(out) for s in todo])
    print(f"scores: {scored} documents in {time.perf_counter() - start:.0f}s on {len(workers)} workers "
          f"(ready in {done.ready_s:.0f}s, then {scored / done.scoring_s:.1f} docs/s) -> {out}/"
          + (f"; {read['windows']} windows, {read['tokens']:,} tokens attributed" if read else ""))
    return done
