"""Stage `counterfactual` (``make validate``): retrain without each method's top documents, and measure
what each query's answer loses.

    wherefrom counterfactual    # reads the model, corpus, queries and results/top_docs.parquet;
                                # writes results/counterfactual.parquet and metrics/counterfactual.json

Influence functions estimate what retraining without a document would do; this stage retrains. For
each method (influence, bm25, random) it removes that method's removal sets (``pipeline/analysis/
counterfactual.py`` states the rule), trains a model from the original's initialisation with the same
seed, tokenizer, batches and steps, the removed documents' tokens masked out of every window
(``pipeline/core/training.py``, shared with the pretrain stage), and measures every query's original
completion on it: NLL in float64, prompt masked, and whether its own greedy answer is still right.
Removing nothing reproduces the original model exactly, so ΔNLL is what the removal did.

Each method's retrain is one arm; a finished arm is kept in ``counterfactual.arms_dir`` under a key of
everything it depends on, so an interrupted run resumes with the next arm.

One run is one draw: with ``validation.seeds`` the check runs on the seed study's run of each training seed
(``make seeds``: the same world, its own model and top documents), each draw's arms in ``arms_dir/seed=N/``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from influence import shards
from pipeline.analysis.counterfactual import removal_sets, summary
from pipeline.core import schemas, training
from pipeline.core.atomic import write_json, write_parquet
from pipeline.core.config import Params, of_one_draw, resolved
from pipeline.core.corpus_reader import content_hash
from pipeline.core.errors import ParamsError, WherefromError
from pipeline.core.model import completion_nll, greedy_completions, load_model
from pipeline.core.seeds import draws
from pipeline.core.training import Checkpoint, kept_tokens, pretrain, token_stream
from queries.answers import is_correct


def _arm_key(params: Params, method: str, removed: list[int]) -> str:
    h = hashlib.sha256(json.dumps(of_one_draw(resolved(params, "counterfactual")), sort_keys=True).encode())
    h.update(method.encode() + json.dumps(sorted(removed)).encode())
    h.update(content_hash(params.corpus.out_dir).encode() + str(schemas.COUNTERFACTUAL).encode())
    # the queries, the tokenizer, and how a retrain trains (a change there changes every number)
    for path in (Path(params.queries.out), *sorted(Path(params.model.dir).glob("tokenizer*")), Path(training.__file__)):
        h.update(path.read_bytes())
    return h.hexdigest()


def _rows(method: str, queries: list[dict], sets: dict[str, list[int]], n_removed: int, tokens: int,
          before: list[float], after: list[float], answers: list[str], seed: int) -> pa.Table:
    """One arm's rows: each query with its removal group, its NLL before and after, and the new answer."""
    group_of = {q["query_id"]: q["task"] for q in queries if q["task"] in sets}
    return pa.Table.from_pylist([{
        "method": method, "query_id": q["query_id"], "task": q["task"], "removal_group": group_of.get(q["query_id"]),
        "group_docs_removed": len(sets.get(group_of.get(q["query_id"]), ())), "docs_removed": n_removed,
        "tokens_removed": tokens,
        "nll_before": b, "nll_after": a, "delta_nll": a - b, "correct_before": q["correct"],
        "correct_after": is_correct(q["kind"], text, q["answer"]) if q["answer"] else None, "completion_after": text,
        "seed": seed,
    } for q, b, a, text in zip(queries, before, after, answers)], schema=schemas.COUNTERFACTUAL)


def run(params: Params) -> Path:
    cfg = params.counterfactual
    if params.model.name_or_path:
        raise ParamsError("counterfactual: retraining needs a model pretrained here; model.name_or_path is set "
                          f"({params.model.name_or_path})")
    table = pa.concat_tables([_arms(own, arms) for own, arms in draws(params, Path(cfg.arms_dir))])
    write_parquet(table, cfg.out, schemas.COUNTERFACTUAL)
    numbers = summary(table)
    write_json(numbers, cfg.metrics)
    for method, by_task in numbers["mean_delta_nll"].items():
        print(f"counterfactual: mean dNLL, {method}: " + ", ".join(f"{t} {v:+.3f}" for t, v in by_task.items()
                                                                    if v is not None))
    return Path(cfg.out)


def _arms(params: Params, arms_dir: Path) -> pa.Table:
    """One draw's arms, each retrained unless it is already kept in ``arms_dir``."""
    cfg = params.counterfactual
    top_docs_path = Path(params.analysis.out_dir) / "top_docs.parquet"
    if not top_docs_path.is_file():
        raise WherefromError(f"{top_docs_path}: not found; run the pipeline first (make demo, or dvc repro)")
    top_docs = pq.read_table(top_docs_path)
    queries = pq.read_table(params.queries.out).to_pylist()
    tasks = {q["query_id"]: q["task"] for q in queries}
    corpus = ds.dataset(params.corpus.out_dir, format="parquet").to_table(columns=["doc_id", "text"])
    doc_ids, texts = corpus["doc_id"].to_pylist(), corpus["text"].to_pylist()  # file order, as pretrain read it

    model, tokenizer = load_model(params.model.dir)
    prompts, completions = [q["prompt"] for q in queries], [q["completion"] for q in queries]
    nll_before = completion_nll(model, tokenizer, prompts, completions, params.queries.batch_size)
    del model
    stream = token_stream(tokenizer, texts)  # the original run's stream; a retrain masks what it removes

    arms = []
    for method in cfg.methods:
        sets = removal_sets(top_docs, method, tasks, cfg.docs_per_group, str(top_docs_path))
        removed = sorted(set().union(*sets.values()))
        key = _arm_key(params, method, removed)
        path = arms_dir / f"{method}.parquet"
        if not shards.is_complete(path, key, len(queries)):  # a finished arm is a shard of this run
            start = time.perf_counter()
            gone = set(removed)
            keep = kept_tokens(tokenizer, texts, [d not in gone for d in doc_ids])
            resume = Checkpoint(arms_dir / f"{method}.checkpoint", params.runtime.checkpoint_every)
            retrained, _ = pretrain(tokenizer, stream, params.model, params.pretrain, params.training_seed, keep=keep,
                                    checkpoint=resume,
                                    desc=f"counterfactual: retrain without {method}'s {len(removed)} documents")
            after = completion_nll(retrained, tokenizer, prompts, completions, params.queries.batch_size)
            answers = greedy_completions(retrained, tokenizer, prompts, params.queries.max_new_tokens,
                                         params.queries.batch_size)
            arm = _rows(method, queries, sets, len(removed), int((~keep).sum()), nll_before, after, answers,
                        params.training_seed)
            write_parquet(arm, path, schemas.COUNTERFACTUAL.with_metadata({shards.RUN_KEY: key.encode()}))
            print(f"counterfactual: {method}: {len(removed)} documents removed, retrained in "
                  f"{time.perf_counter() - start:.0f}s")
        else:
            arm = pq.read_table(path)
            print(f"counterfactual: {method}: already retrained ({path})")
        arms.append(arm.cast(schemas.COUNTERFACTUAL))
    return pa.concat_tables(arms)
