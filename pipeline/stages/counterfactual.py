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

Each method's retrain is one arm, a Dask task of ``influence/retraining/retrains.py`` as the lds stage's retrains
are: on a cluster the arms run side by side, and a finished arm is kept in ``counterfactual.arms_dir`` under a key of
everything it depends on, so an interrupted run redoes none that finished.

One run is one draw: with ``validation.seeds`` the check runs on the seed study's run of each training seed
(``make seeds``: the same world, its own model and top documents), each draw's arms in ``arms_dir/seed=N/``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from influence.cluster import dask_client
from influence.retraining.retrains import Retrain, measure, run_all
from pipeline.analysis.counterfactual import removal_sets, summary
from pipeline.core import schemas
from pipeline.core.atomic import write_json, write_parquet
from pipeline.core.config import Params
from pipeline.core.errors import ParamsError, WherefromError
from pipeline.core.model import load_model
from pipeline.core.seeds import draws
from pipeline.runs import retraining, settings
from queries.answers import is_correct


def _rows(method: str, queries: list[dict], sets: dict[str, list[int]], arm: pa.Table, before: list[float],
          seed: int) -> pa.Table:
    """One arm's rows: each query with its removal group, its NLL before and after, and the new answer."""
    group_of = {q["query_id"]: q["task"] for q in queries if q["task"] in sets}
    return pa.Table.from_pylist([{
        "method": method, "query_id": q["query_id"], "task": q["task"], "removal_group": group_of.get(q["query_id"]),
        "group_docs_removed": len(sets.get(group_of.get(q["query_id"]), ())), "docs_removed": r["docs_removed"],
        "tokens_removed": r["tokens_removed"],
        "nll_before": b, "nll_after": r["nll"], "delta_nll": r["nll"] - b, "correct_before": q["correct"],
        "correct_after": is_correct(q["kind"], r["completion"], q["answer"]) if q["answer"] else None,
        "completion_after": r["completion"], "seed": seed,
    } for q, b, r in zip(queries, before, arm.to_pylist())], schema=schemas.COUNTERFACTUAL)


def run(params: Params) -> Path:
    cfg = params.counterfactual
    if params.model.name_or_path:
        raise ParamsError("counterfactual: retraining needs a model pretrained here; model.name_or_path is set "
                          f"({params.model.name_or_path})")
    runs = draws(params, Path(cfg.arms_dir))
    with dask_client(settings.cluster(params)) as client:
        table = pa.concat_tables([_arms(own, arms, client) for own, arms in runs])
    write_parquet(table, cfg.out, schemas.COUNTERFACTUAL)
    numbers = summary(table)
    write_json(numbers, cfg.metrics)
    for method, by_task in numbers["mean_delta_nll"].items():
        print(f"counterfactual: mean dNLL, {method}: " + ", ".join(f"{t} {v:+.3f}" for t, v in by_task.items()
                                                                    if v is not None))
    return Path(cfg.out)


def _arms(params: Params, arms_dir: Path, client) -> pa.Table:
    """One draw's arms, each retrained unless it is already kept in ``arms_dir``."""
    cfg = params.counterfactual
    top_docs_path = Path(params.analysis.out_dir) / "top_docs.parquet"
    if not top_docs_path.is_file():
        raise WherefromError(f"{top_docs_path}: not found; run the pipeline first (make demo, or dvc repro)")
    top_docs = pq.read_table(top_docs_path)
    queries = pq.read_table(params.queries.out).to_pylist()
    tasks = {q["query_id"]: q["task"] for q in queries}
    sets = {m: removal_sets(top_docs, m, tasks, cfg.docs_per_group, str(top_docs_path)) for m in cfg.methods}
    arms = [Retrain(i, m, tuple(sorted(set().union(*by_group.values()))))
            for i, (m, by_group) in enumerate(sets.items())]
    job = retraining.retrain_job(params, arms_dir, answer_tokens=params.queries.max_new_tokens)
    measured = run_all(client, arms, job, f"counterfactual, seed {params.training_seed}")

    model, tokenizer = load_model(params.model.dir)
    before = measure(model, tokenizer, queries, params.queries.batch_size)
    out = []
    for arm in arms:
        rows = measured.filter(pc.equal(measured["retrain"], arm.name))
        print(f"counterfactual, seed {params.training_seed}: {arm.name}: {len(arm.removed)} documents "
              f"({rows['tokens_removed'][0].as_py():,} tokens) removed")
        out.append(_rows(arm.name, queries, sets[arm.name], rows, before, params.training_seed))
    return pa.concat_tables(out)
