"""The paper's findings, each measured on every method's scores, with a verdict on each.

The published numbers are from Ruis et al. (2024) for their 7B and 35B models. Our model, corpus and
queries are far smaller, so a number is not expected to match; each finding states the qualitative
claim that has to hold, and one test of it. One rule decides every test: the finding **holds** when its
test gives p < 0.05, and **does not hold** otherwise. A finding whose test cannot be run on this
corpus and these queries (a source the claim names is absent, or fewer queries of a kind than a test
can decide on) is **not testable**, with the reason, and never counts as a pass.

Query pairs share queries, so the pair tests' p-values treat dependent pairs as independent: they are
optimistic, and the seed study (``make seeds``) is the stronger evidence.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as sps

from influence.methods import PAPER
from pipeline.core import schemas
from pipeline.core.schemas import ANSWER_SEGMENTS, FAILS, HOLDS, UNTESTABLE, WHOLE
from pipeline.world.tasks import REASONING_TASKS

Tables = dict[str, pa.Table]
ALPHA = 0.05
# The fewest queries of a kind a test decides on: at 4, a one-sided Wilcoxon signed-rank test cannot
# reach p < 0.05 (its smallest p is 1/2^4 = 0.0625); at 5 every test here can. Pair tests need the
# pairs that 5 queries give.
MIN_QUERIES = 5
MIN_PAIRS = MIN_QUERIES * (MIN_QUERIES - 1) // 2
PERMUTATIONS = 10_000  # the volatility test's permutations (seeded): p resolved to 1e-4


class NotTestable(Exception):
    """The test cannot be run on these tables; the message says why."""


@dataclass(frozen=True)
class Finding:
    finding: str
    claim: str
    statistic: str
    paper: str
    paper_7b: float | None
    paper_35b: float | None
    measure: Callable[[Tables], float]
    test: str  # the test the verdict states, decided at p < ALPHA
    p_value: Callable[[Tables], float]  # raises NotTestable
    segment: str = WHOLE  # the paper's findings are on the whole completion; the others decompose it
    counted: bool = True  # False: its test is another finding's, so the tally counts that test once


def _pairs(t: Tables, group: str) -> np.ndarray:
    c = t["correlations"]
    r = c.filter(pc.equal(c.column("group"), group)).column("pearson").to_numpy(zero_copy_only=False)
    return r[np.isfinite(r)]


def _same_task_reasoning(t: Tables) -> np.ndarray:
    return np.concatenate([_pairs(t, f"within {task}") for task in REASONING_TASKS])


def _enough_pairs(r: np.ndarray, label: str) -> np.ndarray:
    if len(r) < MIN_PAIRS:
        raise NotTestable(f"{len(r)} pair{'' if len(r) == 1 else 's'} of {label} queries; the test needs "
                          f"{MIN_PAIRS} ({MIN_QUERIES} queries)")
    return r


def _greater(a: np.ndarray, b: np.ndarray, a_label: str, b_label: str) -> float:
    a, b = _enough_pairs(a, a_label), _enough_pairs(b, b_label)
    return float(sps.mannwhitneyu(a, b, alternative="greater").pvalue)


def _queries(t: Tables, tasks: tuple[str, ...], correct_only: bool = False) -> dict[str, np.ndarray]:
    qs = t["query_stats"].to_pydict()
    keep = np.isin(np.asarray(qs["task"], dtype=object), tasks)
    if correct_only:
        keep &= np.asarray(qs["correct"], dtype=bool)
    return {c: np.asarray(v, dtype=object)[keep] for c, v in qs.items()}


def _enough(values: np.ndarray, label: str) -> np.ndarray:
    if len(values) < MIN_QUERIES:
        noun = "query" if len(values) == 1 else "queries"
        raise NotTestable(f"{len(values)} {label} {noun}; the test needs {MIN_QUERIES}")
    return values


def _answer_found(t: Tables, tasks: tuple[str, ...]) -> np.ndarray:
    return _queries(t, tasks, correct_only=True)["answer_in_context_topk"].astype(bool)


def _answer_share(t: Tables, tasks: tuple[str, ...]) -> float:
    found = _answer_found(t, tasks)
    return float(found.mean()) if len(found) else math.nan


def _answer_p(t: Tables) -> float:
    f = _enough(_answer_found(t, ("factual",)), "correctly answered factual")
    r = _enough(_answer_found(t, REASONING_TASKS), "correctly answered reasoning")
    table = [[f.sum(), len(f) - f.sum()], [r.sum(), len(r) - r.sum()]]
    return float(sps.fisher_exact(table, alternative="greater").pvalue)


def _corpus_shares(t: Tables) -> dict[str, float]:
    e = t["enrichment"]
    return dict(zip(e.column("source").to_pylist(), e.column("corpus_share").to_pylist()))


def _enrichment(t: Tables, kind: str, sources: tuple[str, ...]) -> list[float]:
    e = t["enrichment"].to_pydict()
    k = int(t["query_stats"].column("top_k")[0].as_py())
    rows = zip(e["enrichment"], e["end"], e["k"], e["level"], e["group"], e["source"])
    return [v for v, end, kk, level, group, s in rows
            if end == "top" and kk == k and level == "kind" and group == kind and s in sources]


def _sources_p(t: Tables, kind: str, sources: tuple[str, ...]) -> float:
    """Each named source over-represented in the kind's queries' top-k: per query, the source's share of the
    top k over its corpus share, tested above 1 by a one-sided Wilcoxon signed-rank test. The claim names
    every source, so each must pass (the largest p decides)."""
    shares = _corpus_shares(t)
    absent = [s for s in sources if not shares.get(s)]
    if absent:
        raise NotTestable(f"no {' or '.join(repr(s) for s in absent)} documents in the corpus (map the corpus's "
                          "source names with analysis.source_map)")
    qs = t["query_stats"].to_pydict()
    qids = _enough(np.asarray([q for q, k in zip(qs["query_id"], qs["kind"]) if k == kind], dtype=object), kind)
    k = int(qs["top_k"][0])
    top = t["top_docs"].filter((pc.field("end") == "top") & (pc.field("rank") <= k))
    p = 0.0
    for source in sources:
        counts = dict.fromkeys(qids, 0)
        for qid, s in zip(top.column("query_id").to_pylist(), top.column("source").to_pylist()):
            if s == source and qid in counts:
                counts[qid] += 1
        excess = np.asarray(list(counts.values()), dtype=np.float64) / k / shares[source] - 1
        p = max(p, 1.0 if not np.any(excess) else float(sps.wilcoxon(excess, alternative="greater").pvalue))
    return p


def _total_positive(t: Tables, tasks: tuple[str, ...]) -> np.ndarray:
    return _queries(t, tasks)["total_positive"].astype(np.float64)


def _avg(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if len(values) else math.nan


def _cv(x: np.ndarray) -> float:
    return float(x.std() / x.mean()) if len(x) and x.mean() else math.nan


def _ratio(a: float, b: float) -> float:
    """a / b, NaN where b is 0 (a method with no positive influence on a group: no ratio to report)."""
    return a / b if b else math.nan


def _smaller_mean_p(t: Tables) -> float:
    r = _enough(_total_positive(t, REASONING_TASKS), "reasoning")
    f = _enough(_total_positive(t, ("factual",)), "factual")
    return float(sps.ttest_ind(r, f, equal_var=False, alternative="less").pvalue)


def _volatility_p(t: Tables) -> float:
    """Permutation test of CV(reasoning) / CV(factual) < 1: the share of random relabellings of the pooled
    queries whose ratio is as small as the observed one (seeded, so the same tables give the same p)."""
    r = _enough(_total_positive(t, REASONING_TASKS), "reasoning")
    f = _enough(_total_positive(t, ("factual",)), "factual")
    observed = _ratio(_cv(r), _cv(f))
    if not math.isfinite(observed):
        raise NotTestable("total positive influence averages 0 in a group; its coefficient of variation is undefined")
    pooled = np.concatenate([r, f])
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(PERMUTATIONS):
        perm = rng.permutation(pooled)
        with np.errstate(all="ignore"):
            ratio = _cv(perm[:len(r)]) / _cv(perm[len(r):])
        hits += bool(ratio <= observed)
    return (hits + 1) / (PERMUTATIONS + 1)


def _factual_low_p(t: Tables) -> float:
    r = _enough_pairs(_pairs(t, "within factual"), "factual")
    return float(sps.ttest_1samp(r, 0.2, alternative="less").pvalue)


REASONING_SOURCES, FACTUAL_SOURCES = ("stackexchange", "code"), ("wiki", "math_and_trivia")
ANSWER_TEST = "factual share > reasoning share (one-sided Fisher exact test)"

FINDINGS = (
    Finding("factual_pairs_r", "Factual queries are influenced by different documents",
            "mean Pearson r over pairs of factual queries", "0.06 (7B), 0.03 (35B)", 0.06, 0.03,
            lambda t: _avg(_pairs(t, "within factual")),
            "mean r < 0.2 (one-sided one-sample t-test over factual pairs)", _factual_low_p),
    Finding("same_task_reasoning_r", "Queries of one reasoning task are influenced by the same documents",
            "mean Pearson r over pairs of the same reasoning task", "up to 0.96", 0.96, None,
            lambda t: _avg(_same_task_reasoning(t)),
            "same-task reasoning r > factual r (one-sided Mann-Whitney U)",
            lambda t: _greater(_same_task_reasoning(t), _pairs(t, "within factual"), "same-task reasoning", "factual")),
    Finding("slope_r", "Slope queries that differ only in their numbers correlate strongly",
            "mean Pearson r over pairs of slope queries", "0.89", 0.89, None,
            lambda t: _avg(_pairs(t, "within slope")), "slope r > factual r (one-sided Mann-Whitney U)",
            lambda t: _greater(_pairs(t, "within slope"), _pairs(t, "within factual"), "slope", "factual")),
    Finding("linear_r", "Linear-equation queries correlate, more weakly",
            "mean Pearson r over pairs of linear-equation queries", "0.16 (mean)", 0.16, None,
            lambda t: _avg(_pairs(t, "within linear")), "linear r > factual r (one-sided Mann-Whitney U)",
            lambda t: _greater(_pairs(t, "within linear"), _pairs(t, "within factual"), "linear", "factual")),
    Finding("answer_in_topk_factual", "The answer to a factual question is often in its top documents",
            "share of correctly answered factual queries with a top-k document stating the answer to the question",
            "55% (7B), 30% (35B)", 0.55, 0.30, lambda t: _answer_share(t, ("factual",)), ANSWER_TEST, _answer_p),
    Finding("answer_in_topk_reasoning", "The answer to a reasoning question is almost never in its top documents",
            "share of correctly answered reasoning queries with a top-k document stating the answer to the question",
            "7% (7B), 0% (35B)", 0.07, 0.0, lambda t: _answer_share(t, REASONING_TASKS), ANSWER_TEST, _answer_p,
            counted=False),  # one Fisher test decides both answer claims: it counts once
    Finding("reasoning_sources", "StackExchange and code are over-represented among reasoning queries' top documents",
            "mean top-k enrichment of stackexchange and code, reasoning queries", "over-represented (> 1)", None, None,
            lambda t: _avg(_enrichment(t, "reasoning", REASONING_SOURCES)),
            "each enrichment > 1 (one-sided Wilcoxon signed-rank over reasoning queries; the larger p)",
            lambda t: _sources_p(t, "reasoning", REASONING_SOURCES)),
    Finding("factual_sources", "Wiki and trivia are over-represented among factual queries' top documents",
            "mean top-k enrichment of wiki and math_and_trivia, factual queries", "over-represented (> 1)", None, None,
            lambda t: _avg(_enrichment(t, "factual", FACTUAL_SOURCES)),
            "each enrichment > 1 (one-sided Wilcoxon signed-rank over factual queries; the larger p)",
            lambda t: _sources_p(t, "factual", FACTUAL_SOURCES)),
    Finding("total_positive_ratio", "Reasoning answers get less total positive influence per nat",
            "mean total positive influence per nat, reasoning / factual", "smaller for reasoning (< 1)", None, None,
            lambda t: _ratio(_avg(_total_positive(t, REASONING_TASKS)), _avg(_total_positive(t, ("factual",)))),
            "ratio < 1 (one-sided Welch t-test)", _smaller_mean_p),
    Finding("volatility_ratio", "... and it varies less across reasoning queries",
            "coefficient of variation of total positive influence per nat, reasoning / factual",
            "less volatile for reasoning (< 1)", None, None,
            lambda t: _ratio(_cv(_total_positive(t, REASONING_TASKS)), _cv(_total_positive(t, ("factual",)))),
            f"ratio < 1 (one-sided permutation test, {PERMUTATIONS:,} relabellings)", _volatility_p),
)


def _same_task_vs_unrelated_p(t: Tables) -> float:
    """Same-task reasoning r against factual pairs; a segment that too few factual completions have (a
    factual answer rarely computes a number) is compared with pairs across reasoning tasks instead."""
    if len(_pairs(t, "within factual")) >= MIN_PAIRS:
        return _greater(_same_task_reasoning(t), _pairs(t, "within factual"), "same-task reasoning", "factual")
    return _greater(_same_task_reasoning(t), _pairs(t, "across reasoning tasks"), "same-task reasoning",
                    "different-task reasoning")


SEGMENT_FINDINGS = tuple(
    Finding(f"same_task_reasoning_r_{segment}",
            f"Decomposition: the {segment} tokens of one reasoning task's completions are influenced by the same "
            "documents",
            f"mean Pearson r over pairs of the same reasoning task, measured on the NLL of the {segment} tokens alone",
            "not in the paper (a decomposition of same_task_reasoning_r)", None, None,
            lambda t: _avg(_same_task_reasoning(t)),
            "same-task reasoning r > factual r, or > r across reasoning tasks where fewer than "
            f"{MIN_PAIRS} factual pairs have the segment (one-sided Mann-Whitney U)",
            _same_task_vs_unrelated_p, segment)
    for segment in ANSWER_SEGMENTS)


def _safe(fn: Callable[[Tables], float], tables: Tables) -> float | None:
    with np.errstate(all="ignore"):
        value = fn(tables)
    return value if value is not None and math.isfinite(value) else None


def verdict(f: Finding, tables: Tables) -> tuple[str, float | None, str | None]:
    """(verdict, p-value, reason it is not testable) of one finding on one method's tables."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy on near-constant samples; the p-value stands
            p = f.p_value(tables)
    except NotTestable as why:
        return UNTESTABLE, None, str(why)
    if not math.isfinite(p):
        return UNTESTABLE, None, "the test's statistic is undefined on these scores (constant values)"
    return (HOLDS if p < ALPHA else FAILS), p, None


def compute(results: dict[str, dict[str, Tables]]) -> pa.Table:
    """One row per (finding, segment, method): the paper's number, the method's, and the verdict on it.
    ``results[method][segment]`` are that method's tables for one segment; a segment not scored has no row."""
    rows = []
    for f in FINDINGS + SEGMENT_FINDINGS:
        for method, per_segment in results.items():
            tables = per_segment.get(f.segment)
            if tables is None:
                continue
            result, p, reason = verdict(f, tables)
            rows.append(dict(finding=f.finding, segment=f.segment, claim=f.claim, statistic=f.statistic, paper=f.paper,
                             paper_7b=f.paper_7b, paper_35b=f.paper_35b, method=method, value=_safe(f.measure, tables),
                             verdict=result, test=f.test, p_value=p, reason=reason))
    return pa.Table.from_pylist(rows, schema=schemas.FINDINGS)


SHARED_TEST = frozenset(f.finding for f in FINDINGS if not f.counted)


def count(table: pa.Table, method: str = PAPER) -> tuple[int, int, int]:
    """The paper's findings (whole completion) for ``method``: (holding, testable, all), each test once (the two
    answer-in-top-k claims share one)."""
    rows = [r for r in table.to_pylist() if r["segment"] == WHOLE and r["method"] == method
            and r["finding"] not in SHARED_TEST]
    testable = [r for r in rows if r["verdict"] != UNTESTABLE]
    return sum(r["verdict"] == HOLDS for r in testable), len(testable), len(rows)


def describe(holding: int, testable: int, total: int) -> str:
    """"6 of 8 testable findings reproduce (2 not testable)"."""
    untested = total - testable
    return f"{holding} of {testable} testable findings reproduce" + (f" ({untested} not testable)" if untested else "")
