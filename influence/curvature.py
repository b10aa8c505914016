"""Fit the curvature (EK-FAC by default) with kronfluence and keep it beside a manifest.

The manifest records what the factors belong to (a fingerprint of the model's weights), the tracked
modules and the strategy, so that scoring refuses factors fitted on another model instead of
silently producing wrong numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments
from kronfluence.utils.dataset import DataLoaderKwargs

from influence.data import Encoded
from influence.task import CausalLMTask, tracked_module_names
from pipeline.errors import WherefromError
from pipeline.model import pad_batch

ANALYSIS = "wherefrom"
FACTORS_NAME = "factors"
MANIFEST = "manifest.json"
STRATEGIES = ("ekfac", "kfac", "diagonal", "identity")


def model_fingerprint(model: torch.nn.Module) -> str:
    """Names, shapes and the leading values of every weight: cheap even for billions of parameters."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def content_hash(root: Path) -> str:
    """Hash of kronfluence's factor files: any refit (other documents, seed or version) changes it,
    and with it the scores' run key. Computed once per fit, not per scoring run."""
    h = hashlib.sha256()
    for path in sorted(p for p in (Path(root) / ANALYSIS).rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
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


def fit(model, pad_id: int, docs: Encoded, strategy: str, tracked: str, batch_size: int, root: Path,
        seed: int = 0, empirical_fisher: bool = False) -> Manifest:
    """Fit factors on ``docs`` into ``root`` (kronfluence's layout) and write the manifest.

    The covariance is the true Fisher (targets sampled from the model, seeded) unless
    ``empirical_fisher``, which uses the documents' own tokens.
    """
    if strategy not in STRATEGIES:
        raise WherefromError(f"influence.strategy: unknown strategy {strategy!r} (use one of {', '.join(STRATEGIES)})")
    fingerprint = model_fingerprint(model)
    names = tracked_module_names(model, tracked)
    task = CausalLMTask(names)
    model = prepare_model(model, task)
    run = analyzer(model, task, root)
    torch.manual_seed(seed)
    run.fit_all_factors(FACTORS_NAME, docs, per_device_batch_size=batch_size,
                        dataloader_kwargs=DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=pad_id)),
                        factor_args=FactorArguments(strategy=strategy, use_empirical_fisher=empirical_fisher),
                        overwrite_output_dir=True)
    manifest = Manifest(fingerprint, strategy, names, len(docs), content_hash(root))
    manifest.save(root)
    return manifest
