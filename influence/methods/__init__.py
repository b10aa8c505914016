"""The attribution methods, one module each and one line each below. Every stage, table, finding, SQL view
and report section reads the list from here: adding a method is a module and a line (or ``register``).

``influence`` (the paper's EK-FAC) and the methods derived from its pass (``from_gradients``) are computed
in one pass over the corpus (``influence/scoring``); corpus methods from the texts alone; the index's
(``from_index``) from the gradient index; the training run's (``from_training``) by replaying it
(``influence/exact``). Which of them a pipeline run computes, and where their scores lie, is the pipeline's
(``pipeline/runs/methods.py``).

Four methods have a part of their own in the analysis, named here by their modules rather than spelled out
elsewhere: the paper's method, the lexical baseline (what overlap of words alone gives), chance, and exact attribution.
"""

from __future__ import annotations

from influence.methods import bm25, chance, ekfac, ekfac_cosine, identity, indexed, magic, relatif
from influence.methods.base import CorpusInputs as CorpusInputs  # for callers: methods.CorpusInputs
from influence.methods.base import IndexInputs as IndexInputs
from influence.methods.base import Method
from pipeline.core.errors import WherefromError

PAPER = ekfac.METHOD.name  # the paper's method: the one the findings call "ours"
EXACT = magic.METHOD.name  # exact attribution: the yardstick the approximate methods are held to
LEXICAL = bm25.METHOD.name  # word overlap with the query: what influence must do better than to mean more
CHANCE = chance.METHOD.name  # seeded random scores

REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` (a plugin's or a test's) to the registry; its name must be new."""
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


for _module in (ekfac, identity, ekfac_cosine, relatif, bm25, chance, indexed, magic):
    register(_module.METHOD)


def get(name: str, where: str) -> Method:
    """The registered method ``name``; ``where`` (a params key) names the setting in the error."""
    if name not in REGISTRY:
        raise WherefromError(f"{where}: unknown method {name!r} (registered: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def gradient_methods() -> list[str]:
    """The methods derived from the scoring pass, besides the paper's."""
    return [m.name for m in REGISTRY.values() if m.from_gradients is not None and m.name != PAPER]


def corpus_methods() -> list[str]:
    return [m.name for m in REGISTRY.values() if m.from_corpus is not None]


def index_methods() -> list[str]:
    return [m.name for m in REGISTRY.values() if m.from_index is not None]


def training_methods() -> list[str]:
    return [m.name for m in REGISTRY.values() if m.from_training is not None]
