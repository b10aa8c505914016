"""The counterfactual check's two rules: which documents each method removes, and what the retrains show.

Removal sets. Queries form groups: the factual queries, and each reasoning task (the controls are
answered from their prompt and get none). A method's set for a group takes its queries' top-ranked
documents round-robin: every query's rank-1 document, then every query's rank-2, and so on, skipping
documents already taken, until the set holds ``docs_per_group``. Every method therefore removes the
same number of documents per group, chosen by its own ranking alone; random's ranking gives a random
set of that size, which measures what any removal of that size does.

Summary. ΔNLL = NLL after retraining - NLL before, on the original model's own completion: positive
means the removal hurt that answer. Influence is compared with each other method query by query (the
same query, two retrains): the share of queries where influence's removal hurt more, and a one-sided
Wilcoxon signed-rank test of that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as sps

from influence.methods import PAPER
from pipeline.core.errors import WherefromError
from pipeline.core.schemas import WHOLE
from pipeline.world.tasks import REASONING_TASKS

GROUPS = ("factual", *REASONING_TASKS)  # each with its own removal set
KINDS = {"factual": ("factual",), "reasoning": REASONING_TASKS}  # the paired comparisons' query sets


def ranked_documents(top_docs: pa.Table, method: str) -> dict[str, list[int]]:
    """Each query's documents by rank, best first, for ``method``'s whole-completion scores."""
    rows = top_docs.filter(pc.and_(pc.and_(pc.equal(top_docs["method"], method), pc.equal(top_docs["segment"], WHOLE)),
                                   pc.equal(top_docs["end"], "top")))
    rows = rows.sort_by([("query_id", "ascending"), ("rank", "ascending")])
    ranked: dict[str, list[int]] = {}
    for qid, doc in zip(rows["query_id"].to_pylist(), rows["doc_id"].to_pylist()):
        ranked.setdefault(qid, []).append(doc)
    return ranked


def removal_set(ranked: Mapping[str, Sequence[int]], query_ids: Sequence[str], size: int, where: str) -> list[int]:
    """``size`` documents, taken round-robin over the queries' rankings (rank 1 of each, then rank 2, ...)."""
    missing = [q for q in query_ids if q not in ranked]
    if missing:
        raise WherefromError(f"{where}: no ranked documents for query {missing[0]}; rerun the analyze stage")
    chosen: dict[int, None] = {}
    depth = max((len(ranked[q]) for q in query_ids), default=0)
    for rank in range(depth):
        for qid in sorted(query_ids):
            if rank < len(ranked[qid]):
                chosen.setdefault(ranked[qid][rank], None)
                if len(chosen) == size:
                    return list(chosen)
    raise WherefromError(f"{where}: the top {depth} documents of {len(query_ids)} queries give only {len(chosen)} "
                         f"distinct documents, fewer than counterfactual.docs_per_group = {size}")


def removal_sets(top_docs: pa.Table, method: str, tasks: Mapping[str, str], size: int,
                 where: str) -> dict[str, list[int]]:
    """Each group's removal set for ``method``; ``tasks`` maps query id to task."""
    ranked = ranked_documents(top_docs, method)
    if not ranked:
        raise WherefromError(f"{where}: no {method} rankings; counterfactual.methods may name only influence and the "
                             f"methods in baselines.methods")
    sets = {}
    for group in GROUPS:
        queries = [q for q, t in tasks.items() if t == group]
        if queries:
            sets[group] = removal_set(ranked, queries, size, f"{where}: {method}, {group}")
    return sets


def _number(value: float) -> float | None:
    return round(float(value), 5) if value is not None and math.isfinite(value) else None


def _share(correct: list[bool | None]) -> float | None:
    """The share correct among the queries with an answer to check (null: none has one)."""
    checked = [c for c in correct if c is not None]
    return _number(float(np.mean(checked))) if checked else None


def summary(table: pa.Table) -> dict:
    """The headline numbers: mean ΔNLL and accuracy after, per method and task; influence against each other
    method, paired per query, for the factual and the reasoning queries. Over several training draws (``seed``),
    each draw's query is one pair, and ``docs_removed`` is the mean over the draws."""
    rows = table.to_pylist()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    out: dict = {"mean_delta_nll": {}, "accuracy_after": {}, "docs_removed": {}, "accuracy_before": {}}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        out["docs_removed"][method] = _number(np.mean([r["docs_removed"] for r in mine]))
        out["mean_delta_nll"][method] = {t: _number(np.mean([r["delta_nll"] for r in mine if r["task"] == t]))
                                         for t in tasks}
        out["accuracy_after"][method] = {t: _share([r["correct_after"] for r in mine if r["task"] == t]) for t in tasks}
    first = [r for r in rows if r["method"] == methods[0]]
    out["accuracy_before"] = {t: _share([r["correct_before"] for r in first if r["task"] == t]) for t in tasks}
    if PAPER in methods:
        delta = {(r["method"], r["seed"], r["query_id"]): r["delta_nll"] for r in rows}
        for other in (m for m in methods if m != PAPER):
            out[f"{PAPER}_vs_{other}"] = {
                kind: paired(*(np.array([delta[m, r["seed"], r["query_id"]] for r in first if r["task"] in group])
                               for m in (PAPER, other)))
                for kind, group in KINDS.items()}
    return out


def paired(influence: np.ndarray, other: np.ndarray) -> dict:
    """Share of queries whose ΔNLL is larger under influence's removal, and the one-sided Wilcoxon p-value."""
    if len(influence) == 0:
        return {"n": 0, "share_hurt_more": None, "wilcoxon_p": None}
    diff = influence - other
    p = float(sps.wilcoxon(diff, alternative="greater").pvalue) if np.any(diff != 0) else None
    return {"n": int(len(diff)), "share_hurt_more": _number(np.mean(diff > 0)), "wilcoxon_p": _number(p)}
