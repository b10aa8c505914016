"""The analyze stage's tables for one scoring method: per-query statistics, top documents, correlations,
source enrichment, procedure shares, and the method's headline numbers.

Scores are read one shard at a time into a memory-mapped matrix (``score_matrix.py``); every
statistic takes one query's row or a block of columns, never the whole table in memory. Schemas are
``pipeline/core/schemas.py``'s.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from scipy import sparse
from scipy import stats as sps
from tqdm.auto import tqdm

from pipeline.analysis import classify, labels, stats
from pipeline.analysis.score_matrix import open_matrix
from pipeline.core import schemas
from pipeline.core.config import AnalysisConfig, Params
from pipeline.core.errors import ParamsError, WherefromError
from pipeline.runs import methods as run_methods
from pipeline.world.tasks import CONTROLS, REASONING_TASKS, TASK_KIND
from queries.answers import ParsedText

UNKNOWN_SOURCE = "unknown"


@dataclass(frozen=True)
class Method:
    name: str  # influence, bm25 or random
    scores_dir: Path


@dataclass(frozen=True)
class Corpus:
    """What the analysis needs of the corpus besides the top documents' text: a few small aggregates."""

    n_docs: int
    source_share: dict[str, float]
    fact_doc_counts: dict[str, int]  # fact id -> documents stating it
    procedures: frozenset[str]  # procedures the corpus shows
    has_truth: bool
    cells: (
        np.ndarray
    )  # per document (doc ids ascending): its (category x source) cell, category = procedure | fact | other
    n_cells: int

    @staticmethod
    def read(corpus_dir: str, source_map: dict[str, str] | None = None) -> Corpus:
        """``source_map`` renames the corpus's sources (analysis.source_map) before anything counts them."""
        con = duckdb.connect()
        files = f"read_parquet('{Path(corpus_dir).resolve()}/*.parquet')"
        n_docs = con.execute(f"SELECT count(*) FROM {files}").fetchone()[0]
        raw = dict(con.execute(f"SELECT coalesce(source, '{UNKNOWN_SOURCE}'), count(*) FROM {files} GROUP BY 1")
                   .fetchall())
        source_map = source_map or {}
        unknown = sorted(set(source_map) - set(raw))
        if unknown:
            raise ParamsError(f"analysis.source_map: {', '.join(map(repr, unknown))} is not a source of {corpus_dir} "
                              f"(its sources: {', '.join(sorted(raw))})")
        sources: dict[str, int] = Counter()
        for name, n in raw.items():
            sources[source_map.get(name, name)] += n
        con.register("source_map", pa.table({"raw": list(source_map), "mapped": list(source_map.values())},
                                            schema=pa.schema([("raw", pa.string()), ("mapped", pa.string())])))
        facts = con.execute(
            f"SELECT f, count(*) FROM (SELECT unnest(fact_ids) AS f FROM {files}) GROUP BY f"
        ).fetchall()
        procedures = con.execute(f"SELECT DISTINCT procedure FROM {files} WHERE procedure IS NOT NULL").fetchall()
        cell = con.execute(f"""SELECT coalesce(procedure, CASE WHEN len(fact_ids) > 0 THEN 'fact' ELSE 'other' END)
                                      || ' x ' || coalesce(m.mapped, d.source, '{UNKNOWN_SOURCE}')
                               FROM {files} d LEFT JOIN source_map m ON d.source = m.raw ORDER BY doc_id""").fetchall()
        names, cells = np.unique(np.asarray([c for (c,) in cell], dtype=object), return_inverse=True)
        return Corpus(n_docs, {s: c / n_docs for s, c in sources.items()}, dict(facts),
                      frozenset(p for (p,) in procedures), bool(facts or procedures), cells, len(names))


def truth_class(task: str, fact_id: str | None, corpus: Corpus) -> str | None:
    """What the generated world says a query needs: a stated fact, a shown procedure, or (controls) neither."""
    if fact_id and corpus.fact_doc_counts.get(fact_id):
        return classify.DOCUMENT_SPECIFIC
    if task in REASONING_TASKS and task in corpus.procedures:
        return classify.PROCEDURAL
    return None


class DocumentText:
    """The top documents' text and ground truth, read once, each text parsed once for all queries."""

    def __init__(self, corpus_dir: str, doc_ids: set[int], source_map: dict[str, str] | None = None):
        table = ds.dataset(corpus_dir, format="parquet").to_table(
            columns=["doc_id", "text", "source", "fact_ids", "procedure"],
            filter=pc.field("doc_id").isin(sorted(doc_ids)),
        )
        rename = source_map or {}
        columns = (table.column(c).to_pylist() for c in table.column_names)
        self.rows = {d: (t, rename.get(s, s) or UNKNOWN_SOURCE, f, p) for d, t, s, f, p in zip(*columns)}
        self.parsed = {d: ParsedText(row[0]) for d, row in self.rows.items()}


def analyze_method(method: Method, queries: pa.Table, corpus: Corpus, params: Params, scratch: Path,
                   segment: str = schemas.WHOLE, choice: dict[str, tuple] | None = None) -> dict[str, pa.Table]:
    """Every table for one method's scores of one segment, over the queries that have that segment.
    ``choice`` is each query's dominant token choice (``dominant_choice``), to split pairs by."""
    cfg = params.analysis
    q = queries.to_pydict()
    qids = q["query_id"]
    with open_matrix(method.scores_dir, qids, scratch, segment) as matrix:
        n_docs = len(matrix.doc_ids)
        if n_docs != corpus.n_docs:
            raise WherefromError(
                f"{method.scores_dir}: scores cover {n_docs} of the corpus's {corpus.n_docs} documents; "
                f"rerun the {run_methods.stage(method.name)} stage"
            )
        k_top, k_tail = stats.capped_k(cfg.top_k, n_docs), stats.capped_k(cfg.tail_k, n_docs)
        ks = sorted({min(k, n_docs) for k in cfg.enrichment_ks} | {k_top})
        k_keep = max(ks)
        per_query, mass_rows, top_rows = [], [], []
        for i in tqdm(range(len(qids)), desc=f"analyze ({method.name})", unit="query", mininterval=1.0):
            row = matrix.row(i)
            order = stats.ranking(row)
            ranked = row[order]
            magnitude = stats.Magnitude.of(ranked, cfg.top_percents)
            tail = stats.PowerLaw.fit(ranked, k_tail)
            positive_top = np.clip(ranked[:k_top], 0, None).sum()
            per_query.append(dict(total_positive=magnitude.total_positive, total_negative=magnitude.total_negative,
                                  topk_share=positive_top / magnitude.total_positive if magnitude.total_positive > 0
                                  else math.nan, alpha=tail.alpha, alpha_se=tail.alpha_se, tail_points=tail.n_points))
            for p, s, share in zip(cfg.top_percents, magnitude.top_sums, magnitude.top_shares):
                mass_rows.append((qids[i], p, max(1, math.ceil(p / 100 * n_docs)), s, share))
            for end, positions in (("top", order[:k_keep]), ("bottom", order[::-1][:k_keep])):
                for rank, pos in enumerate(positions, start=1):
                    top_rows.append((qids[i], end, rank, int(matrix.doc_ids[pos]), float(row[pos])))
        pearson = stats.pearson(matrix.values)
        pearson_cells = stats.pearson(cell_totals(matrix.values, corpus))
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            ranks = np.lib.format.open_memmap(Path(tmp) / "ranks.npy", mode="w+", dtype=np.float32,
                                              shape=matrix.values.shape)
            spearman = stats.pearson(stats.rank_rows(matrix.values, ranks))
            del ranks

    texts = DocumentText(params.corpus.out_dir, {r[3] for r in top_rows}, cfg.source_map)
    top_docs = _top_docs(top_rows, q, texts, k_top, corpus)
    stats_table = _query_stats(q, per_query, top_docs, pearson, corpus, cfg, n_docs, k_top)
    tables = {
        "query_stats": stats_table,
        "top_mass": pa.table(dict(zip(["query_id", "percent", "n_docs", "top_sum", "top_share"], zip(*mass_rows)))),
        "top_docs": top_docs,
        "correlations": _correlations(q, pearson, spearman, pearson_cells, choice or {}),
        "enrichment": _enrichment(top_docs, queries, corpus, ks),
        "procedure_share": _procedure_share(top_docs, q, k_top) if corpus.has_truth else None,
    }
    tables["correlation_groups"] = _correlation_groups(tables["correlations"])
    return {name: _labelled(t, method.name, segment) for name, t in tables.items() if t is not None}


def _labelled(table: pa.Table, method: str, segment: str) -> pa.Table:
    table = table.add_column(0, "segment", pa.array([segment] * table.num_rows, pa.string()))
    return table.add_column(0, "method", pa.array([method] * table.num_rows, pa.string()))


def cell_totals(values: np.ndarray, corpus: Corpus) -> np.ndarray:
    """Each query's summed scores per (document category x source) cell: ``[queries, cells]``. Correlated
    across queries, it asks whether two queries draw on the same kinds of documents, not the same ones."""
    onehot = sparse.csr_matrix((np.ones(len(corpus.cells)), (np.arange(len(corpus.cells)), corpus.cells)),
                               shape=(len(corpus.cells), corpus.n_cells))
    out, start = np.zeros((values.shape[0], corpus.n_cells)), 0
    for block in stats.column_blocks(values):
        out += (onehot[start:start + block.shape[1]].T @ np.asarray(block, dtype=np.float64).T).T
        start += block.shape[1]
    return out


def dominant_choice(segments: pa.Table) -> dict[str, tuple[str, str]]:
    """Each query's largest-NLL completion token and the model's runner-up there: the choice that
    dominates its gradient. Two queries that weigh the same two tokens share much of that gradient."""
    best: dict[str, tuple[float, str, str]] = {}
    for qid, token, runner_up, nll in zip(
        *(segments.column(c).to_pylist() for c in ("query_id", "token", "runner_up", "nll"))
    ):
        if qid not in best or nll > best[qid][0]:
            best[qid] = (nll, token, runner_up)
    return {qid: (token.strip(), runner_up.strip()) for qid, (_, token, runner_up) in best.items()}


def _top_docs(rows: list[tuple], q: dict, texts: DocumentText, k_top: int, corpus: Corpus) -> pa.Table:
    index = {qid: i for i, qid in enumerate(q["query_id"])}
    out: dict[str, list] = {c: [] for c in schemas.TOP_DOCS.names if c not in ("method", "segment")}
    for qid, end, rank, doc_id, value in rows:
        i = index[qid]
        text, source, fact_ids, procedure = texts.rows[doc_id]
        answer, steps = q["answer"][i], q["step_answers"][i] or []
        prompt = q["prompt"][i]
        states = texts.parsed[doc_id].answers_question(answer, prompt)
        out["query_id"].append(qid)
        out["end"].append(end)
        out["rank"].append(rank)
        out["doc_id"].append(doc_id)
        out["score_per_nat"].append(value)
        out["source"].append(source)
        out["mentions_answer"].append(texts.parsed[doc_id].mentions(answer))
        out["mentions_step_answer"].append(any(texts.parsed[doc_id].mentions(s) for s in steps))
        out["answers_query"].append(states)
        truth = labels.truth_label(q["task"][i], q["fact_id"][i], fact_ids, procedure) if corpus.has_truth else None
        heuristic = labels.text_label(text, states)
        out["label_truth"].append(truth)
        out["label_text"].append(heuristic)
        out["label"].append(truth or heuristic)
        out["in_top_k"].append(end == "top" and rank <= k_top)
        out["states_query_fact"].append(bool(q["fact_id"][i] and fact_ids and q["fact_id"][i] in fact_ids))
        out["states_a_fact"].append(bool(fact_ids))
        out["procedure"].append(procedure)
    return pa.table(out)


def _query_stats(q: dict, per_query: list[dict], top_docs: pa.Table, pearson: np.ndarray, corpus: Corpus,
                 cfg: AnalysisConfig, n_docs: int, k_top: int) -> pa.Table:
    in_top = top_docs.filter(pc.field("in_top_k"))
    answer_in, step_in, context_in, fact_hits, working, positive = (Counter() for _ in range(6))
    for qid, a, s, c, f, label, value in zip(*(in_top.column(c).to_pylist() for c in (
            "query_id", "mentions_answer", "mentions_step_answer", "answers_query", "states_query_fact",
            "label_text", "score_per_nat"))):
        answer_in[qid] += a
        step_in[qid] += s
        context_in[qid] += c
        fact_hits[qid] += f
        working[qid] += max(value, 0.0) * (label == labels.SHOWS_PROCEDURE)
        positive[qid] += max(value, 0.0)
    qids = q["query_id"]
    features = {
        "neighbour_r": classify.neighbour_r(pearson, cfg.neighbours),
        "topk_share": np.array([p["topk_share"] for p in per_query]),
        "alpha": np.array([p["alpha"] for p in per_query]),
        "answer_in_context": np.array([float(context_in[qid] > 0) for qid in qids]),
        "working_share": np.array([working[qid] / positive[qid] if positive[qid] > 0 else np.nan for qid in qids]),
    }
    result = classify.classify(features)
    columns: dict[str, list] = {c: [] for c in schemas.QUERY_STATS.names if c not in ("method", "segment")}
    for i, qid in enumerate(qids):
        fact_id = q["fact_id"][i]
        n_fact_docs = corpus.fact_doc_counts.get(fact_id or "", 0)
        row = dict(query_id=qid, task=q["task"][i], kind=q["kind"][i], correct=q["correct"][i], n_docs=n_docs,
                   top_k=k_top, answer_in_topk=answer_in[qid] > 0, step_answer_in_topk=step_in[qid] > 0,
                   answer_in_context_topk=context_in[qid] > 0, working_share=float(features["working_share"][i]),
                   fact_recall=fact_hits[qid] / n_fact_docs if n_fact_docs else None,
                   neighbour_r=float(features["neighbour_r"][i]), procedural_score=float(result.score[i]),
                   predicted=result.label[i], confidence=float(result.confidence[i]),
                   expected=classify.EXPECTED_FOR_KIND[q["kind"][i]],
                   truth=truth_class(q["task"][i], fact_id, corpus), **per_query[i])
        for c in columns:
            columns[c].append(row[c])
    return pa.table(columns)


def _correlations(q: dict, pearson: np.ndarray, spearman: np.ndarray, pearson_cells: np.ndarray,
                  choice: dict[str, tuple]) -> pa.Table:
    a, b = np.triu_indices(len(q["query_id"]), k=1)
    ids, tasks = np.asarray(q["query_id"], dtype=object), np.asarray(q["task"], dtype=object)
    groups = [pair_group(x, y) for x, y in zip(tasks[a], tasks[b])]
    same = [choice[x] == choice[y] if x in choice and y in choice else None for x, y in zip(ids[a], ids[b])]
    return pa.table({"query_a": ids[a], "query_b": ids[b], "task_a": tasks[a], "task_b": tasks[b], "group": groups,
                     "pearson": pearson[a, b], "spearman": spearman[a, b], "pearson_cells": pearson_cells[a, b],
                     "same_choice": pa.array(same, pa.bool_())})


def pair_group(task_a: str, task_b: str) -> str:
    """The comparison a query pair belongs to: within one task, across reasoning tasks, against a control."""
    kind = {t: TASK_KIND.get(t, "factual") for t in (task_a, task_b)}  # a user's own task counts as factual
    if task_a == task_b:
        return f"within {task_a}"
    if task_a in REASONING_TASKS and task_b in REASONING_TASKS:
        return "across reasoning tasks"
    controls = set(CONTROLS)
    if (task_a in controls) != (task_b in controls) and kind[task_a] == kind[task_b]:
        return f"{kind[task_a]} vs its control"
    if kind[task_a] != kind[task_b] and not ({task_a, task_b} & controls):
        return "factual vs reasoning"
    return "other"


def _correlation_groups(pairs: pa.Table) -> pa.Table:
    groups = np.asarray(pairs.column("group").to_pylist(), dtype=object)
    pearson, spearman = pairs.column("pearson").to_numpy(), pairs.column("spearman").to_numpy()
    cells = pairs.column("pearson_cells").to_numpy()
    same = np.asarray(pairs.column("same_choice").to_pylist(), dtype=object)
    out: dict[str, list] = {c: [] for c in schemas.CORRELATION_GROUPS.names if c not in ("method", "segment")}
    for group in sorted(set(groups)):
        mask = groups == group
        r, rho = pearson[mask][np.isfinite(pearson[mask])], spearman[mask][np.isfinite(spearman[mask])]
        t, p = stats.fisher_t_test(r)
        for c, v in dict(group=group, n_pairs=int(mask.sum()), mean_pearson=_mean(r),
                         sd_pearson=float(r.std()) if len(r) else None, max_pearson=float(r.max()) if len(r) else None,
                         mean_spearman=_mean(rho), mean_pearson_cells=_mean(cells[mask]),
                         mean_pearson_same_choice=_mean(pearson[mask & (same == True)]),  # noqa: E712 (None is neither)
                         mean_pearson_other_choice=_mean(pearson[mask & (same == False)]),  # noqa: E712
                         t_stat=t, p_value=p).items():
            out[c].append(v)
    return pa.table(out)


def _enrichment(top_docs: pa.Table, queries: pa.Table, corpus: Corpus, ks: list[int]) -> pa.Table:
    """Share of each source in the top/bottom k, pooled over a task's (or kind's) queries, over its corpus share."""
    con = duckdb.connect()
    con.register("top_docs", top_docs.select(["query_id", "end", "rank", "source"]))
    con.register("queries", queries.select(["query_id", "task", "kind"]))
    con.register("ks", pa.table({"k": ks}))
    con.register(
        "shares", pa.table({"source": list(corpus.source_share), "corpus_share": list(corpus.source_share.values())})
    )
    return con.sql("""
        WITH top AS (SELECT t.*, q.task, q.kind FROM top_docs t JOIN queries q USING (query_id)),
        counted AS (
            SELECT "end", k, 'task' AS level, task AS "group", source, count(*) AS n
            FROM top, ks WHERE rank <= k GROUP BY ALL
            UNION ALL
            SELECT "end", k, 'kind' AS level, kind AS "group", source, count(*) AS n
            FROM top, ks WHERE rank <= k GROUP BY ALL),
        sizes AS (
            SELECT 'task' AS level, task AS "group", count(*) AS n_queries FROM queries GROUP BY ALL
            UNION ALL SELECT 'kind', kind, count(*) FROM queries GROUP BY ALL),
        cells AS (SELECT e."end", ks.k, s.level, s."group", s.n_queries, sh.source, sh.corpus_share
                  FROM (VALUES ('top'), ('bottom')) e("end"), ks, sizes s, shares sh)
        SELECT c."end", c.k, c.level, c."group", c.source, coalesce(n, 0) / (c.n_queries * c.k) AS share,
               c.corpus_share, coalesce(n, 0) / (c.n_queries * c.k) / c.corpus_share AS enrichment
        FROM cells c LEFT JOIN counted USING ("end", k, level, "group", source)
        ORDER BY c.level, c."group", c."end", c.k, c.source""").to_arrow_table()


PROCEDURE_CATEGORIES = ("own_procedure", "other_procedure", "own_fact", "other_fact", "filler")


def _procedure_share(top_docs: pa.Table, q: dict, k_top: int) -> pa.Table:
    """Where each query's top-k positive influence comes from, by the generated world's ground truth."""
    task_of = dict(zip(q["query_id"], q["task"]))
    mass: dict[tuple[str, str], float] = Counter()
    count: dict[tuple[str, str], int] = Counter()
    rows = top_docs.filter(pc.field("in_top_k"))
    for qid, value, label, own_fact, any_fact, procedure in zip(*(rows.column(c).to_pylist() for c in (
            "query_id", "score_per_nat", "label_truth", "states_query_fact", "states_a_fact", "procedure"))):
        if label == labels.SHOWS_PROCEDURE:
            category = "own_procedure"
        elif procedure is not None:
            category = "other_procedure"
        elif own_fact:
            category = "own_fact"
        elif any_fact:
            category = "other_fact"
        else:
            category = "filler"
        mass[qid, category] += max(value, 0.0)
        count[qid, category] += 1
    out: dict[str, list] = {c: [] for c in schemas.PROCEDURE_SHARE.names if c not in ("method", "segment")}
    for qid in q["query_id"]:
        total = sum(mass[qid, c] for c in PROCEDURE_CATEGORIES)
        for c in PROCEDURE_CATEGORIES:
            for col, v in dict(query_id=qid, task=task_of[qid], category=c, n_docs=count[qid, c],
                               share=mass[qid, c] / total if total > 0 else None).items():
                out[col].append(v)
    return pa.table(out)


def _agreement(top_docs: pa.Table) -> dict:
    """How often the text labeller agrees with the ground truth, over the top-k documents."""
    rows = top_docs.filter(pc.field("in_top_k") & pc.field("label_truth").is_valid())
    truth, text = rows.column("label_truth").to_pylist(), rows.column("label_text").to_pylist()
    if not truth:
        return {}
    confusion = {t: {p: sum(1 for a, b in zip(truth, text) if a == t and b == p) for p in labels.LABELS}
                 for t in labels.LABELS}
    return {"agreement": sum(a == b for a, b in zip(truth, text)) / len(truth), "n": len(truth), "confusion": confusion}


def summary(tables: dict[str, pa.Table]) -> dict:
    """One method's headline numbers (the per-method part of metrics.json)."""
    qs = tables["query_stats"].to_pydict()
    kinds = np.asarray(qs["task"], dtype=object)
    factual, reasoning = kinds == "factual", np.isin(kinds, REASONING_TASKS)
    correct = np.asarray(qs["correct"], dtype=bool)
    groups = dict(zip(tables["correlation_groups"].column("group").to_pylist(),
                      tables["correlation_groups"].column("mean_pearson").to_pylist()))
    alpha = np.asarray(qs["alpha"], dtype=np.float64)
    with np.errstate(all="ignore"):
        tail = sps.ttest_ind(
            alpha[reasoning & np.isfinite(alpha)], alpha[factual & np.isfinite(alpha)], equal_var=False
        )
    answer = np.asarray(qs["answer_in_topk"], dtype=bool)
    in_context = np.asarray(qs["answer_in_context_topk"], dtype=bool)
    predicted = qs["predicted"]
    return {
        "mean_r": {"factual_pairs": groups.get("within factual"),
                   **{f"within_{t}": groups.get(f"within {t}") for t in REASONING_TASKS},
                   "across_reasoning": groups.get("across reasoning tasks")},
        "answer_in_topk": {"factual_correct": _mean(answer[factual & correct]),
                           "reasoning_correct": _mean(answer[reasoning & correct])},
        "answer_in_context_topk": {"factual_correct": _mean(in_context[factual & correct]),
                                   "reasoning_correct": _mean(in_context[reasoning & correct])},
        "tail_alpha": {"factual": _mean(alpha[factual]), "reasoning": _mean(alpha[reasoning]),
                       "welch_t": float(tail.statistic), "p_value": float(tail.pvalue)},
        "classifier": {"vs_kind": classify.confusion(qs["expected"], predicted),
                       "vs_truth": classify.confusion(qs["truth"], predicted)},
        "labels": _agreement(tables["top_docs"]),
    }


def segment_summary(tables: dict[str, pa.Table]) -> dict:
    """A segment's headline numbers: its correlation groups and its classifier against ground truth."""
    groups = tables["correlation_groups"].to_pydict()
    qs = tables["query_stats"].to_pydict()
    return {"mean_r": {g: r for g, r in zip(groups["group"], groups["mean_pearson"])},
            "classifier_vs_truth": classify.confusion(qs["truth"], qs["predicted"]).get("accuracy")}


def finite(obj):
    """NaN and infinity as null: metrics.json must be valid JSON."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _mean(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None
