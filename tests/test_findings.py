"""The findings' verdicts on constructed tables: holds, does not hold, and not testable (never a pass)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.analysis import findings, spread
from pipeline.analysis.tables import Corpus
from pipeline.core import schemas
from pipeline.core.atomic import write_parquet
from pipeline.core.errors import ParamsError

PAPER_SOURCES = {"wiki": 0.2, "math_and_trivia": 0.2, "stackexchange": 0.2, "code": 0.2, "webdata": 0.2}
TASKS = ("arithmetic", "slope", "linear")
K = 10


def _tables(n_factual: int = 6, n_per_task: int = 6, shares: dict[str, float] = PAPER_SOURCES,
            same_task_r: float = 0.8, factual_r: float = 0.05, favoured: dict[str, tuple] | None = None) -> dict:
    """A run's tables: pairs correlating at ``same_task_r`` within a reasoning task and ``factual_r`` between
    factual queries (plus noise), and each kind's top 6 of 10 from the two sources ``favoured`` names (3 each)."""
    rng = np.random.default_rng(0)
    favoured = favoured or {"reasoning": ("code", "stackexchange"), "factual": ("wiki", "math_and_trivia")}
    queries = [(f"factual-{i}", "factual", "factual") for i in range(n_factual)]
    queries += [(f"{t}-{i}", t, "reasoning") for t in TASKS for i in range(n_per_task)]
    pairs = []
    for a in range(len(queries)):
        for b in range(a + 1, len(queries)):
            (_, ta, _), (_, tb, _) = queries[a], queries[b]
            if ta == tb:
                base = factual_r if ta == "factual" else same_task_r
                pairs.append((f"within {ta}", base + rng.normal(0, 0.02)))
            elif "factual" not in (ta, tb):
                pairs.append(("across reasoning tasks", rng.normal(0, 0.05)))
    correlations = pa.table({"group": [g for g, _ in pairs], "pearson": [r for _, r in pairs]})
    query_stats = pa.table({
        "query_id": [q for q, _, _ in queries], "task": [t for _, t, _ in queries], "kind": [k for *_, k in queries],
        "correct": [True] * len(queries), "top_k": [K] * len(queries),
        "answer_in_context_topk": [k == "factual" for *_, k in queries],
        "total_positive": [(3.0 if k == "factual" else 1.0) * rng.uniform(0.5 if k == "factual" else 0.95, 1.5)
                           for *_, k in queries]})
    rows = [(q, r, favoured[k][r % 2] if r <= 6 else next(iter(shares)))
            for q, _, k in queries for r in range(1, K + 1)]
    top_docs = pa.table({"query_id": [q for q, *_ in rows], "end": ["top"] * len(rows), "rank": [r for _, r, _ in rows],
                         "source": [s for *_, s in rows]})
    enrichment = pa.table({"end": ["top"] * len(shares), "k": [K] * len(shares), "level": ["kind"] * len(shares),
                           "group": ["reasoning"] * len(shares), "source": list(shares),
                           "corpus_share": list(shares.values()), "enrichment": [1.0] * len(shares)})
    return {"correlations": correlations, "query_stats": query_stats, "top_docs": top_docs, "enrichment": enrichment}


def _verdicts(tables: dict) -> dict[str, tuple]:
    return {f.finding: findings.verdict(f, tables) for f in findings.FINDINGS}


def test_planted_effects_hold_and_reversed_ones_do_not():
    held = _verdicts(_tables())
    for name in ("factual_pairs_r", "same_task_reasoning_r", "slope_r", "linear_r", "answer_in_topk_factual",
                 "reasoning_sources", "factual_sources", "total_positive_ratio", "volatility_ratio"):
        assert held[name][0] == schemas.HOLDS and held[name][1] < findings.ALPHA, (name, held[name])
    flipped = _verdicts(_tables(same_task_r=0.0, factual_r=0.8, favoured={"reasoning": ("wiki", "webdata"),
                                                                             "factual": ("code", "webdata")}))
    for name in ("factual_pairs_r", "same_task_reasoning_r", "reasoning_sources", "factual_sources"):
        assert flipped[name][0] == schemas.FAILS and flipped[name][1] >= findings.ALPHA, (name, flipped[name])


def test_a_corpus_without_the_papers_sources_cannot_test_the_source_findings():
    tables = _tables(shares={"books": 0.5, "webtext": 0.5}, favoured={"reasoning": ("books",) * 2,
                                                                                "factual": ("books",) * 2})
    verdicts = _verdicts(tables)
    assert verdicts["reasoning_sources"][0] == verdicts["factual_sources"][0] == schemas.UNTESTABLE
    assert verdicts["reasoning_sources"][2].startswith("no 'stackexchange' or 'code' documents in the corpus")
    table = findings.compute({"influence": {"all": tables}})
    holding, testable, total = findings.count(table)
    assert (testable, total) == (7, 9)  # the two source findings leave the count; the answer claims count once
    assert findings.describe(holding, testable, total).endswith("testable findings reproduce (2 not testable)")


def test_one_source_of_two_is_not_a_pass():
    shares = {"code": 0.5, "webdata": 0.5}  # code, but no stackexchange: "both > 1" would pass on one value
    verdict, p, reason = _verdicts(_tables(shares=shares))["reasoning_sources"]
    assert (verdict, p) == (schemas.UNTESTABLE, None) and reason.startswith("no 'stackexchange' documents")


def test_too_few_queries_of_a_kind_is_not_testable():
    verdicts = _verdicts(_tables(n_factual=4))
    assert verdicts["factual_pairs_r"] == (schemas.UNTESTABLE, None,
                                           "6 pairs of factual queries; the test needs 10 (5 queries)")
    assert verdicts["total_positive_ratio"][2] == "4 factual queries; the test needs 5"
    assert verdicts["answer_in_topk_factual"][2] == "4 correctly answered factual queries; the test needs 5"
    assert verdicts["linear_r"][0] == schemas.UNTESTABLE  # compared with factual pairs
    assert _verdicts(_tables(n_factual=5))["factual_pairs_r"][0] == schemas.HOLDS  # 5 is enough


def test_a_task_the_queries_do_not_have_is_not_testable():
    tables = _tables()
    keep = [g != "within slope" for g in tables["correlations"].column("group").to_pylist()]
    tables["correlations"] = tables["correlations"].filter(pa.array(keep))
    assert _verdicts(tables)["slope_r"] == (schemas.UNTESTABLE, None,
                                            "0 pairs of slope queries; the test needs 10 (5 queries)")


def test_source_map_renames_a_real_corpus_sources(tmp_path):
    pile = ["Github", "StackExchange", "Wikipedia (en)", "Pile-CC", "Github"]
    rows = [dict(doc_id=i, text="x", source=s, n_tokens=1, fact_ids=None, procedure=None) for i, s in enumerate(pile)]
    write_parquet(pa.Table.from_pylist(rows, schema=schemas.CORPUS), tmp_path / "part-0.parquet", schemas.CORPUS)
    plain = Corpus.read(str(tmp_path))
    assert set(plain.source_share) == set(pile)
    mapped = Corpus.read(str(tmp_path), {"Github": "code", "StackExchange": "stackexchange", "Wikipedia (en)": "wiki"})
    assert mapped.source_share == {"code": 0.4, "stackexchange": 0.2, "wiki": 0.2, "Pile-CC": 0.2}
    with pytest.raises(ParamsError, match=r"analysis.source_map: 'Gitlab' is not a source of .* \(its sources: Github"):
        Corpus.read(str(tmp_path), {"Gitlab": "code"})


def test_spread_gives_mean_sd_t_interval_and_k_of_n():
    rows = []
    for seed, (value, verdict) in enumerate([(0.2, "holds"), (0.4, "holds"), (0.6, "does not hold"),
                                             (None, "not testable")]):
        rows.append(dict(seed=seed, finding="f", segment="all", claim="c", statistic="s", paper="p", paper_7b=None,
                         paper_35b=None, method="influence", value=value, verdict=verdict, test="t",
                         p_value=None if value is None else 0.01, reason=None))
    row = spread.spread(pa.Table.from_pylist(rows, schema=schemas.FINDINGS_BY_SEED)).to_pylist()[0]
    assert (row["n_runs"], row["n_valued"], row["n_testable"], row["n_holds"]) == (4, 3, 3, 2)
    assert row["mean"] == pytest.approx(0.4) and row["sd"] == pytest.approx(0.2)
    low, high = __import__("scipy").stats.t.interval(0.95, 2, loc=0.4, scale=0.2 / np.sqrt(3))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
