"""The analyze stage on constructed scores where every answer is known, and its statistics one by one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_params

from influence import shards
from pipeline import cli
from pipeline.analysis import classify, stats
from pipeline.analysis.labels import SHOWS_PROCEDURE, STATES_ANSWER, shows_working, text_label
from pipeline.analysis.score_matrix import open_matrix
from pipeline.core import schemas
from pipeline.core.atomic import write_parquet
from pipeline.core.config import load_params
from pipeline.runs import methods as run_methods
from pipeline.sql import db
from pipeline.stages import analyze, baselines
from queries.answers import answers_question, key_terms

N_DOCS, ALPHA, TOP = 200, 1.5, 10  # capped_k(500, 200) = 10: top-k, tail and the smallest enrichment k
SOURCES = ["wiki", "webdata", "math_and_trivia", "stackexchange", "arxiv_markdown"]
ARITHMETIC = "Calculate the answer: (7 - 4) * 7\n\nThink step-by-step."
TEXTS = {0: "Calculate the answer: (7 - 4) * 7\nFirst 7 - 4 = 3. Then 3 * 7 = 21.",  # works it: answer and steps
         1: "Calculate the answer: (7 - 4) * 7 is not 210, whatever they say.",  # 210 is not 21
         2: "The capital of Bribrun is Koutex."}


def _corpus() -> pa.Table:
    rows = []
    for i in range(N_DOCS):
        rows.append(dict(doc_id=i, text=TEXTS.get(i, f"Nothing to see in document {i}."),
                         source="code" if i < 20 else SOURCES[i % len(SOURCES)], n_tokens=8,
                         fact_ids=["e0-capital"] if i == 2 else None, procedure="arithmetic" if i == 0 else None))
    return pa.Table.from_pylist(rows, schema=schemas.CORPUS)


QUERIES = [  # (query_id, task, prompt, answer, steps, fact_id, top documents in order)
    ("arithmetic-000", "arithmetic", ARITHMETIC, "21", ["3", "21"], None, [0, *range(3, 12)]),
    ("arithmetic-001", "arithmetic", ARITHMETIC, "21", ["3", "21"], None, [0, *range(3, 12)]),
    ("arithmetic-002", "arithmetic", ARITHMETIC, "21", ["3", "21"], None, [1, *range(12, 20), 3]),
    ("factual-000", "factual", "What is the capital of Bribrun?", "Koutex", [], "e0-capital", [2, *range(5, 14)]),
    ("factual-001", "factual", "What is the capital of Trezeind?", "Deibu", [], None, [*range(10, 20)]),
]


def _scores(rng: np.random.Generator) -> np.ndarray:
    """Each query: its top documents on an exact power law, all others small noise far below."""
    scores = rng.uniform(-0.01, 0.01, size=(len(QUERIES), N_DOCS))
    for q, (*_, top) in enumerate(QUERIES):
        scores[q, top] = 10.0 * np.arange(1, TOP + 1) ** -ALPHA
    scores[1] = scores[0]  # two identical queries
    return scores


def _segments() -> pa.Table:
    """Each completion's tokens; the largest-NLL token of arithmetic-000 and -001 weighs 2 against 3, that of
    arithmetic-002 weighs 2 against 4 (their dominant choices: the same, and another)."""
    rows = []
    for qid, *_ in QUERIES:
        runner_up = "4" if qid == "arithmetic-002" else "3"
        for position, (token, segment, nll, other) in enumerate(
                [("The answer is", "scaffold", 0.5, "A"), (" 2", "answer", 1.5, runner_up)]):
            rows.append(dict(query_id=qid, position=position, token=token, char_start=0, char_end=1, segment=segment,
                             nll=nll, runner_up=other))
    return pa.Table.from_pylist(rows, schema=schemas.SEGMENTS)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    params = load_params(write_params(tmp, scores={"variants": []}, baselines={"methods": []}))
    write_parquet(_corpus(), tmp / "data/corpus/part-00000.parquet", schemas.CORPUS)
    queries = pa.Table.from_pylist([
        dict(query_id=qid, task=task, kind="factual" if task == "factual" else "reasoning", prompt=prompt,
             completion=f"The answer is {answer}.", answer=answer, step_answers=steps, correct=True, completion_nll=2.0,
             fact_id=fact) for qid, task, prompt, answer, steps, fact, _ in QUERIES], schema=schemas.QUERIES)
    write_parquet(queries, params.queries.out, schemas.QUERIES)
    write_parquet(_segments(), params.queries.segments, schemas.SEGMENTS)
    scores = _scores(np.random.default_rng(0))
    # the whole completions, and a scaffold segment that all reasoning queries share exactly (NLL 0.5)
    scaffold = np.random.default_rng(1).normal(size=(len(QUERIES), N_DOCS))
    scaffold[1] = scaffold[2] = scaffold[0]
    keys = [(q[0], "all") for q in QUERIES] + [(q[0], "scaffold") for q in QUERIES]
    nll = np.array([2.0] * len(QUERIES) + [0.5] * len(QUERIES))
    for shard in shards.plan(list(range(N_DOCS)), 64):  # 4 shards, the last one short
        shards.write(shard.path(tmp / "results/scores"), "key", keys, nll, shard.doc_ids,
                     np.concatenate([scores, scaffold])[:, list(shard.doc_ids)])
    analyze.run(params)
    tables = {name: pq.read_table(tmp / f"results/{name}.parquet") for name in [*schemas.ANALYSIS, "findings"]}
    return params, scores, tables, tmp / "params.yaml"


def _row(table: pa.Table, **where) -> dict:
    if "segment" in table.column_names:
        where.setdefault("segment", "all")
    rows = [r for r in table.to_pylist() if all(r[k] == v for k, v in where.items())]
    assert len(rows) == 1, where
    return rows[0]


def _rows(table: pa.Table, segment: str = "all") -> list[dict]:
    return [r for r in table.to_pylist() if r["segment"] == segment]


def test_every_table_has_its_schema(planted):
    tables = planted[2]
    for name, schema in schemas.ANALYSIS.items():
        assert tables[name].schema == schema, name
        assert tables[name].num_rows > 0, name
    assert tables["findings"].schema == schemas.FINDINGS


def test_score_matrix_reassembles_the_shards(planted):
    params, scores, *_ = planted
    with open_matrix(params.scores.out_dir, [q[0] for q in QUERIES]) as matrix:  # segment "all"
        assert matrix.doc_ids.tolist() == list(range(N_DOCS))
        np.testing.assert_allclose(matrix.values, scores / 2.0, rtol=1e-6)  # per nat: NLL 2


def test_identical_queries_correlate_perfectly(planted):
    pair = _row(planted[2]["correlations"], query_a="arithmetic-000", query_b="arithmetic-001", segment="all")
    assert pair["pearson"] == pytest.approx(1.0) and pair["spearman"] == pytest.approx(1.0)
    assert pair["pearson_cells"] == pytest.approx(1.0)
    assert pair["group"] == "within arithmetic"
    other = _row(planted[2]["correlations"], query_a="arithmetic-000", query_b="factual-001", segment="all")
    assert other["pearson"] < 0.5 and other["group"] == "factual vs reasoning"


def test_each_segment_is_analysed_on_its_own_scores(planted):
    """The scaffold rows were planted identical across the reasoning queries, the whole completions not."""
    params, scores, tables, _ = planted
    with open_matrix(params.scores.out_dir, [q[0] for q in QUERIES], segment="scaffold") as matrix:
        np.testing.assert_allclose(matrix.values[1], matrix.values[2], rtol=1e-6)  # per nat: NLL 0.5
    scaffold = _row(tables["correlations"], query_a="arithmetic-000", query_b="arithmetic-002", segment="scaffold")
    whole = _row(tables["correlations"], query_a="arithmetic-000", query_b="arithmetic-002", segment="all")
    assert scaffold["pearson"] == pytest.approx(1.0) and whole["pearson"] < 0.5
    assert {r["segment"] for r in tables["query_stats"].to_pylist()} == {"all", "scaffold"}
    row = _row(tables["findings"], finding="same_task_reasoning_r_scaffold", segment="scaffold", method="influence")
    assert row["value"] == pytest.approx(1.0)
    assert _row(tables["findings"], finding="same_task_reasoning_r", method="influence")["value"] < 0.7
    assert not [r for r in tables["findings"].to_pylist() if r["segment"] == "computed"]  # not scored, no row


def test_pairs_are_split_by_their_dominant_token_choice(planted):
    tables = planted[2]
    same = _row(tables["correlations"], query_a="arithmetic-000", query_b="arithmetic-001", segment="all")
    other = _row(tables["correlations"], query_a="arithmetic-000", query_b="arithmetic-002", segment="all")
    assert same["same_choice"] is True and other["same_choice"] is False
    group = _row(tables["correlation_groups"], group="within arithmetic", segment="all")
    assert group["mean_pearson_same_choice"] == pytest.approx(1.0)
    assert group["mean_pearson_other_choice"] == pytest.approx(other["pearson"], abs=1e-6)


def test_cell_totals_sum_each_querys_scores_per_category_and_source():
    from pipeline.analysis.tables import Corpus, cell_totals

    values = np.arange(12, dtype=np.float32).reshape(2, 6)
    corpus = Corpus(6, {}, {}, frozenset(), False, np.array([0, 1, 0, 2, 1, 0]), 3)
    np.testing.assert_allclose(cell_totals(values, corpus), [[0 + 2 + 5, 1 + 4, 3], [6 + 8 + 11, 7 + 10, 9]])


def test_planted_power_law_exponent_is_recovered(planted):
    for row in _rows(planted[2]["query_stats"]):
        assert row["alpha"] == pytest.approx(ALPHA, abs=1e-6) and row["alpha_se"] == pytest.approx(0, abs=1e-6)
        assert row["tail_points"] == TOP


def test_planted_answer_document_is_found_and_210_is_not_21(planted):
    qs = planted[2]["query_stats"]
    assert _row(qs, query_id="arithmetic-000")["answer_in_context_topk"]
    found = _row(qs, query_id="arithmetic-002")  # its top documents hold "210" and never "21"
    assert not found["answer_in_context_topk"] and not found["answer_in_topk"]
    top = planted[2]["top_docs"]
    assert not _row(top, query_id="arithmetic-002", end="top", rank=1)["mentions_answer"]  # doc 1: "210"
    assert _row(top, query_id="arithmetic-000", end="top", rank=1)["mentions_step_answer"]
    assert _row(qs, query_id="factual-000")["answer_in_context_topk"]
    assert _row(qs, query_id="factual-000")["fact_recall"] == 1.0  # the only document stating e0-capital


def test_enrichment_of_a_source_that_fills_the_top_k_is_one_over_its_share(planted):
    row = _row(planted[2]["enrichment"], end="top", k=TOP, level="kind", group="reasoning", source="code")
    assert row["corpus_share"] == pytest.approx(20 / N_DOCS)
    assert row["enrichment"] == pytest.approx(N_DOCS / 20)
    assert (
        _row(planted[2]["enrichment"], end="top", k=TOP, level="kind", group="reasoning", source="wiki")["share"] == 0
    )


def test_top_mass_and_procedure_share_match_the_planted_scores(planted):
    weights = np.arange(1, TOP + 1) ** -ALPHA
    row = _row(planted[2]["top_mass"], query_id="arithmetic-000", percent=1.0)  # 1% of 200 = 2 documents
    assert row["n_docs"] == 2 and row["top_sum"] == pytest.approx(5.0 * weights[:2].sum(), rel=1e-5)
    share = _row(planted[2]["procedure_share"], query_id="arithmetic-000", category="own_procedure")
    assert share["n_docs"] == 1 and share["share"] == pytest.approx(weights[0] / weights.sum(), rel=1e-5)
    assert _row(planted[2]["procedure_share"], query_id="factual-000", category="own_fact")["n_docs"] == 1


def test_labels_use_truth_where_the_corpus_has_it(planted):
    top = planted[2]["top_docs"]
    assert _row(top, query_id="arithmetic-000", end="top", rank=1)["label"] == SHOWS_PROCEDURE
    fact = _row(top, query_id="factual-000", end="top", rank=1)
    assert fact["label"] == fact["label_truth"] == fact["label_text"] == STATES_ANSWER


def test_a_registered_method_is_scored_analysed_and_queried_with_no_other_edit(planted, toy_method, tmp_path):
    """One ``register`` call: the baselines stage scores it (baselines.methods null = every corpus method), the
    analysis gives its findings and tables, and its scores are in the method_scores view."""
    source = planted[0]
    params = dataclasses.replace(source, baselines=dataclasses.replace(
        source.baselines, methods=None, out_dir=str(tmp_path / "baselines")),
        analysis=dataclasses.replace(source.analysis, out_dir=str(tmp_path / "results"),
                                     metrics_dir=str(tmp_path / "metrics")))
    assert run_methods.baselines(params) == ["bm25", "random", "toy"]
    baselines.run(params)
    analyze.run(params)
    findings = pq.read_table(tmp_path / "results/findings.parquet").to_pylist()
    by_method = {m: [f["finding"] for f in findings if f["method"] == m and f["segment"] == "all"]
                 for m in ("influence", "toy")}
    assert by_method["toy"] == by_method["influence"] == [f.finding for f in analyze.findings.FINDINGS]
    stats = pq.read_table(tmp_path / "results/query_stats.parquet").to_pylist()
    assert {r["query_id"] for r in stats if r["method"] == "toy"} == {q[0] for q in QUERIES}
    shown = db.query(db.connect(params), "SELECT doc_id, min(score), max(score) FROM method_scores "
                     "WHERE method = 'toy' GROUP BY doc_id ORDER BY doc_id").to_pylist()
    assert [(r["doc_id"], r["min(score)"], r["max(score)"]) for r in shown] == [
        (d, float(d % 2 == 0), float(d % 2 == 0)) for d in range(N_DOCS)]


def test_findings_and_metrics_cover_every_finding(planted):
    params, _, tables, _ = planted
    findings = tables["findings"].to_pylist()
    paper = [f for f in findings if f["segment"] == "all"]
    assert [f["finding"] for f in paper] == [f.finding for f in analyze.findings.FINDINGS]
    assert {f["method"] for f in findings} == {"influence"}  # no baselines in this run
    metrics = json.loads((Path(params.analysis.out_dir) / "metrics.json").read_text())
    assert metrics["influence"]["classifier"]["vs_kind"]["n"] == len(QUERIES)
    # 3 reasoning and 2 factual queries: every test needs 5 of a kind, so none is testable, and none counts
    assert {f["verdict"] for f in paper} == {"not testable"} and all(f["reason"] for f in paper)
    counted = len(paper) - len(analyze.findings.SHARED_TEST)  # the two answer claims are one test
    assert metrics["findings_reproduced"] == f"0 of 0 testable findings reproduce ({counted} not testable)"
    headline = json.loads((Path(params.analysis.metrics_dir) / "headline.json").read_text())
    assert (headline["findings_reproduced"], headline["findings_testable"]) == (0, 0)
    assert metrics["influence"]["segments"]["scaffold"]["mean_r"]["within arithmetic"] == pytest.approx(1.0)


PILE_NAMES = {"code": "Github", "stackexchange": "StackExchange", "wiki": "Wikipedia (en)",
              "math_and_trivia": "DM Mathematics"}


def test_source_map_makes_a_real_corpus_sources_testable(planted, tmp_path):
    """The planted corpus with the Pile's source names: without a map the source findings lack their sources;
    mapped back, the sources are there and what is left missing is queries (3 reasoning, 5 needed)."""
    params = planted[0]
    corpus = _corpus()
    renamed = [PILE_NAMES.get(s, s) for s in corpus.column("source").to_pylist()]
    corpus = corpus.set_column(corpus.schema.get_field_index("source"), "source", pa.array(renamed, pa.string()))
    write_parquet(corpus, tmp_path / "corpus/part-00000.parquet", schemas.CORPUS)

    def reasons(name: str, source_map: dict) -> tuple[set, dict]:
        out = tmp_path / name
        analyze.run(
            dataclasses.replace(
                params,
                corpus=dataclasses.replace(params.corpus, out_dir=str(tmp_path / "corpus")),
                analysis=dataclasses.replace(
                    params.analysis, out_dir=str(out), metrics_dir=str(out), source_map=source_map
                ),
            )
        )
        found = {r["finding"]: r["reason"] for r in pq.read_table(out / "findings.parquet").to_pylist()}
        return set(pq.read_table(out / "enrichment.parquet").column("source").to_pylist()), found

    sources, found = reasons("plain", {})
    assert "Github" in sources and found["reasoning_sources"].startswith("no 'stackexchange' or 'code' documents")
    assert found["factual_sources"].startswith("no 'wiki' or 'math_and_trivia' documents")
    sources, found = reasons("mapped", {pile: ours for ours, pile in PILE_NAMES.items()})
    assert "code" in sources and "Github" not in sources
    assert found["reasoning_sources"] == "3 reasoning queries; the test needs 5"
    assert found["factual_sources"] == "2 factual queries; the test needs 5"


# ---------------------------------------------------------------- statistics one at a time

def test_capped_k_is_one_percent_with_a_floor():
    assert stats.capped_k(500, 5_000_000) == 500
    assert stats.capped_k(500, 14_132) == 141
    assert stats.capped_k(500, 200) == 10 and stats.capped_k(500, 4) == 4


def test_magnitude_sums_the_top_percent_of_positive_scores():
    ranked = np.array([4.0, 3.0, 2.0, 1.0] + [0.0] * 95 + [-5.0])
    m = stats.Magnitude.of(ranked, (1.0, 10.0))
    assert (m.total_positive, m.total_negative) == (10.0, -5.0)
    assert m.top_sums == (4.0, 10.0) and m.top_shares == (0.4, 1.0)


def test_pearson_streams_over_column_blocks():
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((4, 1000))
    total, cross, n = stats.gram(stats.column_blocks(matrix, width=64), 4)
    np.testing.assert_allclose(stats.pearson_from_gram(total, cross, n), np.corrcoef(matrix), atol=1e-12)


def test_two_means_split_separates_two_groups_and_the_classifier_follows():
    assert 1.0 < classify.two_means_split(np.array([0.0, 0.1, 0.2, 5.0, 5.1])) < 5.0
    broad = dict(neighbour_r=0.8, topk_share=0.1, alpha=0.3, answer_in_context=0.0, working_share=0.9)
    narrow = dict(neighbour_r=0.05, topk_share=0.7, alpha=1.2, answer_in_context=1.0, working_share=0.1)
    rows = [broad] * 5 + [narrow] * 3
    features = {k: np.array([r[k] for r in rows]) + np.linspace(0, 0.01, len(rows)) for k in broad}
    result = classify.classify(features)
    assert result.label == [classify.PROCEDURAL] * 5 + [classify.DOCUMENT_SPECIFIC] * 3
    assert (result.confidence > 0.99).all()
    report = classify.confusion(["procedural"] * 5 + [None] * 3, result.label)
    assert report["accuracy"] == 1.0 and report["n"] == 5


def test_the_answer_to_this_question_not_the_same_digits():
    assert key_terms(ARITHMETIC) == ("(7 - 4) * 7", set())
    assert answers_question("So (7 - 4) * 7 = 21.", "21", ARITHMETIC)
    assert not answers_question("So (7 - 4) * 7 = 210.", "21", ARITHMETIC)
    assert not answers_question("(2 + 1) * 7 = 21", "21", ARITHMETIC)  # same digits, another problem
    assert answers_question("Keiklei is the capital of Statre.", "Keiklei", "What is the capital of Statre?")
    assert not answers_question("Keiklei is a capital.", "Keiklei", "What is the capital of Statre?")


def test_text_labels():
    assert shows_working("7 - 4 = 3\n3 * 7 = 21") and not shows_working("It is 21. Or 3 = 3.")
    assert shows_working("def slope(a, b):\n    return a / b")
    assert text_label("nothing here", answers_query=False) == "other"


# ---------------------------------------------------------------- wherefrom sql

def _sql(planted, capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["sql", "--params", str(planted[3]), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sql_reads_every_view(planted, capsys):
    views = ["scores", "queries", "corpus", *schemas.ANALYSIS, "findings"]
    code, out, _ = _sql(
        planted,
        capsys,
        " UNION ALL ".join(f"SELECT '{v}' AS v, count(*) AS n FROM {v}" for v in views),
        "--format",
        "json",
    )
    assert code == 0
    counts = {r["v"]: r["n"] for r in json.loads(out)}
    assert counts["scores"] == 2 * len(QUERIES) * N_DOCS and counts["corpus"] == N_DOCS and counts["findings"] == 11


def test_named_queries_run_with_their_parameters(planted, capsys):
    code, out, _ = _sql(planted, capsys, "--name", "top_documents", "--param", "query_id=factual-000",
                        "--param", "k=3", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["doc_id"] for r in rows] == [2, 5, 6] and rows[0]["label"] == STATES_ANSWER
    for name in ("task_correlations", "answer_in_topk", "source_enrichment", "findings", "methods", "accuracy",
                 "sources", "correlation_groups", "influence_mass", "power_law", "procedure_share", "classifier"):
        code, out, err = _sql(planted, capsys, "--name", name, "--format", "csv")
        assert code == 0 and out.count("\n") > 1, (name, err)
    code, out, _ = _sql(planted, capsys, "--list")
    assert code == 0 and "top_documents" in out and "query_id" in out
    assert "Mean Pearson (and Spearman) r of document scores between the queries of two tasks (the paper's main " \
           "evidence), and of their summed scores per (document category x source) cell" in out  # not cut mid-sentence
    code, out, _ = _sql(planted, capsys, "--views")
    views = dict(line.split(": ", 1) for line in out.splitlines())
    assert code == 0 and set(views) == {"scores", "method_scores", "queries", "segments", "corpus", *schemas.ANALYSIS,
                                     "findings"}
    assert views["scores"] == "query_id varchar, segment varchar, doc_id bigint, score float, score_per_nat float"


def test_sql_json_is_one_valid_array_streamed_in_batches(planted, capsys):
    code, out, _ = _sql(planted, capsys, "SELECT * FROM scores ORDER BY query_id, segment, doc_id", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2 * len(QUERIES) * N_DOCS and rows[0]["doc_id"] == 0
    code, out, _ = _sql(planted, capsys, "SELECT * FROM scores WHERE false", "--format", "json")
    assert json.loads(out) == []


def test_sql_streams_a_whole_result_to_parquet_or_csv(planted, capsys, tmp_path):
    for suffix in (".parquet", ".csv"):
        out = tmp_path / f"scores{suffix}"
        code, stdout, err = _sql(
            planted, capsys, "SELECT * FROM scores ORDER BY query_id, segment, doc_id", "--out", str(out)
        )
        assert code == 0 and stdout == "" and f"{2 * len(QUERIES) * N_DOCS:,} rows -> {out}" in err
    assert pq.read_table(tmp_path / "scores.parquet").num_rows == 2 * len(QUERIES) * N_DOCS
    assert (tmp_path / "scores.csv").read_text().count("\n") == 1 + 2 * len(QUERIES) * N_DOCS


def test_sql_before_a_run_names_the_stage_and_works_from_a_subdirectory(tmp_path, capsys):
    import subprocess
    import sys

    from conftest import REPO, write_params

    code = cli.main(["sql", "--params", str(write_params(tmp_path)), "SELECT * FROM query_stats"])
    err = capsys.readouterr().err
    assert code == 2 and "no query_stats yet: run the analyze stage first" in err
    proc = subprocess.run([sys.executable, "-m", "pipeline", "sql", "--list"], cwd=REPO / "reports",
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "top_documents" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--name", "top_documents", "--param", "query_id=nope"],
            "top_documents.sql: query_id 'nope' does not exist (known: arithmetic-000",
        ),
        (
            ["--name", "answer_in_topk", "--param", "method=bm25"],
            "answer_in_topk.sql: method 'bm25' does not exist (known: influence)",
        ),
        (["--name", "findings", "--out", "x.txt"], "--out x.txt: expected a .parquet or .csv file"),
        (["SELEC 1"], "sql: Parser Error: syntax error"),
        (["SELECT * FROM nowhere"], "sql: no view 'nowhere' (views: corpus, correlation_groups,"),
        (
            ["--name", "findings", "--out", "/proc/nope/x.parquet"],
            "--out /proc/nope/x.parquet: cannot write: No such file",
        ),
        (["COPY (SELECT 1) TO 'x.csv'"], "read-only: only SELECT statements run here, not COPY"),
        (["CREATE TABLE t AS SELECT 1"], "read-only"),
        (["SELECT * FROM read_csv('/etc/passwd')"], "Permission Error"),
        (["SELECT 1; SELECT 2"], "expected one SQL statement, got 2"),
        (["--name", "nope"], "nope.sql: no such named query (known: accuracy, answer_in_topk, classifier,"),
        (["--name", "top_documents"], "top_documents.sql: missing parameter 'query_id' (give --param query_id=VALUE)"),
        (["--name", "findings", "--param", "k=1"], "findings.sql: unknown parameter 'k'"),
        (["--name", "findings", "--param", "k"], "--param 'k': expected KEY=VALUE"),
        ([], "give either a SELECT statement or --name NAME"),
    ],
)
def test_bad_sql_is_one_line_and_exits_2(planted, capsys, args, message):
    code, out, err = _sql(planted, capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("wherefrom: error: ") and err.count("\n") == 1 and message in err, err


def test_a_short_shard_or_a_missing_baseline_is_a_one_line_error(planted, tmp_path):
    import shutil

    from pipeline.core.errors import WherefromError

    params = planted[0]
    shutil.copytree(params.scores.out_dir, tmp_path / "scores")
    shard = tmp_path / "scores/shard=00000/part.parquet"
    pq.write_table(pq.read_table(shard).slice(0, 10), shard)
    with pytest.raises(
        WherefromError, match=r"shard=00000/part.parquet: 10 rows of segment 'all', expected 5 queries x 10 documents"
    ):
        with open_matrix(tmp_path / "scores", [q[0] for q in QUERIES]):
            pass
    import dataclasses

    with_bm25 = dataclasses.replace(params, baselines=dataclasses.replace(params.baselines, methods=("bm25",)))
    with pytest.raises(WherefromError, match=r"baselines/bm25: no scores for method 'bm25'; run the baselines stage"):
        analyze.methods(with_bm25)


def test_scores_that_miss_documents_are_refused(planted, tmp_path):
    import dataclasses
    import shutil

    from pipeline.core.errors import WherefromError

    params = planted[0]
    shutil.copytree(params.scores.out_dir, tmp_path / "scores")
    shutil.rmtree(tmp_path / "scores/shard=00001")
    partial = dataclasses.replace(params, scores=dataclasses.replace(params.scores, out_dir=str(tmp_path / "scores")),
                                  analysis=dataclasses.replace(params.analysis, out_dir=str(tmp_path / "out")))
    with pytest.raises(WherefromError, match=r"scores cover 136 of the corpus's 200 documents; rerun the scores stage"):
        analyze.run(partial)


def test_sql_piped_into_head_stops_quietly(planted):
    import subprocess
    import sys

    from conftest import REPO

    cmd = (f"'{sys.executable}' -m pipeline sql --params '{planted[3]}' --format csv "
           f"'SELECT * FROM scores, range(20)' | head -n 2")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout.startswith("query_id,segment,doc_id")
