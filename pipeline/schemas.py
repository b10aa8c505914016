"""Explicit Parquet schemas: the contracts between stages (see the README's "Data contracts")."""

import pyarrow as pa

CORPUS = pa.schema([
    pa.field("doc_id", pa.int64(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("n_tokens", pa.int32(), nullable=False),
    pa.field("fact_ids", pa.list_(pa.string())),  # ground truth: facts this document states (null for real corpora)
    pa.field("procedure", pa.string()),  # ground truth: reasoning task it shows how to do, or null
])

QUERIES = pa.schema([
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),  # factual, arithmetic, slope, linear, factual_control, reasoning_control
    pa.field("kind", pa.string(), nullable=False),  # factual | reasoning
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("completion", pa.string(), nullable=False),  # the model's own greedy completion
    pa.field("answer", pa.string(), nullable=False),
    pa.field("step_answers", pa.list_(pa.string())),
    pa.field("correct", pa.bool_(), nullable=False),
    pa.field("completion_nll", pa.float64(), nullable=False),  # nats, summed over completion tokens
    pa.field("fact_id", pa.string()),
])
