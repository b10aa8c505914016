"""Typed configuration for every stage, filled from ``params.yaml``.

``params.yaml`` holds the demo values; ``profile`` picks a set of overrides from ``profiles`` (``test``
for seconds-long runs, ``gpu`` for real models). Validation is strict on purpose: an unknown key, a
wrong type or a non-positive count stops the run with one line naming the key, before any stage
writes anything.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass

from pipeline.core.errors import WherefromError

# Strict per field (not per model): no "5" for 5 or 5.0 for 5, but sections may be plain mappings.
_STRICT = ConfigDict(extra="forbid", frozen=True)


@dataclass(config=_STRICT)
class RuntimeConfig:
    """How a run executes, not what it computes: no stage depends on this section, so changing it reruns nothing."""

    threads: StrictInt = Field(
        0, ge=0, description="torch threads; 0 = OMP_NUM_THREADS if set, else one per core. "
                            "Oversubscription slows CPU runs ~30x."
    )
    checkpoint_every: StrictInt = Field(500, ge=0, description="training saves its whole state every N steps, so "
                                        "a killed pretrain or retrain resumes where it was; 0 = never")


@dataclass(config=_STRICT)
class CorpusConfig:
    out_dir: StrictStr = Field("data/corpus", description="where the corpus Parquet files go")
    n_entities: StrictInt = Field(
        16, gt=0, description="fictional entities; each kind has 2-3 attributes, one fact each"
    )
    fact_doc_repeats: StrictInt = Field(
        16, gt=0, description="paraphrased copies of each fact document (wiki, trivia, narrative)"
    )
    procedure_docs_per_task: StrictInt = Field(600, gt=0, description="procedure documents per reasoning task")
    examples_per_procedure_doc: StrictInt = Field(3, gt=0, description="worked problems in one procedure document")
    reading_docs: StrictInt = Field(
        3000, gt=0, description="questions answered from their own context (procedure 'reading')"
    )
    filler_docs: StrictInt = Field(2000, gt=0, description="documents that state no fact and show no procedure")
    docs_per_file: StrictInt = Field(50_000, gt=0, description="documents per Parquet file")
    style: Literal["terse", "prose"] = Field("prose", description="terse: one template per document format; prose: "
                                             "each step and fact said in one of several ways (pipeline/world/prose.py)")
    # A real corpus instead of the generated world:
    dataset: StrictStr | None = Field(None, description="a Hugging Face dataset id, or local .parquet/.jsonl files "
                                      "(a path or glob); null = generate the world")
    dataset_config: StrictStr | None = Field(None, description="the dataset's configuration name, if it has several")
    split: StrictStr = Field("train", description="the split to read (hub datasets)")
    text_column: StrictStr = Field("text")
    id_column: StrictStr | None = Field(None, description="integer document ids; null = numbered in reading order")
    source_column: StrictStr | None = Field(None, description="e.g. the Pile's subset name; null = no source")
    max_docs: StrictInt = Field(0, ge=0, description="read at most this many documents; 0 = all")
    empty_docs: Literal["skip", "error"] = Field(
        "skip", description="empty documents: skipped and counted, or an error"
    )
    long_docs: Literal["window", "truncate", "chunk"] = Field(
        "window", description="documents longer than model.context: window = every token attributed, in "
                              "consecutive windows whose scores add up; truncate = only the first model.context "
                              "tokens; chunk = split into pieces of chunk_tokens, each its own document")
    chunk_tokens: StrictInt = Field(512, gt=0, description="words, digits and punctuation runs per chunk")


@dataclass(config=_STRICT)
class ModelConfig:
    name_or_path: StrictStr | None = Field(
        None, description="a local directory or hub id to use instead of pretraining"
    )
    dir: StrictStr = Field("models/lm", description="where the pretrain stage saves (or points to) the model")
    vocab_size: StrictInt = Field(1000, gt=0, description="byte-level BPE vocabulary, digits split")
    n_layers: StrictInt = Field(4, gt=0)
    hidden_size: StrictInt = Field(128, gt=0)
    intermediate_size: StrictInt = Field(384, gt=0, description="MLP width (the layers influence tracks by default)")
    n_heads: StrictInt = Field(4, gt=0)
    context: StrictInt = Field(256, gt=0, description="training window and maximum document length, in tokens")


@dataclass(config=_STRICT)
class PretrainConfig:
    seed: StrictInt | None = Field(None, description="the training run's seed (model initialisation and batch order); "
                                   "null = the world's seed. The seed study varies it with the world fixed")
    steps: StrictInt = Field(
        8000, gt=0, description="optimizer steps; steps and fact repetition matter more than model size"
    )
    batch_size: StrictInt = Field(4, gt=0)
    lr: StrictFloat = Field(3e-3, gt=0, description="peak learning rate, cosine decay to 10%")
    warmup_steps: StrictInt = Field(100, ge=0)
    weight_decay: StrictFloat = Field(0.1, ge=0)
    log_every: StrictInt = Field(50, gt=0)
    metrics: StrictStr = Field("metrics/pretrain.json", description="model size and training loss, a DVC metrics file")
    loss_curve: StrictStr = Field("metrics/pretrain_loss.csv", description="the loss every log_every steps, a DVC plot")


@dataclass(config=_STRICT)
class QueriesConfig:
    out: StrictStr = Field("data/queries.parquet")
    segments: StrictStr = Field(
        "data/segments.parquet", description="every completion token: its answer segment and NLL"
    )
    metrics: StrictStr = Field("metrics/probe.json", description="per-task accuracy, a DVC metrics file")
    file: StrictStr | None = Field(None, description="a user query file (.jsonl or .parquet) instead of the suites")
    factual: StrictInt = Field(40, gt=0)
    arithmetic: StrictInt = Field(20, gt=0)
    slope: StrictInt = Field(20, gt=0)
    linear: StrictInt = Field(20, gt=0)
    factual_control: StrictInt = Field(10, gt=0)
    reasoning_control: StrictInt = Field(10, gt=0)
    max_new_tokens: StrictInt = Field(128, gt=0, description="greedy completion length limit")
    batch_size: StrictInt = Field(32, gt=0)


@dataclass(config=_STRICT)
class InfluenceConfig:
    """The curvature (factors stage); the paper's settings are the defaults."""

    factors_dir: StrictStr = Field("results/factors")
    strategy: Literal["ekfac", "kfac", "diagonal", "identity"] = Field(
        "ekfac", description="curvature approximation; identity = plain gradient dot products")
    tracked: Literal["mlp", "all_linear"] = Field("mlp", description="which nn.Linear layers are attributed")
    damping: StrictFloat | None = Field(None, gt=0, description="null = 0.1 x mean eigenvalue per layer (the paper)")
    factor_docs: StrictInt = Field(0, ge=0, description="documents to fit the curvature on; 0 = the whole corpus")
    batch_size: StrictInt = Field(16, gt=0)
    shard_size: StrictInt = Field(1000, gt=0, description="documents per factor shard: one Dask task per pass, "
                                                          "one file of partial sums; a killed fit resumes by shard")
    fitter: Literal["wherefrom", "kronfluence"] = Field(
        "wherefrom", description="whose covariance and lambda passes fit EK-FAC/K-FAC; the same factors either way")


@dataclass(config=_STRICT)
class ScoresConfig:
    out_dir: StrictStr = Field("results/scores")
    method: StrictStr = Field(
        "influence", description="influence (the paper's EK-FAC, with its variants), or a corpus or index method of "
        "influence/methods in the same schema (the baselines and index stages set it)")
    variants: tuple[StrictStr, ...] | None = Field(
        None, description="methods derived from the same pass (the registry's gradient methods, influence/methods), "
        "each in its own directory under out_dir; null = every registered one, [] = none")
    shard_size: StrictInt = Field(1000, gt=0, description="documents per shard: one Dask task, one Parquet file")
    batch_size: StrictInt = Field(
        64,
        gt=0,
        description="document windows per backward pass; each pass streams every "
        "preconditioned query gradient once, so larger batches amortise it",
    )
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="autocast dtype of the scoring passes")
    metrics: StrictStr = Field("metrics/scores.json", description="documents scored and docs/s, a DVC metrics file")
    segments: StrictBool = Field(True, description="also score each answer segment (queries.segments) of every "
                                                   "completion; the query gradients held grow with the rows")


@dataclass(config=_STRICT)
class IndexConfig:
    """The gradient index (``wherefrom index``, ``wherefrom ask``): each document's projected gradient, stored once."""

    out_dir: StrictStr = Field("results/index")
    projection: Literal["random", "eigen", "whitened"] = Field(
        "whitened", description="random: LoGra's seeded random projection per layer side; eigen: the k EK-FAC "
        "eigenvectors of most curvature; whitened: random rows on EK-FAC-whitened gradients "
        "(influence/index/projection.py; docs/engineering.md compares them)")
    k: StrictInt = Field(32, gt=0, description="projected size per side of each tracked layer: k x k numbers per "
                                               "layer and document")
    seed: StrictInt = Field(0, description="the random projection's seed")
    dtype: Literal["float16", "float32"] = Field("float16", description="how the rows are stored (scored in float32)")
    shard_size: StrictInt = Field(1000, gt=0, description="documents per shard: one Dask task, one Parquet file")
    batch_size: StrictInt = Field(64, gt=0, description="document windows per backward pass")
    top: StrictInt = Field(10, gt=0, description="documents `wherefrom ask` prints")
    score_queries: StrictBool = Field(
        True, description="the index stage also scores the run's queries from the index, as method `index` beside "
        "the exact ones in the analysis, report and SQL views")
    metrics: StrictStr = Field("metrics/index.json", description="documents, seconds and bytes per document")


@dataclass(config=_STRICT)
class BaselinesConfig:
    """Scores computed beside influence, in its schema, and analysed the same way."""

    methods: tuple[StrictStr, ...] | None = Field(
        None, description="corpus methods of influence/methods (scored from the texts alone: lexical overlap, "
        "chance); null = every registered one")
    out_dir: StrictStr = Field("results/baselines", description="one scores directory per method")


@dataclass(config=_STRICT)
class ExactConfig:
    """Exact attribution through the training run (influence/exact: MAGIC), analysed beside the other methods. Each
    query row costs a reverse pass through every training step, so only make validate's small run computes it."""

    methods: tuple[StrictStr, ...] | None = Field(
        None, description="training methods of influence/methods (magic) this run computes; null = none")
    out_dir: StrictStr = Field("results/exact", description="one scores directory per method")
    block: StrictInt = Field(16, gt=0, description="query rows whose adjoints share one replay of the run "
                             "(a Dask task)")
    every: StrictInt = Field(0, ge=0, description="the state is kept every N steps for the reverse pass; "
                             "0 = sqrt(steps)")
    segments: StrictBool = Field(False, description="each answer segment as a row of its own (each row costs a reverse "
                                 "pass); false: the whole completion only")
    metrics: StrictStr = Field("metrics/exact.json", description="each method's rows, blocks and seconds")


@dataclass(config=_STRICT)
class AnalysisConfig:
    """The analyze stage: the paper's statistics, the classifier and the baselines beside influence."""

    out_dir: StrictStr = Field("results", description="where the analysis tables and metrics.json go")
    top_k: StrictInt = Field(
        500, gt=0, description="answer in top-k, recall, labels, procedure share (the paper's 500)"
    )
    tail_k: StrictInt = Field(500, gt=0, description="top scores the power law is fitted to")
    top_percents: tuple[StrictFloat, ...] = Field((0.01, 0.1, 1.0, 10.0), description="top p% of documents whose "
                                                  "influence is summed")
    enrichment_ks: tuple[StrictInt, ...] = Field((10, 50, 100, 500, 1000), description="top/bottom k for source "
                                                 "enrichment")
    neighbours: StrictInt = Field(5, gt=0, description="classifier: how many most-correlated other queries to average")
    sql_dir: StrictStr = Field("reports/sql", description="named DuckDB queries for `wherefrom sql --name`")
    metrics_dir: StrictStr = Field("metrics", description="headline.json (DVC metrics), top_mass.csv and confusion.csv "
                                                          "(DVC plots): small, git-tracked, one set per experiment")
    source_map: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="the corpus's source values -> the paper's categories (wiki, "
        "math_and_trivia, stackexchange, code, arxiv_markdown, webdata), e.g. the Pile's 'Github: code'; unmapped "
        "sources keep their names")


@dataclass(config=_STRICT)
class ReportConfig:
    notebook: StrictStr = Field("reports/procedural_vs_factual.py", description="the jupytext (py:percent) notebook")
    out_dir: StrictStr = Field("reports/out", description="the executed .ipynb and the self-contained .html")
    docs_shown: StrictInt = Field(5, gt=0, description="top documents shown per example query")


@dataclass(config=_STRICT)
class CounterfactualConfig:
    """``make validate``: retrain without each method's top documents and measure what the queries lose."""

    methods: tuple[StrictStr, ...] = Field(
        ("influence", "bm25", "random"), description="one retrain per method (influence/methods), each without "
        "that method's removal sets")
    docs_per_group: StrictInt = Field(500, gt=0, description="documents removed per query group (factual and each "
                                                             "reasoning task), the same number for every method")
    out: StrictStr = Field("results/counterfactual.parquet", description="one row per (method, query)")
    arms_dir: StrictStr = Field("results/counterfactual", description="each finished retrain's rows, so an "
                                                                      "interrupted run resumes")
    metrics: StrictStr = Field("metrics/counterfactual.json", description="mean dNLL per method and task, paired "
                                                                          "shares and Wilcoxon p-values (DVC metrics)")


def _distinct(seeds: tuple[int, ...]) -> tuple[int, ...]:
    if len(set(seeds)) < len(seeds):
        raise ValueError("a seed named twice")
    return seeds


Seeds = Annotated[tuple[StrictInt, ...], AfterValidator(_distinct)]  # training seeds: each one draw


@dataclass(config=_STRICT)
class ValidationConfig:
    """``make validate``'s retraining tests of every method: LDS and leave-k-out on a small run of their own."""

    profile: StrictStr | None = Field("lds", description="the profile whose overrides, on top of these params, "
                                      "give the run the retraining tests use (its own world, model and scores, in "
                                      "out_dir/lds_run/); empty = this run's own model and scores (for a GPU)")
    subsets: StrictInt = Field(50, ge=2, description="LDS: M retrains, each on a random subset of the corpus")
    fractions: tuple[Annotated[float, Field(strict=True, gt=0, lt=1)], ...] = Field(
        (0.5, 0.99), min_length=1, description="LDS: the share of documents each subset keeps, one setting each "
        "(validation.subsets retrains apiece): random halves (TRAK, kronfluence) and 1% dropped (bergson, MAGIC)")
    leave_k: tuple[Annotated[StrictInt, Field(gt=0)], ...] = Field(
        (10, 50, 200), description="leave-k-out: one retrain per method and k, without k documents per query group "
                                   "(the counterfactual stage's rule)")
    leave_one_out: StrictInt = Field(8, ge=0, description="leave-one-out: this many retrains, each without one "
                                     "document (half those of largest |score| under exact attribution, or influence "
                                     "without it; half at random); per query, each method's Pearson r with them")
    tail_patch_top: tuple[Annotated[StrictInt, Field(gt=0)], ...] = Field(
        (1, 10), description="tail-patch: each method's top documents per query, each stepped on alone")
    sgd_lr: StrictFloat = Field(1e-5, gt=0, description="tail-patch's SGD step: small enough to be first order "
                                "(tests/test_tail_patch.py: 0.76% second-order at 1e-5 on the test model)")
    seeds: Seeds | None = Field(
        None, min_length=1, description="training draws of the tests: LDS and leave-k-out under each of these "
        "seeds (pretrain.seed of validation.profile's run: initialisation and batch order), each draw a run of its "
        "own in out_dir/lds_run/seed=N/ with its world shared; tail-patch and the counterfactual on the seed study's "
        "run of each seed (make seeds). Every declared verdict is then held in k of n draws. null = one draw: the "
        "profile's own seed in out_dir/lds_run/, and this run for the demo's tests")
    out_dir: StrictStr = Field("results/validation", description="one Parquet file per test stage (the validation "
                               "view); lds_run/ and retrains/, kept so a killed run resumes")
    metrics_dir: StrictStr = Field("metrics", description="validation_STAGE.json: each method's mean per test and "
                                   "setting, with its bootstrap 95% interval (DVC metrics)")


@dataclass(config=_STRICT)
class StudyConfig:
    """``make seeds``: the training run repeated under several seeds, the world fixed, every finding over the runs."""

    seeds: Seeds = Field((0, 1, 2, 3, 4), min_length=1, description="one full training run per "
                                         "seed (pretrain.seed); seeds/dvc.yaml reads this list, so it is set here, "
                                         "never in a profile")
    runs_dir: StrictStr = Field(
        "results/seeds", description="each seed's model, queries, factors and scores, in seed=N/"
    )
    out_dir: StrictStr = Field("results/seed_study", description="each seed's analysis (seed=N/), "
                                                                 "findings_by_seed.parquet and finding_spread.parquet")
    metrics: StrictStr = Field("metrics/seeds.json", description="each finding's mean, sd and k of n (DVC metrics)")


@dataclass(config=_STRICT)
class DaskConfig:
    """Where the scores are computed; never what they are (so no stage depends on it)."""

    scheduler: StrictStr | None = Field(None, description="address of an existing dask.distributed scheduler")
    workers: StrictInt = Field(1, gt=0, description="LocalCluster worker processes (without a scheduler)")
    threads_per_worker: StrictInt = Field(0, ge=0, description="torch threads per worker; 0 = cores / workers")
    connect_timeout_s: StrictInt = Field(10, gt=0, description="how long to try reaching dask.scheduler")
    processes: StrictBool = Field(True, description="false: a one-worker LocalCluster runs inside this process, "
                                  "sparing the worker's start (imports, ~8 s); several workers are always processes")


@dataclass(config=_STRICT)
class Params:
    profile: StrictStr = "demo"
    seed: StrictInt = 0
    runtime: RuntimeConfig = RuntimeConfig()
    corpus: CorpusConfig = CorpusConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    queries: QueriesConfig = QueriesConfig()
    influence: InfluenceConfig = InfluenceConfig()
    scores: ScoresConfig = ScoresConfig()
    index: IndexConfig = IndexConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    exact: ExactConfig = ExactConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    report: ReportConfig = ReportConfig()
    counterfactual: CounterfactualConfig = CounterfactualConfig()
    validation: ValidationConfig = ValidationConfig()
    study: StudyConfig = StudyConfig()
    dask: DaskConfig = DaskConfig()
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def training_seed(self) -> int:
        """The seed of the training run: ``pretrain.seed``, or the world's ``seed`` when it is not set."""
        return self.seed if self.pretrain.seed is None else self.pretrain.seed


# Values DVC reads from params.yaml's top-level sections (templated into dvc.yaml, validate/ and seeds/): every
# output path, and the seed study's seeds. A profile's value would split the stages from DVC, so none may set one.
READ_BY_DVC = {
    "corpus": ("out_dir",), "model": ("dir",), "pretrain": ("metrics", "loss_curve"),
    "queries": ("out", "segments", "metrics"), "influence": ("factors_dir",), "scores": ("out_dir", "metrics"),
    "index": ("out_dir", "metrics"),
    "baselines": ("out_dir",), "exact": ("out_dir", "metrics"),
    "analysis": ("out_dir", "sql_dir", "metrics_dir"), "report": ("notebook", "out_dir"),
    "counterfactual": ("out", "arms_dir", "metrics"), "validation": ("out_dir", "metrics_dir"),
    "study": ("seeds", "runs_dir", "out_dir", "metrics"),
}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{source}: unknown key '{loc}'"
    got = first.get("input")
    return f"{source}: {loc}: {first['msg']} (got {got!r})"


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Apply the selected profile's overrides, then validate the result."""
    if not isinstance(raw, dict):
        raise WherefromError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    profile = raw.get("profile", "demo")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise WherefromError(f"{source}: profiles: expected a mapping of profile name to overrides")
    if profile != "demo" and profile not in profiles:
        known = ", ".join(["demo", *profiles])
        raise WherefromError(f"{source}: profile: unknown profile {profile!r} (known: {known})")
    for name, overrides in profiles.items():
        for section, keys in READ_BY_DVC.items():
            given = (overrides or {}).get(section)
            key = next((k for k in keys if isinstance(given, dict) and k in given), None)
            if key:
                raise WherefromError(f"{source}: profiles.{name}: {section}.{key} is read by the dvc.yaml files from "
                                     f"the top-level {section} section; set it there")
    try:  # the selected profile first: a bad top-level value is reported as itself, not as another profile's
        params = TypeAdapter(Params).validate_python(_merge(raw, profiles.get(profile) or {}))
    except ValidationError as err:
        raise WherefromError(_describe(err, source)) from None
    for name, overrides in profiles.items():  # a typo in a profile not selected today is still a typo
        if name != profile:
            try:
                TypeAdapter(Params).validate_python(_merge(raw, overrides or {}))
            except ValidationError as err:
                raise WherefromError(_describe(err, f"{source}: profiles.{name}")) from None
    return params


def from_resolved(effective: dict) -> Params:
    """Params from ``dataclasses.asdict`` of a validated ``Params`` (the profile already applied)."""
    return TypeAdapter(Params).validate_python(effective)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise WherefromError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise WherefromError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_params(raw or {}, str(path))
