"""Baselines in the scores' schema: BM25 of the query text against each document, and seeded chance.

BM25 is what lexical overlap alone finds (influence is not lexical); random scores are what any
statistic gives by chance. Both are analysed exactly like influence.
"""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def bm25_matrix(corpus_dir: str, queries_path: str) -> tuple[list[int], np.ndarray]:
    """BM25 of each query's text (prompt and completion) against every document: doc ids ascending, and
    the ``[queries, documents]`` score matrix in that order.

    It runs in one process, not on Dask: the IDF is a corpus-wide statistic, and bm25s scores a whole
    corpus per query quickly from a sparse index.
    """
    import bm25s

    corpus = ds.dataset(corpus_dir, format="parquet").to_table(columns=["doc_id", "text"]).sort_by("doc_id")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus.column("text").to_pylist(), stopwords="en", show_progress=False),
                    show_progress=False)
    queries = pq.read_table(queries_path, columns=["prompt", "completion"])
    texts = [f"{p} {c}" for p, c in zip(queries.column("prompt").to_pylist(), queries.column("completion").to_pylist())]
    tokens = bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)
    return corpus.column("doc_id").to_pylist(), np.stack([retriever.get_scores(t) for t in tokens])


def random_scores(seed: int, shard_index: int, n_queries: int, n_docs: int) -> np.ndarray:
    """Standard normal scores, seeded per shard: the same whichever worker draws them."""
    return np.random.default_rng([seed, shard_index]).standard_normal((n_queries, n_docs))
