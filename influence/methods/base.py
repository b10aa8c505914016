"""What an attribution method is: a name, one line on what it measures, and how its scores are made.

A method is one of four kinds:
- derived from the scoring pass's gradients (``from_gradients``: EK-FAC scores, gradient dot products and
  self-influence, ``influence/scoring/variants.py``), so that it costs no second pass over the corpus;
- scored from the corpus and the query texts alone (``from_corpus``: BM25, chance);
- read from the gradient index (``from_index``: ``influence/index/store.py``), by the index stage;
- derived from the training run itself (``from_training``: MAGIC's metagradients, ``influence/exact``), which
  replays the run, so the pipeline computes it only on runs small enough to replay (``make validate``'s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the registry is read by the analysis and `wherefrom sql`, which need no torch
    from influence.exact.attribution import Replay
    from influence.index.asker import Asker
    from influence.measurements import Measurements
    from influence.scoring.variants import GradientScores
    from influence.shards import Shard


@dataclass(frozen=True)
class CorpusInputs:
    """What a corpus method sees: the corpus Parquet, the score rows (texts and segments) and the run's seed."""

    corpus_dir: str
    rows: Measurements
    seed: int


@dataclass(frozen=True)
class IndexInputs:
    """What an index method sees: the run's model, factors and index, loaded, and the score rows."""

    asker: Asker
    rows: Measurements


ShardScores = Callable[["Shard"], np.ndarray]


@dataclass(frozen=True)
class Method:
    name: str
    about: str  # what it measures, in one line
    # [rows, docs] scores of one shard from its gradient quantities (rows already expanded to every segment)
    from_gradients: Callable[[GradientScores], np.ndarray] | None = None
    # given the run's inputs once, a function from a shard to its [rows, docs] scores
    from_corpus: Callable[[CorpusInputs], ShardScores] | None = None
    # the same, from the gradient index
    from_index: Callable[[IndexInputs], ShardScores] | None = None
    # [rows, docs] scores of a block of query items (influence/data.py's) from the replayed training run
    from_training: Callable[[Replay, list[tuple]], np.ndarray] | None = None

    colour: str | None = None  # its colour in the report's figures (None: one of a palette)

    def __post_init__(self) -> None:
        if [self.from_gradients, self.from_corpus, self.from_index, self.from_training].count(None) != 3:
            raise ValueError(f"method {self.name!r}: give exactly one of from_gradients, from_corpus, from_index and "
                             "from_training")

    @property
    def kind(self) -> str:
        """Where its scores come from: ``gradients`` (the scoring pass), ``corpus``, ``index`` or ``training``."""
        return ("gradients" if self.from_gradients else "corpus" if self.from_corpus else
                "index" if self.from_index else "training")


def per_self_influence(scores: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """``scores / norms`` where a norm is positive; 0 where it is not (a document with no gradient, a single
    token, influences nothing)."""
    return np.divide(scores, norms, out=np.zeros_like(scores), where=norms > 0)
