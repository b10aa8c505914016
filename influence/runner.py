"""A scoring run: the score of every document on every query, one shard at a time, resumable.

Each shard of ``scores.shard_size`` documents is one Dask task and one Parquet file
(``shard=NNNNN/part.parquet``). Shards already complete for this run are skipped, so an interrupted
run resumes where it stopped; shards from another run (other queries, factors or method) are redone.
The ``scores`` stage runs it for influence, whose pass also writes the methods derived from it
(``scores.variants``), each in its own directory; the ``baselines`` stage runs it once per corpus method,
and the ``index`` stage once per index method, in this process (``influence/methods``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from influence import measurements, methods, shards
from influence.asker import Asker
from influence.cluster import dask_client, run_shards, threads_per_worker, warm_up
from influence.curvature import MANIFEST
from influence.gradient_index import MANIFEST as INDEX_MANIFEST
from influence.jobs import ScoreJob, prepare, score_shard, shard_paths
from pipeline.core.config import Params
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


def run_key(params: Params) -> str:
    """Everything that determines the scores (corpus content, queries and their segments, factors, settings):
    a shard written under another key is recomputed."""
    h = hashlib.sha256()
    h.update(content_hash(params.corpus.out_dir).encode())
    h.update(Path(params.queries.out).read_bytes())
    if params.scores.segments:
        h.update(Path(params.queries.segments).read_bytes())
    if params.scores.method == methods.PAPER:
        h.update((Path(params.influence.factors_dir) / MANIFEST).read_bytes())
        h.update(json.dumps(methods.variants(params)).encode())
    elif methods.stage(params.scores.method) == "index":  # its manifest names the model, factors and projection
        h.update((Path(params.index.out_dir) / INDEX_MANIFEST).read_bytes())
    h.update(json.dumps([params.scores.method, params.scores.segments, params.scores.dtype, params.influence.damping,
                         params.model.context, params.corpus.long_docs, params.seed]).encode())
    return h.hexdigest()[:16]


def _in_process(params: Params, rows: measurements.Measurements, todo: list[shards.Shard], key: str,
                out: Path) -> None:
    """A corpus or index method's shards, in this process: each scores the whole corpus at once (BM25's IDF is
    corpus-wide; the index is one matrix product per query)."""
    name = params.scores.method
    method = methods.get(name, "scores.method")
    score = method.from_index(methods.IndexInputs(Asker.from_params(params), rows)) if method.from_index else \
        method.from_corpus(methods.CorpusInputs(params.corpus.out_dir, rows, params.seed))
    for shard in tqdm(todo, desc=f"scores ({name})", unit="shard", mininterval=1.0):
        shards.write(shard.path(out), key, rows.keys, rows.nll, shard.doc_ids, score(shard))


def _absolute(path: str | Path) -> str:
    return str(Path(path).resolve())


@dataclasses.dataclass(frozen=True)
class Scored:
    """What a scores run did: documents scored, seconds until every worker held its prepared scorer
    (model, factors, preconditioned queries), and seconds from then until the last shard was written."""

    out: Path
    documents: int = 0
    ready_s: float = 0.0
    scoring_s: float = 0.0


def score_method(params: Params, name: str) -> Scored:
    """Score method ``name`` (a corpus or index method) into its own directory (``methods.scores_dir``)."""
    cfg = dataclasses.replace(params.scores, method=name, out_dir=str(methods.scores_dir(params, name)))
    return score_corpus(dataclasses.replace(params, scores=cfg))


def score_corpus(params: Params) -> Scored:
    """Score every shard of the corpus not yet complete for this run, by ``params.scores.method``."""
    cfg = params.scores
    check_queries(params.queries.out)
    segments_path = params.queries.segments if cfg.segments else None
    rows = measurements.read(params.queries.out, segments_path)
    paper = cfg.method == methods.PAPER
    if paper and not (Path(params.influence.factors_dir) / MANIFEST).is_file():
        raise WherefromError(f"{params.influence.factors_dir}: no factors here; run the factors stage first")
    if not paper and methods.stage(cfg.method) == "scores":
        raise WherefromError(f"scores.method: {cfg.method!r} is derived from influence's pass, not scored alone")
    doc_ids = read_doc_ids(params.corpus.out_dir)
    plan = shards.plan(doc_ids, cfg.shard_size)
    key = run_key(params)
    out = Path(cfg.out_dir)
    variants = tuple((name, _absolute(methods.scores_dir(params, name))) for name in methods.variants(params)) \
        if paper else ()
    planned = {s.path(out).parent.name for s in plan}
    for folder in [out, *(Path(d) for _, d in variants)]:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(SHARD_DIRS):  # shards of a larger, earlier plan
            if stale.name not in planned:
                shutil.rmtree(stale)
    # absolute paths: a worker of an external cluster resolves a relative one against its own directory
    job = ScoreJob(
        run_key=key,
        model_dir=_absolute(params.model.dir),
        factors_dir=_absolute(params.influence.factors_dir),
        corpus_dir=_absolute(params.corpus.out_dir),
        queries_path=_absolute(params.queries.out),
        segments_path=segments_path and _absolute(segments_path),
        out_dir=_absolute(out),
        variants=variants,
        batch_size=cfg.batch_size,
        context=params.model.context,
        whole_documents=params.corpus.long_docs != "truncate",
        damping=params.influence.damping,
        dtype=cfg.dtype,
        threads=threads_per_worker(params.dask.threads_per_worker, params.dask.workers),
    )
    todo = [s for s in plan if not all(shards.is_complete(p, key, len(rows) * len(s.doc_ids))
                                       for p in shard_paths(s, job))]
    n_queries = len(rows.prompts)
    print(f"scores: {len(plan)} shards of up to {cfg.shard_size} documents x {n_queries} queries"
          + (f" ({len(rows)} rows: each whole completion and its answer segments)" if cfg.segments else "")
          + (f"; with {', '.join(n for n, _ in variants)} from the same pass" if variants else "")
          + f" ({len(plan) - len(todo)} already complete)")
    if todo and not paper:
        _in_process(params, rows, todo, key, out)
    elif todo:
        return _on_dask(params, todo, job, out)
    return Scored(out)


def _on_dask(params: Params, todo: list[shards.Shard], job: ScoreJob, out: Path) -> Scored:
    start = time.perf_counter()
    with dask_client(params.dask) as client:
        workers = warm_up(client, prepare, job)
        ready = time.perf_counter()
        scored = run_shards(client, score_shard, todo, job, "scores")
        done = Scored(out, scored, ready - start, time.perf_counter() - ready)  # not the cluster's shutdown
    read = shards.coverage([s.path(out) for s in todo])
    print(f"scores: {scored} documents in {time.perf_counter() - start:.0f}s on {len(workers)} workers "
          f"(ready in {done.ready_s:.0f}s, then {scored / done.scoring_s:.1f} docs/s) -> {out}/"
          + (f"; {read['windows']} windows, {read['tokens']:,} tokens attributed" if read else ""))
    return done
