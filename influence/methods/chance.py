"""Seeded standard normal scores: what any statistic gives by chance."""

import numpy as np

from influence.methods.base import CorpusInputs, Method


def random_scores(seed: int, shard_index: int, n_queries: int, n_docs: int) -> np.ndarray:
    """Standard normal scores, seeded per shard: the same whichever worker draws them."""
    return np.random.default_rng([seed, shard_index]).standard_normal((n_queries, n_docs))


def chance(inputs: CorpusInputs):
    return lambda shard: random_scores(inputs.seed, shard.index, len(inputs.rows), len(shard.doc_ids))


METHOD = Method("random", "standard normal scores, seeded per shard", from_corpus=chance, colour="#7f7f7f")
