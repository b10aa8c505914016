"""Pretraining the world's LM: one token stream, random windows, AdamW with warmup and cosine decay.

The pretrain stage and the counterfactual retrains call the same function. With a checkpoint path it saves
the whole training state (weights, optimizer, schedule, the batch generator, the losses so far) every
``every`` steps, atomically, under a key of everything the run depends on; a killed run resumes at its last
checkpoint and ends with the same weights as an uninterrupted run on the same machine. A retrain goes without some
documents by masking their tokens (``keep``) in the very windows the original run drew: they are neither
attended to nor predicted, and everything else (initialisation, batches, step count, learning rate) is
the original run's. Drawing new windows from a shorter stream would change every batch, and that noise
would swamp the removal it is meant to measure; with the mask, removing nothing reproduces the
original model exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from pipeline.core.atomic import atomic_path
from pipeline.core.config import ModelConfig, PretrainConfig
from pipeline.core.errors import WherefromError
from pipeline.core.model import IGNORE, build_model

BETAS = (0.9, 0.95)
MAX_GRAD_NORM = 1.0
FINAL_OPTIMIZER = "optimizer.pt"  # beside the model's weights: AdamW's final state, its last lr and settings


def adamw_after_training(path: Path) -> tuple[Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer], float]:
    """A factory of AdamW holding the training run's final state (a fresh copy each call), at its last learning
    rate, and the gradient norm training clipped to: a step with both, on a parameter list ordered as the
    model's, is the step training would take next."""
    saved = torch.load(path, map_location="cpu", weights_only=False)

    def make(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        opt = torch.optim.AdamW(params, lr=saved["lr"][0], betas=saved["betas"], weight_decay=saved["weight_decay"])
        opt.load_state_dict(copy.deepcopy(saved["optimizer"]))  # load_state_dict keeps the tensors it is given
        return opt
    return make, saved["max_grad_norm"]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def token_stream(tokenizer, texts: list[str]) -> np.ndarray:
    """All documents as one int32 array; the tokenizer prepends the separator to each."""
    ids = tokenizer(texts)["input_ids"]
    return np.fromiter((t for doc in ids for t in doc), dtype=np.int32)


def kept_tokens(tokenizer, texts: list[str], keep: list[bool]) -> np.ndarray:
    """Which tokens of ``token_stream(tokenizer, texts)`` belong to the documents kept."""
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    return np.repeat(np.asarray(keep, dtype=bool), lengths)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Where a training run saves its state, and how often (``every`` steps; 0: never)."""

    path: Path
    every: int

    def key(self, model, stream: np.ndarray, cfg: PretrainConfig, context: int, seed: int,
            keep: np.ndarray | None) -> str:
        """Everything the run's result depends on, this training code included: a checkpoint under another key
        is another run's."""
        h = hashlib.sha256(Path(__file__).read_bytes() + stream.tobytes())
        h.update(b"" if keep is None else np.packbits(np.asarray(keep, dtype=bool)).tobytes())
        shapes = {name: list(p.shape) for name, p in model.state_dict().items()}
        h.update(json.dumps([dataclasses.asdict(cfg), context, seed, shapes], sort_keys=True).encode())
        return h.hexdigest()

    def load(self, key: str) -> dict | None:
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        return state if state.get("key") == key else None

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def train(model, stream: np.ndarray, cfg: PretrainConfig, context: int, seed: int, desc: str = "pretrain",
          keep: np.ndarray | None = None, checkpoint: Checkpoint | None = None,
          optimizer_out: Path | None = None, progress: bool = True) -> list[float]:
    """Train ``model`` in place on windows of ``context`` tokens; returns the mean loss every ``log_every`` steps.

    ``keep`` (one flag per stream token) masks out the tokens of removed documents, in attention and loss.
    ``checkpoint``: resume from it when it holds this run's state, and save to it as training goes; it is
    removed once training ends. ``optimizer_out``: where to save the optimizer's final state (``FINAL_OPTIMIZER``),
    so that a step can be taken as the run's next one (tail-patch).
    """
    if len(stream) <= context + 1:
        raise WherefromError(f"{len(stream)} corpus tokens, fewer than one training window (model.context + 1 = "
                             f"{context + 1})")
    on = device()
    model.to(on)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=BETAS)
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps, min_lr_rate=0.1)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same windows on any device
    data = torch.from_numpy(stream.astype(np.int64))
    kept = None if keep is None else torch.from_numpy(np.asarray(keep, dtype=bool))
    offsets = torch.arange(context)
    losses, running, first = [], [], 0
    key = checkpoint.key(model, stream, cfg, context, seed, keep) if checkpoint else ""
    state = checkpoint.load(key) if checkpoint else None
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        gen.set_state(state["generator"])
        losses, running, first = state["losses"], state["running"], state["step"]
        print(f"{desc}: resumed at step {first:,} of {cfg.steps:,} ({checkpoint.path})")
    model.train()
    bar = tqdm(range(first, cfg.steps), desc=desc, unit="step", mininterval=1.0, initial=first, total=cfg.steps,
               disable=not progress)
    for step in bar:
        starts = torch.randint(0, len(data) - context, (cfg.batch_size,), generator=gen)
        window = starts[:, None] + offsets
        batch = data[window].to(on)
        if kept is None or bool(kept[window].all()):  # as the original run: no mask at all
            loss = model(input_ids=batch, labels=batch).loss
        else:
            mask = kept[window].to(on)
            loss = model(input_ids=batch, attention_mask=mask.long(), labels=batch.masked_fill(~mask, IGNORE)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            losses.append(sum(running) / len(running))
            running = []
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if checkpoint and checkpoint.every and (step + 1) % checkpoint.every == 0 and step + 1 < cfg.steps:
            checkpoint.save({"key": key, "step": step + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                             "schedule": sched.state_dict(), "generator": gen.get_state(), "losses": losses,
                             "running": running})
    if optimizer_out:
        torch.save({"optimizer": opt.state_dict(), "lr": sched.get_last_lr(), "betas": BETAS,
                    "weight_decay": cfg.weight_decay, "max_grad_norm": MAX_GRAD_NORM}, optimizer_out)
    if checkpoint:
        checkpoint.path.unlink(missing_ok=True)
    model.eval()
    model.to("cpu")
    return losses


def pretrain(tokenizer, stream: np.ndarray, model_cfg: ModelConfig, cfg: PretrainConfig, seed: int,
             desc: str = "pretrain", keep: np.ndarray | None = None, checkpoint: Checkpoint | None = None,
             optimizer_out: Path | None = None, progress: bool = True):
    """A freshly initialised model (``seed``) trained on ``stream``: the model and its loss curve."""
    model = build_model(model_cfg, tokenizer, seed)
    losses = train(model, stream, cfg, model_cfg.context, seed, desc, keep, checkpoint, optimizer_out, progress)
    return model, losses
