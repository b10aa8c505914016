"""Explicit Parquet schemas: the contracts between stages (see the README's "Data contracts")."""

import numpy as np
import pyarrow as pa

CORPUS = pa.schema([
    pa.field("doc_id", pa.int64(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("n_tokens", pa.int32(), nullable=False),
    pa.field("fact_ids", pa.list_(pa.string())),  # ground truth: facts this document states (null for real corpora)
    pa.field("procedure", pa.string()),  # ground truth: reasoning task it shows how to do, or null
])

# results/scores/shard=NNNNN/part.parquet (and each baseline's directory): one file per document shard
SCORES = pa.schema([
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("segment", pa.string(), nullable=False),  # all (the whole completion, the paper's) or an answer segment
    pa.field("doc_id", pa.int64(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),  # raw influence; positive = makes the segment more likely
    pa.field("score_per_nat", pa.float32(), nullable=False),  # score / the segment's NLL (nats), as in the paper
])
WHOLE = "all"  # the segment that is the whole completion
ANSWER_SEGMENTS = ("answer", "computed", "copied", "scaffold")  # queries/segments.py gives the rules
SHARD_DIRS = "shard=*"  # every shard of a scores directory, as a glob
SHARD_FILES = f"{SHARD_DIRS}/part.parquet"


def shard_file(index: int) -> str:
    """Where shard ``index`` lies inside a scores directory."""
    return f"shard={index:05d}/part.parquet"


def index_schema(width: int, dtype: str) -> pa.Schema:
    """results/index/shard=NNNNN/part.parquet: each document's projected gradient (``influence/index/store.py``)."""
    return pa.schema([
        pa.field("doc_id", pa.int64(), nullable=False),
        pa.field("gradient", pa.list_(pa.field("item", pa.from_numpy_dtype(np.dtype(dtype)), nullable=False), width),
                 nullable=False),
    ])


QUERIES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field(
            "task", pa.string(), nullable=False
        ),  # factual, arithmetic, slope, linear, factual_control, reasoning_control
        pa.field("kind", pa.string(), nullable=False),  # factual | reasoning
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),  # the model's own greedy completion
        pa.field("answer", pa.string(), nullable=False),
        pa.field("step_answers", pa.list_(pa.string())),
        pa.field("correct", pa.bool_()),  # null: the query gives no answer to check (a user's query may not)
        pa.field("completion_nll", pa.float64(), nullable=False),  # nats, summed over completion tokens
        pa.field("fact_id", pa.string()),
    ]
)

# data/segments.parquet: one row per completion token (queries/segments.py gives the rules)
SEGMENTS = pa.schema([
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("position", pa.int32(), nullable=False),  # the token's index in the completion
    pa.field("token", pa.string(), nullable=False),  # its text
    pa.field("char_start", pa.int32(), nullable=False),  # its characters in the completion
    pa.field("char_end", pa.int32(), nullable=False),
    pa.field("segment", pa.string(), nullable=False),  # answer | computed | copied | scaffold
    pa.field("nll", pa.float64(), nullable=False),  # nats, given the prompt and the tokens before it
    pa.field("runner_up", pa.string(), nullable=False),  # the model's most likely other token there
])

# ---- the analyze stage's tables (results/NAME.parquet); every table has one row set per method
_METHOD = pa.field("method", pa.string(), nullable=False)  # influence | bm25 | random
_SEGMENT = pa.field("segment", pa.string(), nullable=False)  # all (the whole completion) or an answer segment

QUERY_STATS = pa.schema(
    [
        _METHOD,
        _SEGMENT,
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("correct", pa.bool_()),  # null: no answer to check
        pa.field("n_docs", pa.int64(), nullable=False),
        pa.field("total_positive", pa.float64()),  # sum of positive score_per_nat over all documents
        pa.field("total_negative", pa.float64()),
        pa.field("top_k", pa.int64(), nullable=False),  # analysis.top_k capped at 1% of documents
        pa.field("topk_share", pa.float64()),  # share of total_positive in the top-k documents
        pa.field("alpha", pa.float64()),  # power-law exponent of the top tail_k scores vs rank
        pa.field("alpha_se", pa.float64()),
        pa.field("tail_points", pa.int64()),
        pa.field("answer_in_topk", pa.bool_()),  # the final answer appears (as a number, if one) in a top-k document
        pa.field("step_answer_in_topk", pa.bool_()),  # an intermediate step's answer does
        pa.field(
            "answer_in_context_topk", pa.bool_()
        ),  # a top-k document states the answer with the question's numbers and names
        pa.field(
            "working_share", pa.float64()
        ),  # share of the top-k positive influence from documents that show working (text)
        pa.field("fact_recall", pa.float64()),  # share of the documents stating the query's fact that are in its top-k
        pa.field("neighbour_r", pa.float64()),  # mean Pearson r with its most correlated other queries
        pa.field("procedural_score", pa.float64()),
        pa.field("predicted", pa.string(), nullable=False),  # procedural | document_specific
        pa.field("confidence", pa.float64()),
        pa.field(
            "expected", pa.string(), nullable=False
        ),  # by kind: reasoning -> procedural, factual -> document_specific
        pa.field("truth", pa.string()),  # generated world: what the query needs (null for controls and real corpora)
    ]
)

TOP_MASS = pa.schema([
    _METHOD,
    _SEGMENT,
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("percent", pa.float64(), nullable=False),
    pa.field("n_docs", pa.int64(), nullable=False),  # ceil(percent% of the documents)
    pa.field("top_sum", pa.float64()),  # sum of the positive scores among them
    pa.field("top_share", pa.float64()),  # top_sum / total_positive
])

TOP_DOCS = pa.schema([
    _METHOD,
    _SEGMENT,
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("end", pa.string(), nullable=False),  # top (most positive first) | bottom (most negative first)
    pa.field("rank", pa.int64(), nullable=False),
    pa.field("doc_id", pa.int64(), nullable=False),
    pa.field("score_per_nat", pa.float64(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("in_top_k", pa.bool_(), nullable=False),  # end = top and rank <= top_k
    pa.field("mentions_answer", pa.bool_(), nullable=False),
    pa.field("mentions_step_answer", pa.bool_(), nullable=False),
    pa.field("answers_query", pa.bool_(), nullable=False),  # states the answer with the question's numbers and names
    pa.field("label", pa.string(), nullable=False),  # label_truth where the corpus has it, else label_text
    pa.field("label_truth", pa.string()),
    pa.field("label_text", pa.string(), nullable=False),
    pa.field("states_query_fact", pa.bool_(), nullable=False),
    pa.field("states_a_fact", pa.bool_(), nullable=False),
    pa.field("procedure", pa.string()),
])

CORRELATIONS = pa.schema([
    _METHOD,
    _SEGMENT,
    pa.field("query_a", pa.string(), nullable=False),
    pa.field("query_b", pa.string(), nullable=False),
    pa.field("task_a", pa.string(), nullable=False),
    pa.field("task_b", pa.string(), nullable=False),
    pa.field("group", pa.string(), nullable=False),  # within TASK, across reasoning tasks, KIND vs its control, ...
    pa.field("pearson", pa.float64()),  # over all documents
    pa.field("spearman", pa.float64()),
    pa.field("pearson_cells", pa.float64()),  # of the queries' summed scores per (document category x source) cell
    pa.field("same_choice", pa.bool_()),  # both completions' largest-NLL token and its runner-up are the same
])

CORRELATION_GROUPS = pa.schema([
    _METHOD,
    _SEGMENT,
    pa.field("group", pa.string(), nullable=False),  # within TASK, across reasoning tasks, KIND vs its control, ...
    pa.field("n_pairs", pa.int64(), nullable=False),
    pa.field("mean_pearson", pa.float64()),
    pa.field("sd_pearson", pa.float64()),
    pa.field("max_pearson", pa.float64()),
    pa.field("mean_spearman", pa.float64()),
    pa.field("mean_pearson_cells", pa.float64()),  # a coarse, procedure-level r: see correlations.pearson_cells
    pa.field("mean_pearson_same_choice", pa.float64()),  # pairs whose dominant token choice is the same
    pa.field("mean_pearson_other_choice", pa.float64()),  # and all other pairs
    pa.field("t_stat", pa.float64()),  # one-sample t-test of Fisher-z(r) against 0
    pa.field("p_value", pa.float64()),
])

ENRICHMENT = pa.schema([
    _METHOD,
    _SEGMENT,
    pa.field("end", pa.string(), nullable=False),
    pa.field("k", pa.int64(), nullable=False),
    pa.field("level", pa.string(), nullable=False),  # task | kind
    pa.field("group", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("share", pa.float64(), nullable=False),  # share of the group's top (bottom) k documents
    pa.field("corpus_share", pa.float64(), nullable=False),
    pa.field("enrichment", pa.float64(), nullable=False),  # share / corpus_share; 1 = as in the corpus
])

PROCEDURE_SHARE = pa.schema([
    _METHOD,
    _SEGMENT,
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("category", pa.string(), nullable=False),  # own_procedure, other_procedure, own_fact, other_fact, filler
    pa.field("n_docs", pa.int64(), nullable=False),  # of the top-k
    pa.field("share", pa.float64()),  # of the top-k positive influence
])

# results/findings.parquet: one row per (finding, segment, method). A finding holds, does not hold, or is
# not testable on this run (a source absent, too few queries of a kind), which never counts as a pass.
HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable"
_FINDING = [
    pa.field("finding", pa.string(), nullable=False),
    pa.field(
        "segment", pa.string(), nullable=False
    ),  # all: the paper's finding; else a decomposition by answer segment
    pa.field("claim", pa.string(), nullable=False),
    pa.field("statistic", pa.string(), nullable=False),
    pa.field("paper", pa.string(), nullable=False),  # the paper's number(s), as published
    pa.field("paper_7b", pa.float64()),
    pa.field("paper_35b", pa.float64()),
    _METHOD,
]
FINDINGS = pa.schema([
    *_FINDING,
    pa.field("value", pa.float64()),  # the statistic on this method's scores (null where it cannot be computed)
    pa.field("verdict", pa.string(), nullable=False),  # holds | does not hold | not testable
    pa.field("test", pa.string(), nullable=False),  # the test, decided at p < 0.05
    pa.field("p_value", pa.float64()),  # null when not testable
    pa.field("reason", pa.string()),  # why not testable (null otherwise)
])

# make seeds: every run's findings, and each finding over the runs
FINDINGS_BY_SEED = pa.schema([pa.field("seed", pa.int64(), nullable=False), *FINDINGS])
FINDING_SPREAD = pa.schema([
    *_FINDING,
    pa.field("n_runs", pa.int64(), nullable=False),
    pa.field("n_valued", pa.int64(), nullable=False),  # runs where the statistic could be computed
    pa.field("mean", pa.float64()),
    pa.field("sd", pa.float64()),  # across runs (n - 1 in the denominator)
    pa.field("ci_low", pa.float64()),  # 95% t interval of the mean over runs
    pa.field("ci_high", pa.float64()),
    pa.field("n_testable", pa.int64(), nullable=False),
    pa.field("n_holds", pa.int64(), nullable=False),  # "holds in k of n runs": n_holds of n_testable
])

# The analyze stage's tables, each written to results/NAME.parquet and seen as a view of that name.
ANALYSIS = {"query_stats": QUERY_STATS, "top_mass": TOP_MASS, "top_docs": TOP_DOCS, "correlations": CORRELATIONS,
            "correlation_groups": CORRELATION_GROUPS, "enrichment": ENRICHMENT, "procedure_share": PROCEDURE_SHARE}
RESULTS = {**ANALYSIS, "findings": FINDINGS}
STUDY = {"findings_by_seed": FINDINGS_BY_SEED, "finding_spread": FINDING_SPREAD}

# One retrain (influence/retraining/retrains.py: an LDS subset, a leave-k-out arm or a counterfactual arm) measured
# on every query.
RETRAIN = pa.schema([
    pa.field("retrain", pa.string(), nullable=False),  # its name: lds-NNNNN, leave-K-METHOD, or a counterfactual METHOD
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("nll", pa.float64(), nullable=False),  # nats, float64: the query's completion on the retrained model
    pa.field("docs_removed", pa.int64(), nullable=False),
    pa.field("tokens_removed", pa.int64(), nullable=False),  # the removed documents' tokens, as training masked them
    pa.field("completion", pa.string()),  # the greedy answer on the retrained model (counterfactual arms; else null)
])

# make validate: one row per (method, test, setting, query). `value` is the test's per-query number: LDS the
# Spearman r across retrains; leave-k-out the completion's NLL after - before (positive: the removal hurt it).
VALIDATION = pa.schema([
    _METHOD,
    pa.field("test", pa.string(), nullable=False),  # lds | leave_k_out | tail_patch_sgd | tail_patch_adamw
    pa.field("setting", pa.string(), nullable=False),  # the test's parameters, e.g. "k=10" or "M=50, fraction=0.5"
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("value", pa.float64()),  # null where the test has no number for this query (a constant column)
    pa.field("docs_removed", pa.int64()),  # leave-k-out: the documents the arm went without (every group's)
    pa.field("tokens_removed", pa.int64()),  # and their tokens: long documents remove more training signal
    pa.field("seed", pa.int64(), nullable=False),  # the training draw: its run's training seed (pretrain.seed)
])

# results/counterfactual.parquet (`make validate`): each query's completion on a model retrained without
# one method's removal sets; one row per (method, query)
COUNTERFACTUAL = pa.schema([
    _METHOD,
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("removal_group", pa.string()),  # whose removal set targets this query (null for the controls)
    pa.field("group_docs_removed", pa.int64(), nullable=False),  # that set's size (counterfactual.docs_per_group)
    pa.field("docs_removed", pa.int64(), nullable=False),  # all documents the retrain went without (every group's)
    pa.field("tokens_removed", pa.int64(), nullable=False),  # and their tokens, masked out of training
    pa.field("nll_before", pa.float64(), nullable=False),  # nats, float64: the original model's own completion
    pa.field("nll_after", pa.float64(), nullable=False),  # the same completion on the retrained model
    pa.field("delta_nll", pa.float64(), nullable=False),  # after - before: positive = the removal hurt it
    pa.field("correct_before", pa.bool_()),  # null: no answer to check
    pa.field("correct_after", pa.bool_()),  # the retrained model's greedy completion is right
    pa.field("completion_after", pa.string(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),  # the training draw: its run's training seed (pretrain.seed)
])
