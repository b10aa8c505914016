"""Fit the curvature (EK-FAC by default) in kronfluence's layout and keep it beside a manifest.

Two fitters write the same files: ``wherefrom`` (``fisher``'s faster covariance and lambda
passes, kronfluence's eigendecomposition) for EK-FAC and K-FAC, and ``kronfluence``'s
``fit_all_factors``, used for every strategy. A test holds them to the same numbers.

The manifest records what the factors belong to (a fingerprint of the model's weights), the tracked
modules and the strategy, so that scoring refuses factors fitted on another model instead of
silently producing wrong numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments
from kronfluence.factor.config import FactorConfig
from kronfluence.factor.covariance import save_covariance_matrices
from kronfluence.factor.eigen import load_eigendecomposition, save_lambda_matrices
from kronfluence.utils.dataset import DataLoaderKwargs
from safetensors.torch import load_file

from influence import data
from influence.curvature import fisher
from influence.data import Encoded
from influence.task import CausalLMTask, tracked_module_names
from pipeline.core.errors import WherefromError
from pipeline.core.model import pad_batch

ANALYSIS = "wherefrom"
FACTORS_NAME = "factors"
MANIFEST = "manifest.json"
STRATEGIES = ("ekfac", "kfac", "diagonal", "identity")
FITTERS = ("wherefrom", "kronfluence")
NATIVE_STRATEGIES = ("ekfac", "kfac")  # the eigenbasis strategies; kronfluence fits the others


def model_fingerprint(model: torch.nn.Module) -> str:
    """Names, shapes and the leading values of every weight: cheap even for billions of parameters."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def content_hash(root: Path) -> str:
    """Hash of the factors' contents: any refit that changes a number (other documents, seed or version)
    changes it, and with it the scores' run key; a refit to the same numbers keeps it. Tensors are hashed
    by name, dtype, shape and values, not as file bytes: kronfluence writes each file's metadata in a
    per-process order. Computed once per fit, not per scoring run."""
    h = hashlib.sha256()
    for path in sorted(p for p in (Path(root) / ANALYSIS).rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        if path.suffix == ".safetensors":
            for name, tensor in sorted(load_file(path).items()):
                h.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
                h.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
        else:
            with path.open("rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    fingerprint: str  # of the model the factors belong to
    strategy: str
    tracked: list[str]
    n_docs: int
    factors_sha256: str  # of the factors themselves

    def save(self, root: Path) -> None:
        (root / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> "Manifest":
        path = Path(root) / MANIFEST
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise WherefromError(f"{path}: no factors here; run the factors stage first") from None
        except (json.JSONDecodeError, TypeError) as err:
            raise WherefromError(f"{path}: not a factors manifest ({err})") from None

    def check(self, model: torch.nn.Module, root: Path) -> None:
        found = model_fingerprint(model)
        if found != self.fingerprint:
            raise WherefromError(f"{Path(root) / MANIFEST}: factors were fitted on another model "
                                 f"(fingerprint {self.fingerprint}, this model {found}); rerun the factors stage")


def analyzer(model: torch.nn.Module, task: CausalLMTask, root: Path) -> Analyzer:
    logging.getLogger("kronfluence").setLevel(logging.WARNING)
    # kronfluence 1.0.1 builds torch.cuda.amp.GradScaler, deprecated in torch 2.x: noise, not a problem.
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler", category=FutureWarning)
    return Analyzer(ANALYSIS, model, task, cpu=not torch.cuda.is_available(), output_dir=str(root),
                    disable_tqdm=True, log_level=logging.WARNING)


@contextmanager
def _step(seconds: dict[str, float] | None, name: str):
    """Record the wall time of one fitting step into ``seconds`` (when given)."""
    start = time.perf_counter()
    yield
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    if seconds is not None:
        seconds[name] = time.perf_counter() - start


def fit(model, pad_id: int, docs: Encoded, strategy: str, tracked: str, batch_size: int, root: Path,
        seed: int = 0, empirical_fisher: bool = False, fitter: str = "wherefrom",
        seconds: dict[str, float] | None = None) -> Manifest:
    """Fit factors on ``docs`` into ``root`` (kronfluence's layout) and write the manifest.

    The covariance is the true Fisher (targets sampled from the model, seeded) unless
    ``empirical_fisher``, which uses the documents' own tokens. Every document given is used
    (kronfluence would otherwise stop at 100k; the factors stage samples the corpus itself).
    ``seconds``, when given, receives the time of each step: covariance pass, eigendecomposition,
    lambda pass.
    """
    if strategy not in STRATEGIES:
        raise WherefromError(f"influence.strategy: unknown strategy {strategy!r} (use one of {', '.join(STRATEGIES)})")
    if fitter not in FITTERS:
        raise WherefromError(f"influence.fitter: unknown fitter {fitter!r} (use one of {', '.join(FITTERS)})")
    fingerprint = model_fingerprint(model)
    names = tracked_module_names(model, tracked)
    task = CausalLMTask(names)
    model = prepare_model(model, task)
    run = analyzer(model, task, root)
    args = FactorArguments(strategy=strategy, use_empirical_fisher=empirical_fisher,
                           covariance_max_examples=None, lambda_max_examples=None)
    torch.manual_seed(seed)
    if fitter == "wherefrom" and strategy in NATIVE_STRATEGIES:
        # kronfluence's three steps, with wherefrom's passes. The DataLoader draws from the seeded
        # generator as kronfluence's does, so the sampled targets, and the factors, are the same.
        out = run.factors_output_dir(FACTORS_NAME)
        out.mkdir(parents=True, exist_ok=True)
        sample = not empirical_fisher
        with _step(seconds, "covariance pass"):
            save_covariance_matrices(out, fisher.covariance(model, data.loader(docs, batch_size, pad_id), sample))
        with _step(seconds, "eigendecomposition"):
            run.perform_eigendecomposition(FACTORS_NAME, factor_args=args, overwrite_output_dir=True)
        if FactorConfig.CONFIGS[strategy].requires_lambda_matrices:
            eigen = load_eigendecomposition(out)
            with _step(seconds, "lambda pass"):
                save_lambda_matrices(out, fisher.lambdas(model, data.loader(docs, batch_size, pad_id), eigen, sample))
    else:  # what kronfluence's fit_all_factors runs, one step at a time; each skips what the strategy lacks
        kwargs = dict(per_device_batch_size=batch_size, factor_args=args, overwrite_output_dir=True,
                      dataloader_kwargs=DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=pad_id)))
        with _step(seconds, "covariance pass"):
            run.fit_covariance_matrices(FACTORS_NAME, docs, **kwargs)
        with _step(seconds, "eigendecomposition"):
            run.perform_eigendecomposition(FACTORS_NAME, factor_args=args, overwrite_output_dir=True)
        with _step(seconds, "lambda pass"):
            run.fit_lambda_matrices(FACTORS_NAME, docs, **kwargs)
    manifest = Manifest(fingerprint, strategy, names, len(docs), content_hash(root))
    manifest.save(root)
    return manifest
