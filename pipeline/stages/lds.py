"""Stage `lds` (``make validate``): does each method's attribution predict what retraining does?

    wherefrom lds               # writes results/validation/lds.parquet and metrics/validation_lds.json

The tests of every registered method, on retrains of a training run (``influence/retraining/retrains.py``):

- **LDS** (Park et al. 2023): per share in ``validation.fractions``, ``validation.subsets`` retrains, each
  keeping a random such share of the documents (half; and 99%, the literature's 1% drops); per query, the
  Spearman r across retrains between the sum of the method's scores over the kept documents and the
  completion's log-probability on the retrained model (``pipeline/analysis/lds.py``);
- **leave-k-out**: per method and k in ``validation.leave_k``, one retrain without k documents per query
  group, chosen by that method's ranking with the counterfactual stage's rule; per query, the completion's
  NLL after minus before, beside the documents and tokens removed. k per group reaches about k / (the group's
  queries) documents of each query's own;
- **leave-one-out**: ``validation.leave_one_out`` retrains, each without one document: half those of largest
  |score| under exact attribution (influence without it), half at random; per query and method, the Pearson r
  across them between the change in the completion's log-probability (from a retrain that removes nothing) and
  minus the method's score (what removing the document predicts);
- **agreement** with exact attribution, when the run computes it (``exact.methods``: magic): per query, each
  method's Spearman r with its scores and its share of their top 10 (``pipeline/analysis/agreement.py``).

A retrain of the demo's model takes 12 minutes on 2 cores, so the tests run on a run of their own:
``validation.profile`` (``lds``) applied to these params, with every output in ``out_dir/lds_run/``,
built step by step as a seed of the study is (``pipeline/core/steps.py``). An empty profile tests this
run's own model and scores instead, for a GPU or a cluster. Retrains are Dask tasks kept in
``out_dir/retrains/``: an interrupted run redoes none that finished.

Each draw's run is then analysed as the demo is (stage ``analyze``, in its ``analysis/`` folder), so that every
finding is computed from every method's scores, exact attribution's included: ``out_dir/findings/`` holds them
per draw (``findings_by_draw.parquet``) and over the draws (``finding_spread.parquet``), the views
``validation_findings`` and ``validation_finding_spread``.

One training run is one draw. ``validation.seeds`` repeats both tests under each training seed (the run's
initialisation and batch order; the world and the LDS subsets fixed), each draw in ``lds_run/seed=N/`` with
its retrains in ``retrains/seed=N/``, and every expectation the README declared is reported as held in k of
n draws (``pipeline/analysis/validation.py``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from influence.cluster import dask_client
from influence.methods import EXACT, PAPER
from influence.retraining.retrains import Retrain, measure, run_all
from pipeline.analysis import agreement, lds, validation
from pipeline.analysis.counterfactual import GROUPS, removal_set
from pipeline.analysis.score_matrix import in_memory
from pipeline.analysis.spread import spread
from pipeline.analysis.validation import rows
from pipeline.core import schemas
from pipeline.core.atomic import write_parquet
from pipeline.core.config import Params, parse_params
from pipeline.core.corpus_reader import content_hash
from pipeline.core.errors import ParamsError
from pipeline.core.hashing import code_hash
from pipeline.core.model import load_model
from pipeline.core.seeds import relocated
from pipeline.core.steps import run_steps
from pipeline.runs import methods, retraining, settings
from pipeline.stages import run_stage

UNCHANGED = "loo-none"  # leave-one-out's reference: the retrain that removes no document
FINDINGS = "findings"  # out_dir's folder of every finding per draw and over the draws
STEPS = ("corpus", "pretrain", "probe", "factors", "scores", "baselines", "exact")
CODE = ("pipeline/core", "pipeline/world", "pipeline/runs", "influence", "queries",
        *(f"pipeline/stages/{s}.py" for s in STEPS))


def run_params(params: Params) -> Params:
    """The params of the run the tests retrain: ``validation.profile``'s overrides on ``params``, every output in
    ``out_dir/lds_run/``; or ``params`` itself when no profile is named."""
    cfg = params.validation
    if params.model.name_or_path:
        raise ParamsError(f"validation: the tests retrain the model, and model.name_or_path is set "
                          f"({params.model.name_or_path})")
    if not cfg.profile:
        return params
    if cfg.profile != "demo" and cfg.profile not in params.profiles:
        raise ParamsError(f"validation.profile: unknown profile {cfg.profile!r} (known: "
                          f"{', '.join(['demo', *params.profiles])})")
    raw = json.loads(json.dumps(dataclasses.asdict(params)))
    raw["profile"] = cfg.profile
    own = parse_params(raw, f"validation.profile {cfg.profile!r}")
    run = Path(cfg.out_dir) / "lds_run"
    own = relocated(own, run, run / "analysis")
    return dataclasses.replace(own, corpus=dataclasses.replace(own.corpus, out_dir=str(run / "corpus")))


def leave_k_sets(scores: np.ndarray, doc_ids: np.ndarray, query_ids: list[str], tasks: dict[str, str], k: int,
                 where: str) -> tuple[int, ...]:
    """The documents one leave-k-out arm removes: k per query group, by ``scores``' ranking (round-robin)."""
    depth = min(k, len(doc_ids))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    ranked = {q: doc_ids[top[i]].tolist() for i, q in enumerate(query_ids)}
    removed: set[int] = set()
    for group in GROUPS:
        members = [q for q in query_ids if tasks[q] == group]
        if members:
            removed |= set(removal_set(ranked, members, k, f"{where}, {group}"))
    return tuple(sorted(removed))


def leave_one_out_documents(scores: dict[str, np.ndarray], doc_ids: np.ndarray, n: int, seed: int) -> list[int]:
    """The documents leave-one-out removes, one per retrain: the first half by their largest |score| over queries
    under exact attribution (influence where the run has none), so that some removals matter; the rest at random,
    so that the test is not only of documents one method picked."""
    by = scores.get(EXACT, scores.get(PAPER))
    n = min(n, len(doc_ids))
    top = [] if by is None else np.argsort(-np.abs(by).max(axis=0), kind="stable")[:(n + 1) // 2].tolist()
    rest = np.setdiff1d(np.arange(len(doc_ids)), top)
    chosen = top + np.random.default_rng(seed).choice(rest, n - len(top), replace=False).tolist()
    return [int(doc_ids[c]) for c in chosen]


def leave_one_out(matrix: np.ndarray, columns: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Per query, the Pearson r across the removed documents between ``change`` ([queries, documents]: log-prob
    after minus before) and minus the method's scores of those documents; NaN where either is constant."""
    predicted = -matrix[:, columns]
    with np.errstate(all="ignore"):
        p, c = predicted - predicted.mean(axis=1, keepdims=True), change - change.mean(axis=1, keepdims=True)
        return (p * c).sum(axis=1) / np.sqrt((p * p).sum(axis=1) * (c * c).sum(axis=1))


def draws(params: Params) -> list[tuple[Params, Path]]:
    """The runs the tests retrain, each with the folder of its retrains: the one run (``validation.seeds`` null), or
    one per training seed in ``lds_run/seed=N/``, the world shared in ``lds_run/corpus``."""
    cfg, own = params.validation, run_params(params)
    if cfg.seeds is None:
        return [(own, Path(cfg.out_dir) / "retrains")]
    if not cfg.profile:
        raise ParamsError("validation.seeds: each draw retrains validation.profile's run, and the profile is empty "
                          "(this run's own model: one draw)")
    run = Path(cfg.out_dir) / "lds_run"
    out = []
    for seed in cfg.seeds:
        seeded = dataclasses.replace(own, pretrain=dataclasses.replace(own.pretrain, seed=seed))
        out.append((relocated(seeded, run / f"seed={seed}", run / f"seed={seed}" / "analysis"),
                    Path(cfg.out_dir) / "retrains" / f"seed={seed}"))
    return out


def _build(params: Params, runs: list[Params]) -> None:
    """Each draw's run, step by step (its world too is its own; over several draws, built once and shared)."""
    cfg, start = params.validation, time.perf_counter()
    run_dir, code = Path(cfg.out_dir) / "lds_run", code_hash(CODE)
    if cfg.seeds is None:
        ran = run_steps(runs[0], STEPS, run_dir, code, "lds run", run_stage)
    else:
        ran = run_steps(runs[0], STEPS[:1], run_dir, code, "lds run", run_stage)
        for own in runs:
            ran += run_steps(own, STEPS[1:], run_dir / f"seed={own.training_seed}",
                             content_hash(own.corpus.out_dir) + code, f"lds run, seed {own.training_seed}", run_stage)
    print(f"lds run: {', '.join(ran) or 'nothing left'} run in {time.perf_counter() - start:.0f}s -> {run_dir}/")


def run(params: Params) -> Path:
    cfg = params.validation
    start = time.perf_counter()
    runs = draws(params)
    if cfg.profile:
        _build(params, [own for own, _ in runs])
    found, n_retrains = [], 0
    with dask_client(settings.cluster(runs[0][0])) as client:
        for own, retrains_dir in runs:
            label = "lds retrains" if cfg.seeds is None else f"lds retrains, seed {own.training_seed}"
            draw, n = _tests(own, client, retrains_dir, label)
            found, n_retrains = found + draw, n_retrains + n
    out = validation.write(found, cfg.out_dir, cfg.metrics_dir, "lds", params.seed)
    _findings([own for own, _ in runs], Path(cfg.out_dir) / FINDINGS)
    print(f"lds: {n_retrains} retrains, {len(runs)} training draw(s), in {time.perf_counter() - start:.0f}s -> {out}")
    return out


def _findings(runs: list[Params], out: Path) -> None:
    """Each draw's run analysed (every time: cheap beside its retrains, and the analysis code may have changed),
    then every finding of every method per draw and over the draws, as the seed study reports the demo's."""
    per_draw = []
    for own in runs:
        run_stage("analyze", own)
        table = pq.read_table(Path(own.analysis.out_dir) / "findings.parquet")
        per_draw.append(table.add_column(0, "seed", pa.array([own.training_seed] * table.num_rows, pa.int64())))
    by_draw = pa.concat_tables(per_draw).cast(schemas.FINDINGS_BY_SEED)
    write_parquet(by_draw, out / "findings_by_draw.parquet", schemas.FINDINGS_BY_SEED)
    write_parquet(spread(by_draw), out / "finding_spread.parquet", schemas.FINDING_SPREAD)


def _tests(own: Params, client, retrains_dir: Path, label: str) -> tuple[list[dict], int]:
    """LDS, leave-k-out, leave-one-out and agreement on one draw's run: its rows of ``schemas.VALIDATION``, and how
    many retrains they took."""
    cfg = own.validation
    queries = pq.read_table(own.queries.out, columns=["query_id", "task"]).to_pylist()
    query_ids, tasks = [q["query_id"] for q in queries], {q["query_id"]: q["task"] for q in queries}
    doc_ids, scores = in_memory({m: methods.scores_dir(own, m) for m in methods.selected(own)}, query_ids)
    job = retraining.retrain_job(own, retrains_dir)

    settings = lds_settings(len(doc_ids), cfg.subsets, cfg.fractions, own.seed)
    retrains = [Retrain(which * cfg.subsets + i, f"{prefix}{i:05d}", tuple(doc_ids[~keep].tolist()))
                for which, (_, prefix, subsets) in enumerate(settings) for i, keep in enumerate(subsets)]
    arms = {(name, k): Retrain(len(retrains) + i, f"leave-{k}-{name}",
                               leave_k_sets(scores[name], doc_ids, query_ids, tasks, k, f"leave-{k}-out, {name}"))
            for i, (name, k) in enumerate((n, k) for k in cfg.leave_k for n in scores)}
    singles = [Retrain(len(retrains) + len(arms) + i, f"loo-{d}", (d,))
               for i, d in enumerate(leave_one_out_documents(scores, doc_ids, cfg.leave_one_out, own.seed))]
    # the reference each removal is measured from: the retrain that removes nothing (the run itself, on a worker)
    unchanged = [Retrain(len(retrains) + len(arms) + len(singles), UNCHANGED, ())] if singles else []
    measured = run_all(client, [*retrains, *arms.values(), *singles, *unchanged], job, label)
    by_retrain = {name: measured.filter(pc.equal(measured["retrain"], name)) for name in
                  dict.fromkeys(measured["retrain"].to_pylist())}

    model, tokenizer = load_model(own.model.dir)
    before = np.asarray(measure(model, tokenizer, pq.read_table(own.queries.out).to_pylist(), own.queries.batch_size))
    found, seed = [], own.training_seed
    for setting, prefix, subsets in settings:
        log_p = -np.stack([by_retrain[f"{prefix}{i:05d}"]["nll"].to_numpy() for i in range(len(subsets))])
        for name, matrix in scores.items():  # log_p: [subsets, queries]
            found += rows(name, "lds", setting, query_ids, tasks,
                          lds.per_query(lds.predicted(matrix, subsets), log_p), seed)
    for (name, k), arm in arms.items():
        table = by_retrain[arm.name]
        found += rows(name, "leave_k_out", f"k={k}", query_ids, tasks, table["nll"].to_numpy() - before, seed,
                      len(arm.removed), int(table["tokens_removed"][0].as_py()))
    if singles:
        columns = np.searchsorted(doc_ids, [r.removed[0] for r in singles])  # in_memory's doc ids ascend
        reference = by_retrain[UNCHANGED]["nll"].to_numpy()
        drift = np.abs(reference - before).max()
        print(f"leave-one-out: the retrain that removes nothing is {drift:.3g} nats from the run at most (0: a "
              "retrain is the run until the removed document's first batch)")
        change = reference[:, None] - np.stack([by_retrain[r.name]["nll"].to_numpy() for r in singles], axis=1)
        for name, matrix in scores.items():
            found += rows(name, "leave_one_out", f"pearson over {len(singles)} documents", query_ids, tasks,
                          leave_one_out(matrix, columns, change), seed, 1)
    if EXACT in scores:
        for name, matrix in scores.items():
            if name != EXACT:
                found += rows(name, "agreement", "spearman", query_ids, tasks,
                              agreement.spearman(matrix, scores[EXACT]), seed)
                found += rows(name, "agreement", "top-10 overlap", query_ids, tasks,
                              agreement.top_overlap(matrix, scores[EXACT], 10), seed)
    return found, len(retrains) + len(arms) + len(singles) + len(unchanged)


def lds_settings(n_docs: int, n_subsets: int, fractions: tuple[float, ...], seed: int) -> list[tuple]:
    """Per share kept, ``(setting, retrain name prefix, [subsets, docs] masks)``. Random halves keep the prefix they
    had before there were several settings, so that their finished retrains are not redone."""
    return [(f"M={n_subsets}, fraction={f}", "lds-" if f == 0.5 else f"lds-{f}-",
             lds.random_subsets(n_docs, n_subsets, f, seed)) for f in fractions]
