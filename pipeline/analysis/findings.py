"""The paper's findings, each measured on our scores (and the baselines'), with a test of whether it holds.

The published numbers are from Ruis et al. (2024) for their 7B and 35B models. Our model, corpus and
queries are far smaller, so a number is not expected to match; each finding's ``test`` states the
qualitative claim that has to hold for it to count as reproduced, and the table reports the result
whichever way it goes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as sps

from pipeline.core import schemas
from pipeline.core.schemas import ANSWER_SEGMENTS, WHOLE
from queries.tasks import REASONING_TASKS

Tables = dict[str, pa.Table]


@dataclass(frozen=True)
class Finding:
    finding: str
    claim: str
    statistic: str
    paper: str
    paper_7b: float | None
    paper_35b: float | None
    measure: Callable[[Tables], float]
    test: Callable[[Tables], tuple[bool, str]]
    segment: str = WHOLE  # the paper's findings are on the whole completion; the others decompose it


def _pairs(t: Tables, group: str) -> np.ndarray:
    c = t["correlations"]
    r = c.filter(pc.equal(c.column("group"), group)).column("pearson").to_numpy(zero_copy_only=False)
    return r[np.isfinite(r)]


def _same_task_reasoning(t: Tables) -> np.ndarray:
    return np.concatenate([_pairs(t, f"within {task}") for task in REASONING_TASKS])


def _greater(a: np.ndarray, b: np.ndarray, label: str) -> tuple[bool, str]:
    if len(a) < 2 or len(b) < 2:
        return False, f"{label}: too few pairs to test"
    p = float(sps.mannwhitneyu(a, b, alternative="greater").pvalue)
    return bool(p < 0.05), f"{label} at p < 0.05 (one-sided Mann-Whitney U: p = {p:.2g})"


def _queries(t: Tables, tasks: tuple[str, ...], correct_only: bool = False) -> dict[str, np.ndarray]:
    qs = t["query_stats"].to_pydict()
    keep = np.isin(np.asarray(qs["task"], dtype=object), tasks)
    if correct_only:
        keep &= np.asarray(qs["correct"], dtype=bool)
    return {c: np.asarray(v, dtype=object)[keep] for c, v in qs.items()}


def _answer_share(t: Tables, tasks: tuple[str, ...]) -> float:
    found = _queries(t, tasks, correct_only=True)["answer_in_context_topk"].astype(bool)
    return float(found.mean()) if len(found) else math.nan


def _answer_test(t: Tables) -> tuple[bool, str]:
    f = _queries(t, ("factual",), True)["answer_in_context_topk"].astype(bool)
    r = _queries(t, REASONING_TASKS, True)["answer_in_context_topk"].astype(bool)
    if not len(f) or not len(r):
        return False, "needs correctly answered factual and reasoning queries"
    table = [[f.sum(), len(f) - f.sum()], [r.sum(), len(r) - r.sum()]]
    p = float(sps.fisher_exact(table, alternative="greater").pvalue)
    return bool(f.mean() > r.mean()), f"factual share > reasoning share (one-sided Fisher exact p = {p:.2g})"


def _enrichment(t: Tables, kind: str, sources: tuple[str, ...]) -> list[float]:
    e = t["enrichment"].to_pydict()
    k = int(t["query_stats"].column("top_k")[0].as_py())
    return [v for v, end, kk, level, group, s in zip(e["enrichment"], e["end"], e["k"], e["level"], e["group"], e["source"])
            if end == "top" and kk == k and level == "kind" and group == kind and s in sources]


def _total_positive(t: Tables, tasks: tuple[str, ...]) -> np.ndarray:
    return _queries(t, tasks)["total_positive"].astype(np.float64)


def _avg(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if len(values) else math.nan


def _cv(x: np.ndarray) -> float:
    return float(x.std() / x.mean()) if len(x) and x.mean() else math.nan


REASONING_SOURCES, FACTUAL_SOURCES = ("stackexchange", "code"), ("wiki", "math_and_trivia")

FINDINGS = (
    Finding("factual_pairs_r", "Factual queries are influenced by different documents",
            "mean Pearson r over pairs of factual queries", "0.06 (7B), 0.03 (35B)", 0.06, 0.03,
            lambda t: _avg(_pairs(t, "within factual")),
            lambda t: (bool(_avg(_pairs(t, "within factual")) < 0.2), "mean r < 0.2")),
    Finding("same_task_reasoning_r", "Queries of one reasoning task are influenced by the same documents",
            "mean Pearson r over pairs of the same reasoning task", "up to 0.96", 0.96, None,
            lambda t: _avg(_same_task_reasoning(t)),
            lambda t: _greater(_same_task_reasoning(t), _pairs(t, "within factual"), "same-task reasoning r > factual r")),
    Finding("slope_r", "Slope queries that differ only in their numbers correlate strongly",
            "mean Pearson r over pairs of slope queries", "0.89", 0.89, None,
            lambda t: _avg(_pairs(t, "within slope")),
            lambda t: _greater(_pairs(t, "within slope"), _pairs(t, "within factual"), "slope r > factual r")),
    Finding("linear_r", "Linear-equation queries correlate, more weakly",
            "mean Pearson r over pairs of linear-equation queries", "0.16 (mean)", 0.16, None,
            lambda t: _avg(_pairs(t, "within linear")),
            lambda t: _greater(_pairs(t, "within linear"), _pairs(t, "within factual"), "linear r > factual r")),
    Finding("answer_in_topk_factual", "The answer to a factual question is often in its top documents",
            "share of correctly answered factual queries with a top-k document stating the answer to the question", "55% (7B), 30% (35B)",
            0.55, 0.30, lambda t: _answer_share(t, ("factual",)), _answer_test),
    Finding("answer_in_topk_reasoning", "The answer to a reasoning question is almost never in its top documents",
            "share of correctly answered reasoning queries with a top-k document stating the answer to the question", "7% (7B), 0% (35B)",
            0.07, 0.0, lambda t: _answer_share(t, REASONING_TASKS), _answer_test),
    Finding("reasoning_sources", "StackExchange and code are over-represented among reasoning queries' top documents",
            "mean top-k enrichment of stackexchange and code, reasoning queries", "over-represented (> 1)", None, None,
            lambda t: _avg(_enrichment(t, "reasoning", REASONING_SOURCES)),
            lambda t: (all(v > 1 for v in _enrichment(t, "reasoning", REASONING_SOURCES)), "both enrichments > 1")),
    Finding("factual_sources", "Wiki and trivia are over-represented among factual queries' top documents",
            "mean top-k enrichment of wiki and math_and_trivia, factual queries", "over-represented (> 1)", None, None,
            lambda t: _avg(_enrichment(t, "factual", FACTUAL_SOURCES)),
            lambda t: (all(v > 1 for v in _enrichment(t, "factual", FACTUAL_SOURCES)), "both enrichments > 1")),
    Finding("total_positive_ratio", "Reasoning answers get less total positive influence per nat",
            "mean total positive influence per nat, reasoning / factual", "smaller for reasoning (< 1)", None, None,
            lambda t: _avg(_total_positive(t, REASONING_TASKS)) / _avg(_total_positive(t, ("factual",))),
            lambda t: _smaller_mean(_total_positive(t, REASONING_TASKS), _total_positive(t, ("factual",)))),
    Finding("volatility_ratio", "... and it varies less across reasoning queries",
            "coefficient of variation of total positive influence per nat, reasoning / factual",
            "less volatile for reasoning (< 1)", None, None,
            lambda t: _cv(_total_positive(t, REASONING_TASKS)) / _cv(_total_positive(t, ("factual",))),
            lambda t: (bool(_cv(_total_positive(t, REASONING_TASKS)) < _cv(_total_positive(t, ("factual",)))),
                       "ratio < 1")),
)


def _same_task_vs_unrelated(t: Tables) -> tuple[bool, str]:
    """Same-task reasoning r against factual pairs; a segment that too few factual completions have (a
    factual answer rarely computes a number) is compared with pairs across reasoning tasks instead."""
    if len(_pairs(t, "within factual")) >= 2:
        return _greater(_same_task_reasoning(t), _pairs(t, "within factual"), "same-task reasoning r > factual r")
    return _greater(_same_task_reasoning(t), _pairs(t, "across reasoning tasks"),
                    "same-task reasoning r > r across reasoning tasks (too few factual pairs)")


SEGMENT_FINDINGS = tuple(
    Finding(f"same_task_reasoning_r_{segment}",
            f"Decomposition: the {segment} tokens of one reasoning task's completions are influenced by the same documents",
            f"mean Pearson r over pairs of the same reasoning task, measured on the NLL of the {segment} tokens alone",
            "not in the paper (a decomposition of same_task_reasoning_r)", None, None,
            lambda t: _avg(_same_task_reasoning(t)), _same_task_vs_unrelated, segment)
    for segment in ANSWER_SEGMENTS)


def _smaller_mean(a: np.ndarray, b: np.ndarray) -> tuple[bool, str]:
    p = float(sps.ttest_ind(a, b, equal_var=False, alternative="less").pvalue) if len(a) > 1 and len(b) > 1 else math.nan
    return bool(a.mean() < b.mean()), f"ratio < 1 (one-sided Welch t-test p = {p:.2g})"


def _safe(fn: Callable[[Tables], float], tables: Tables | None) -> float | None:
    if tables is None:
        return None
    with np.errstate(all="ignore"):
        value = fn(tables)
    return value if value is not None and math.isfinite(value) else None


def compute(results: dict[str, dict[str, Tables]]) -> pa.Table:
    """One row per finding: the paper's number, ours (influence) and each baseline's, and the test on ours.
    ``results[method][segment]`` are that method's tables for one segment; a segment not scored has no row."""
    rows = []
    for f in FINDINGS + SEGMENT_FINDINGS:
        ours = results["influence"].get(f.segment)
        if ours is None:
            continue
        with np.errstate(all="ignore"):
            holds, test = f.test(ours)
        rows.append(dict(finding=f.finding, segment=f.segment, claim=f.claim, statistic=f.statistic, paper=f.paper,
                         paper_7b=f.paper_7b, paper_35b=f.paper_35b, test=test, reproduces=holds,
                         **{m: _safe(f.measure, results.get(m, {}).get(f.segment)) for m in ("influence", "bm25", "random")}))
    return pa.Table.from_pylist(rows, schema=schemas.FINDINGS)
