"""The one list of pipeline stages: each stage's name, what it does, the params sections it reads, and whether it
loads a model. The CLI's sub-commands and help, the `params` stage's resolved files, the steps of a seed's run
and `wherefrom sql`'s hints all read it; ``tests/test_layout.py`` holds it to the dvc.yaml files and to
``pipeline/stages/``, where each stage is the module of the same name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import Params
from pipeline.core.errors import WherefromError
from pipeline.core.schemas import RESULTS, STUDY


@dataclass(frozen=True)
class Stage:
    name: str  # its DVC stage, its `wherefrom` sub-command and its module under pipeline/stages/
    about: str  # what it does -> where it writes: the CLI's help
    # What it reads, after profile overrides. The `params` stage writes these to one JSON file per stage, and each
    # stage depends on its file: DVC then reruns a stage only when a value it uses changes, whichever profile that
    # value came from.
    sections: tuple[str, ...]
    torch: bool = True  # it loads a model: the CLI pins torch's threads first (seconds of imports otherwise spared)
    make: str | None = None  # outside `dvc repro`'s default run: the make target that runs it, and why
    writes: str | None = None  # the kind of method whose scores it writes (influence/methods: Method.kind)
    views: tuple[str, ...] = ()  # the `wherefrom sql` views over what it writes

    @property
    def module(self) -> str:
        return f"pipeline.stages.{self.name}"

    @property
    def how_to_run(self) -> str:
        return self.make or f"wherefrom {self.name}, or dvc repro"


_VALIDATE = "make validate: it retrains the model"
_SEEDS = "make seeds: it trains one model per seed"

STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("params", "resolve the selected profile into each stage's settings -> data/params/", (), torch=False),
    Stage("corpus", "generate the world's documents with ground truth -> data/corpus/", ("seed", "corpus"),
          torch=False, views=("corpus",)),
    Stage("pretrain", "train a tokenizer and a small causal LM on the corpus (or adopt model.name_or_path) "
          "-> models/lm/", ("seed", "model", "pretrain")),
    Stage("probe", "ask the query suites, record completions, NLL and correctness -> data/queries.parquet",
          ("seed", "corpus", "model", "queries"), views=("queries", "segments")),
    Stage("factors", "fit the EK-FAC curvature of the model on the corpus -> results/factors/",
          ("seed", "corpus", "model", "influence")),
    Stage("scores", "influence of every document on every query, sharded on Dask -> results/scores/",
          ("seed", "corpus", "model", "influence", "scores"), writes="gradients", views=("scores", "method_scores")),
    Stage("index", "every document's projected gradient, for `wherefrom ask` -> results/index/",
          ("seed", "corpus", "model", "influence", "index"), writes="index"),
    Stage("baselines", "the corpus methods' scores in the same schema -> results/baselines/METHOD/",
          ("seed", "scores", "baselines"), writes="corpus"),
    Stage("exact", "each training method's exact scores by replaying the run (exact.methods: none in the demo) "
          "-> results/exact/METHOD/", ("seed", "corpus", "model", "pretrain", "queries", "scores", "exact"),
          writes="training"),
    Stage("analyze", "the paper's statistics, the classifier and the findings -> results/*.parquet, metrics.json",
          ("baselines", "index", "exact", "analysis"), torch=False, views=tuple(RESULTS)),
    Stage("report", "execute the report notebook and render it -> reports/out/procedural_vs_factual.html",
          ("baselines", "index", "exact", "analysis", "report", "counterfactual"), torch=False),
    Stage("counterfactual", "retrain without each method's top documents, measure the queries (make validate) "
          "-> results/counterfactual.parquet",
          ("seed", "corpus", "model", "pretrain", "queries", "analysis", "counterfactual", "validation", "study"),
          make=_VALIDATE, views=("counterfactual",)),
    # make validate's retraining tests: a run of their own (validation.profile's overrides on every section)
    Stage("lds", "LDS and leave-k-out of every method, on retrains of a small run of their own (make validate) "
          "-> results/validation/lds.parquet",
          ("seed", "corpus", "model", "pretrain", "queries", "influence", "scores", "baselines", "index", "exact",
           "analysis", "validation"), make=_VALIDATE,
          views=("validation", "validation_findings", "validation_finding_spread")),
    Stage("tail_patch", "one more training step on each method's top documents: the completion's rise "
          "(make validate) -> results/validation/tail_patch.parquet",
          ("seed", "corpus", "model", "queries", "scores", "baselines", "index", "validation", "study"),
          make=_VALIDATE),
    # make seeds: one seed's run (its own paths and pretrain.seed are set per seed), then the study's analysis
    Stage("seed", "one run of the seed study: pretrain.seed = SEED, then probe, factors, scores, baselines "
          "(make seeds) -> results/seeds/seed=SEED/",
          ("seed", "corpus", "model", "pretrain", "queries", "influence", "scores", "baselines"), make=_SEEDS),
    Stage("study", "analyse every seed's run, each finding over the seeds (make seeds) -> results/seed_study/",
          ("seed", "corpus", "queries", "baselines", "analysis", "study"), torch=False, make=_SEEDS,
          views=tuple(STUDY)),
)}

RESOLVED_DIR = Path("data/params")


def get(name: str) -> Stage:
    if name not in STAGES:
        raise WherefromError(f"no stage {name!r} (stages: {', '.join(STAGES)})")
    return STAGES[name]


def with_settings() -> list[str]:
    """The stages that read params sections: one resolved file each (``data/params/STAGE.json``)."""
    return [name for name, stage in STAGES.items() if stage.sections]


def of_one_draw(settings: dict[str, Any]) -> dict[str, Any]:
    """A stage's resolved settings less the list of training draws (``validation.seeds``, the ``study`` section): what
    one draw's result depends on, so that naming another draw redoes none already done."""
    out = {k: v for k, v in settings.items() if k != "study"}
    if "validation" in out:
        out["validation"] = {k: v for k, v in out["validation"].items() if k != "seeds"}
    return out


def resolved(params: Params, stage: str) -> dict[str, Any]:
    full = dataclasses.asdict(params)
    out = {section: full[section] for section in get(stage).sections}
    if stage == "lds" and params.validation.profile:  # the profile it reads: another profile's edit reruns nothing
        out["validation_profile"] = {params.validation.profile: params.profiles.get(params.validation.profile)}
    if stage == "seed":  # each run of the study sets its own training seed: the main run's is not its setting
        out["pretrain"] = {k: v for k, v in out["pretrain"].items() if k != "seed"}
    return out
