"""BM25 of each row's text against each document: what lexical overlap alone finds."""

from influence.baselines import bm25_matrix, bm25_texts
from influence.methods.base import CorpusInputs, Method


def bm25(inputs: CorpusInputs):
    """One matrix over the whole corpus (the IDF is corpus-wide), cut into shards."""
    doc_ids, matrix = bm25_matrix(inputs.corpus_dir, bm25_texts(inputs.rows))
    column = {d: i for i, d in enumerate(doc_ids)}
    return lambda shard: matrix[:, [column[d] for d in shard.doc_ids]]


METHOD = Method("bm25", "BM25 of the query text (prompt and completion, or a segment's text)", from_corpus=bm25)
