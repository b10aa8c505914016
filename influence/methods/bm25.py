"""BM25 of each row's text against each document: what lexical overlap alone finds (influence is not lexical)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow.dataset as ds

from influence.methods.base import CorpusInputs, Method
from pipeline.core.schemas import WHOLE

if TYPE_CHECKING:
    from influence.measurements import Measurements


def bm25_matrix(corpus_dir: str, texts: list[str]) -> tuple[list[int], np.ndarray]:
    """BM25 of each query text against every document: doc ids ascending, and the ``[texts, documents]``
    score matrix in that order.

    It runs in one process, not on Dask: the IDF is a corpus-wide statistic, and bm25s scores a whole
    corpus per query quickly from a sparse index.
    """
    import bm25s

    corpus = ds.dataset(corpus_dir, format="parquet").to_table(columns=["doc_id", "text"]).sort_by("doc_id")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus.column("text").to_pylist(), stopwords="en", show_progress=False),
                    show_progress=False)
    tokens = bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)
    # a text with no term BM25 indexes (a segment of single digits or stop words) matches nothing: all zeros
    rows = [retriever.get_scores(t) if t else np.zeros(corpus.num_rows) for t in tokens]
    return corpus.column("doc_id").to_pylist(), np.stack(rows)


def bm25_texts(m: Measurements) -> list[str]:
    """What BM25 matches for each score row: the prompt and completion for ``all`` (the query as a reader
    sees it), a segment's own characters for a segment (the tokens it measures)."""
    index = m.query_index()
    return [f"{m.prompts[index[qid]]} {m.completions[index[qid]]}" if segment == WHOLE else m.segment_text[qid, segment]
            for qid, segment in m.keys]


def bm25(inputs: CorpusInputs):
    """One matrix over the whole corpus (the IDF is corpus-wide), cut into shards."""
    doc_ids, matrix = bm25_matrix(inputs.corpus_dir, bm25_texts(inputs.rows))
    column = {d: i for i, d in enumerate(doc_ids)}
    return lambda shard: matrix[:, [column[d] for d in shard.doc_ids]]


METHOD = Method("bm25", "BM25 of the query text (prompt and completion, or a segment's text)", from_corpus=bm25,
                colour="#8c564b")
