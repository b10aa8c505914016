"""The attribution methods, one module each and one line each below. Every stage, table, finding, SQL view
and report section reads the list from here: adding a method is a module and a line (or ``register``).

``influence`` (the paper's EK-FAC) and the methods derived from its pass (``from_gradients``) are computed
by the scores stage in one pass over the corpus; corpus methods by the baselines stage; the index's
(``from_index``) by the index stage, when ``index.score_queries`` asks for them.
"""

from __future__ import annotations

from pathlib import Path

from influence.methods import bm25, chance, ekfac, ekfac_cosine, identity, indexed, relatif
from influence.methods.base import CorpusInputs as CorpusInputs  # for callers: methods.CorpusInputs
from influence.methods.base import IndexInputs as IndexInputs
from influence.methods.base import Method
from pipeline.core.errors import WherefromError

PAPER = "influence"  # the paper's method: the one the findings call "ours"

REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` (a plugin's or a test's) to the registry; its name must be new."""
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


for _module in (ekfac, identity, ekfac_cosine, relatif, bm25, chance, indexed):
    register(_module.METHOD)


def get(name: str, where: str) -> Method:
    """The registered method ``name``; ``where`` (a params key) names the setting in the error."""
    if name not in REGISTRY:
        raise WherefromError(f"{where}: unknown method {name!r} (registered: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def gradient_methods() -> list[str]:
    """The methods the scores stage derives from its pass, besides the paper's."""
    return [m.name for m in REGISTRY.values() if m.from_gradients is not None and m.name != PAPER]


def corpus_methods() -> list[str]:
    return [m.name for m in REGISTRY.values() if m.from_corpus is not None]


def variants(params) -> list[str]:
    """The gradient methods this run derives beside the paper's (``scores.variants``; null = all)."""
    names = gradient_methods() if params.scores.variants is None else list(params.scores.variants)
    for name in names:
        if get(name, "scores.variants").from_gradients is None or name == PAPER:
            raise WherefromError(f"scores.variants: {name!r} is not derived from the scoring pass "
                                 f"(those are: {', '.join(gradient_methods())})")
    return names


def baselines(params) -> list[str]:
    """The corpus methods this run scores (``baselines.methods``; null = all)."""
    names = corpus_methods() if params.baselines.methods is None else list(params.baselines.methods)
    for name in names:
        if get(name, "baselines.methods").from_corpus is None:
            raise WherefromError(f"baselines.methods: {name!r} is not a corpus method "
                                 f"(those are: {', '.join(corpus_methods())})")
    return names


def index_methods() -> list[str]:
    return [m.name for m in REGISTRY.values() if m.from_index is not None]


def from_index(params) -> list[str]:
    """The index methods this run scores: every registered one when ``index.score_queries``, else none."""
    return index_methods() if params.index.score_queries else []


def selected(params) -> list[str]:
    """Every method of this run, the paper's first."""
    return [PAPER, *variants(params), *baselines(params), *from_index(params)]


def stage(name: str) -> str:
    """The stage that writes method ``name``'s scores."""
    method = get(name, "method")
    return "scores" if method.from_gradients else "index" if method.from_index else "baselines"


def scores_dir(params, name: str) -> Path:
    """Where method ``name``'s score shards lie: the paper's in ``scores.out_dir``, each variant in a folder of
    its own there (written by the same pass), each corpus method under ``baselines.out_dir``, each index method
    under ``index.out_dir``/scores."""
    if name == PAPER:
        return Path(params.scores.out_dir)
    return {"scores": Path(params.scores.out_dir), "baselines": Path(params.baselines.out_dir),
            "index": Path(params.index.out_dir) / "scores"}[stage(name)] / name
