"""The gradient index's estimate of influence: each query's preconditioned gradient, projected, against every
document's stored projection (``influence/index/store.py``). Scored beside the exact EK-FAC scores so that
every finding says what the compressed index keeps of them."""

from __future__ import annotations

from influence.methods.base import IndexInputs, Method


def from_index(inputs: IndexInputs):
    """One ``[rows, documents]`` matrix from the loaded index (a matrix product per query), cut into shards."""
    matrix = inputs.asker.scores(inputs.rows)
    column = {int(d): i for i, d in enumerate(inputs.asker.index.doc_ids)}
    return lambda shard: matrix[:, [column[d] for d in shard.doc_ids]]


METHOD = Method("index", "EK-FAC influence estimated from the gradient index (index.projection, index.k)",
                from_index=from_index)
