"""Seeded standard normal scores: what any statistic gives by chance."""

from influence.baselines import random_scores
from influence.methods.base import CorpusInputs, Method


def chance(inputs: CorpusInputs):
    return lambda shard: random_scores(inputs.seed, shard.index, len(inputs.rows), len(shard.doc_ids))


METHOD = Method("random", "standard normal scores, seeded per shard", from_corpus=chance)
