"""Pretraining the world's LM: one token stream, random windows, AdamW with warmup and cosine decay.

The pretrain stage and the counterfactual retrains call the same function. A retrain goes without some
documents by masking their tokens (``keep``) in the very windows the original run drew: they are neither
attended to nor predicted, and everything else (initialisation, batches, step count, learning rate) is
the original run's. Drawing new windows from a shorter stream would change every batch, and that noise
would swamp the removal it is meant to measure; with the mask, removing nothing reproduces the
original model exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from pipeline.core.config import ModelConfig, PretrainConfig
from pipeline.core.errors import WherefromError
from pipeline.core.model import IGNORE, build_model


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


def train(model, stream: np.ndarray, cfg: PretrainConfig, context: int, seed: int, desc: str = "pretrain",
          keep: np.ndarray | None = None) -> list[float]:
    """Train ``model`` in place on windows of ``context`` tokens; returns the mean loss every ``log_every`` steps.

    ``keep`` (one flag per stream token) masks out the tokens of removed documents, in attention and loss.
    """
    if len(stream) <= context + 1:
        raise WherefromError(f"{len(stream)} corpus tokens, fewer than one training window (model.context + 1 = "
                             f"{context + 1})")
    on = device()
    model.to(on)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps, min_lr_rate=0.1)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same windows on any device
    data = torch.from_numpy(stream.astype(np.int64))
    kept = None if keep is None else torch.from_numpy(np.asarray(keep, dtype=bool))
    offsets = torch.arange(context)
    model.train()
    losses, running = [], []
    bar = tqdm(range(cfg.steps), desc=desc, unit="step", mininterval=1.0)
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
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            losses.append(sum(running) / len(running))
            running = []
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    model.to("cpu")
    return losses


def pretrain(tokenizer, stream: np.ndarray, model_cfg: ModelConfig, cfg: PretrainConfig, seed: int,
             desc: str = "pretrain", keep: np.ndarray | None = None):
    """A freshly initialised model (``seed``) trained on ``stream``: the model and its loss curve."""
    model = build_model(model_cfg, tokenizer, seed)
    losses = train(model, stream, cfg, model_cfg.context, seed, desc, keep)
    return model, losses
