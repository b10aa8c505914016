"""Stage `tail_patch` (``make validate``): one more training step on a method's top document; how much does the
completion's log-probability rise? (Chang et al. 2024, TrackStar.)

    wherefrom tail_patch        # reads the model (with AdamW's final state), corpus, queries and every
                                # method's scores; writes results/validation/tail_patch.parquet and
                                # metrics/validation_tail_patch.json

For each query of a removal group (factual, each reasoning task) and each method, the method's top documents
(``validation.tail_patch_top``: the top 1, and the top 10) are each stepped on alone from the final weights,
and the completion's Δ log p is measured (``influence/retraining/tail_patch.py``), in float64. Twice, because the two
answer different questions:

- ``tail_patch_adamw``: the pretraining's own next step (AdamW in its final state, at its last learning
  rate, on the document's mean token loss, the gradient clipped as in training): what training on the
  document would do;
- ``tail_patch_sgd``: plain SGD at ``validation.sgd_lr`` on the summed loss: the first-order limit, where the
  rise is the learning rate times the gradient dot product over every weight (``identity`` scores the MLP
  weights' part of it).

The value for top k is the mean rise over the k documents. A document's step does not depend on the query,
so each document in any method's list is stepped on once and every query that lists it is measured; the
documents go in parts of ``PART`` that are kept, so an interrupted run resumes with the next part.

One run is one draw: with ``validation.seeds`` the test runs on the seed study's run of each training seed
(``make seeds``: the same world, its own model and scores), each draw's parts apart.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from influence import data, shards
from influence.retraining.tail_patch import sgd, tail_patch
from pipeline.analysis import validation
from pipeline.analysis.counterfactual import GROUPS
from pipeline.analysis.score_matrix import in_memory
from pipeline.analysis.validation import rows
from pipeline.core.atomic import write_parquet
from pipeline.core.config import Params
from pipeline.core.errors import ParamsError, WherefromError
from pipeline.core.model import load_model, set_threads
from pipeline.core.seeds import draws
from pipeline.core.stages import of_one_draw, resolved
from pipeline.core.training import FINAL_OPTIMIZER, adamw_after_training
from pipeline.runs import methods

PART = 100  # documents per kept part
RISES = pa.schema([
    pa.field("doc_id", pa.int64(), nullable=False),
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("sgd", pa.float64(), nullable=False),  # Δ log p (nats) after the SGD step on the document
    pa.field("adamw", pa.float64(), nullable=False),  # after AdamW's next step on it
])


def _key(params: Params, optimizer: Path, doc_ids: list[int], asked: dict[int, list[str]]) -> str:
    settings = of_one_draw(resolved(params, "tail_patch"))
    h = hashlib.sha256(json.dumps([settings, doc_ids, [asked[d] for d in doc_ids]]).encode())
    for path in (optimizer.parent / "model.safetensors", optimizer, Path(params.queries.out)):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def run(params: Params) -> Path:
    cfg = params.validation
    start = time.perf_counter()
    if params.model.name_or_path:
        raise ParamsError(f"validation: tail-patch steps as the pretraining did, and model.name_or_path is set "
                          f"({params.model.name_or_path}): its optimizer state is not here")
    found, documents, runs = [], 0, draws(params, Path(cfg.out_dir) / "tail_patch_parts")
    for own, parts_dir in runs:
        draw, n = _patch(own, parts_dir)
        found, documents = found + draw, documents + n
    out = validation.write(found, cfg.out_dir, cfg.metrics_dir, "tail_patch", params.seed)
    print(f"tail_patch: {documents} documents, {len(runs)} training draw(s), in {time.perf_counter() - start:.0f}s "
          f"-> {out}")
    return out


def _patch(params: Params, parts_dir: Path) -> tuple[list[dict], int]:
    """One draw's rows of ``schemas.VALIDATION``, and how many documents were stepped on."""
    cfg = params.validation
    optimizer = Path(params.model.dir) / FINAL_OPTIMIZER
    if not optimizer.is_file():
        raise WherefromError(f"{optimizer}: not found; the pretrain stage saves AdamW's final state there: run it "
                             f"again (dvc repro)")
    every = pq.read_table(params.queries.out).to_pylist()
    doc_ids, scores = in_memory({m: methods.scores_dir(params, m) for m in methods.selected(params)},
                                [q["query_id"] for q in every])
    grouped = [i for i, q in enumerate(every) if q["task"] in GROUPS]
    queries, scores = [every[i] for i in grouped], {m: s[grouped] for m, s in scores.items()}
    query_ids, tasks = [q["query_id"] for q in queries], {q["query_id"]: q["task"] for q in queries}
    depth = min(max(cfg.tail_patch_top), len(doc_ids))
    top = {m: doc_ids[np.argsort(-s, axis=1, kind="stable")[:, :depth]] for m, s in scores.items()}
    asked: dict[int, set[int]] = {}  # document -> the queries whose lists hold it
    for listed in top.values():
        for q, docs in enumerate(listed):
            for d in docs.tolist():
                asked.setdefault(d, set()).add(q)
    asked_ids = {d: [query_ids[q] for q in sorted(qs)] for d, qs in asked.items()}

    set_threads(params.runtime.threads)
    model, tokenizer = load_model(params.model.dir)
    model = model.double()  # a rise of a thousandth of a nat, read exactly
    adamw, clip = adamw_after_training(optimizer)
    corpus = ds.dataset(params.corpus.out_dir, format="parquet").to_table(columns=["doc_id", "text"])
    text = dict(zip(corpus["doc_id"].to_pylist(), corpus["text"].to_pylist()))
    encoded = dict(zip(query_ids, data.queries(tokenizer, [q["prompt"] for q in queries],
                                                [q["completion"] for q in queries]).items))
    whole = params.corpus.long_docs != "truncate"
    ordered = sorted(asked_ids)
    parts = [ordered[i:i + PART] for i in range(0, len(ordered), PART)]
    print(f"tail_patch: {len(ordered)} documents in the top {depth} of {len(scores)} methods for {len(queries)} "
          f"queries, each stepped on twice (AdamW, SGD at {cfg.sgd_lr:g}); training seed {params.training_seed}")
    tables = []
    for index, part in enumerate(tqdm(parts, desc="tail_patch", unit="part", mininterval=1.0)):
        path, key = parts_dir / f"part-{index:05d}.parquet", _key(params, optimizer, part, asked_ids)
        n_rows = sum(len(asked_ids[d]) for d in part)
        if not shards.is_complete(path, key, n_rows):
            found = {"doc_id": [], "query_id": [], "sgd": [], "adamw": []}
            for d in part:
                windows = [data.documents(tokenizer, [text[d]], params.model.context, whole).items]
                measured = [encoded[q] for q in asked_ids[d]]
                pad = tokenizer.pad_token_id
                found["sgd"] += tail_patch(model, measured, windows, pad, sgd(cfg.sgd_lr))[0].tolist()
                found["adamw"] += tail_patch(model, measured, windows, pad, adamw, max_grad_norm=clip,
                                             mean_loss=True)[0].tolist()
                found["doc_id"] += [d] * len(measured)
                found["query_id"] += asked_ids[d]
            write_parquet(pa.table(found, schema=RISES), path, RISES.with_metadata({shards.RUN_KEY: key.encode()}))
        tables.append(pq.read_table(path, schema=RISES))
    rises = pa.concat_tables(tables).to_pylist()
    rise = {(r["doc_id"], r["query_id"]): r for r in rises}

    found = []
    for optimizer_name in ("adamw", "sgd"):
        for name, listed in top.items():
            for k in cfg.tail_patch_top:
                values = np.array([np.mean([rise[(d, q)][optimizer_name] for d in docs[:k].tolist()])
                                   for q, docs in zip(query_ids, listed)])
                found += rows(name, f"tail_patch_{optimizer_name}", f"top={k}", query_ids, tasks, values,
                              params.training_seed)
    return found, len(ordered)
