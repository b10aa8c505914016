"""Stage `pretrain`: train a tokenizer and a small Llama-style LM on the corpus (or adopt a given model).

    wherefrom pretrain          # reads params.yaml, writes models/lm/ (Hugging Face format, safetensors)

Documents are joined into one token stream, each preceded by ``<|endoftext|>``; training windows of
``model.context`` tokens are drawn at random positions from it. With ``model.name_or_path`` set, the
model is loaded once to check that it works and ``models/lm/`` only records where it lives.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from pipeline.core.atomic import atomic_dir, write_csv, write_json
from pipeline.core.config import Params
from pipeline.core.corpus_reader import read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import EXTERNAL_POINTER, build_model, check_name_or_path, load_model, train_tokenizer


def token_stream(tokenizer, texts: list[str]) -> np.ndarray:
    """All documents as one int32 array; the tokenizer prepends the separator to each."""
    ids = tokenizer(texts)["input_ids"]
    return np.fromiter((t for doc in ids for t in doc), dtype=np.int32)


def train(model, stream: np.ndarray, params: Params) -> list[float]:
    """AdamW with warmup and cosine decay; returns the loss every ``log_every`` steps."""
    cfg, ctx = params.pretrain, params.model.context
    if len(stream) <= ctx + 1:
        raise WherefromError(f"{params.corpus.out_dir}: {len(stream)} tokens, fewer than one training window "
                             f"(model.context + 1 = {ctx + 1})")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps, min_lr_rate=0.1)
    gen = torch.Generator().manual_seed(params.seed)
    data = torch.from_numpy(stream.astype(np.int64))
    offsets = torch.arange(ctx)
    model.train()
    losses, running = [], []
    bar = tqdm(range(cfg.steps), desc="pretrain", unit="step", mininterval=1.0)
    for step in bar:
        starts = torch.randint(0, len(data) - ctx, (cfg.batch_size,), generator=gen)
        batch = data[starts[:, None] + offsets]
        loss = model(input_ids=batch, labels=batch).loss
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
    return losses


def run(params: Params) -> Path:
    out = Path(params.model.dir)
    if params.model.name_or_path:
        check_name_or_path(params.model.name_or_path)
        with atomic_dir(out) as tmp:
            write_json({"name_or_path": params.model.name_or_path}, tmp / EXTERNAL_POINTER)
            model, _ = load_model(tmp)  # fail here, not three stages later
        n_params = sum(p.numel() for p in model.parameters())
        write_json({"external": True, "n_params": n_params}, params.pretrain.metrics)
        write_csv([], params.pretrain.loss_curve, ["step", "loss"])  # nothing trained, nothing to plot
        print(f"pretrain: using {params.model.name_or_path} ({n_params / 1e6:.1f}M parameters); no training")
        return out

    texts = read_texts(params.corpus.out_dir)
    tokenizer = train_tokenizer(texts, params.model.vocab_size)
    stream = token_stream(tokenizer, texts)
    model = build_model(params.model, tokenizer, params.seed)
    n_params = sum(p.numel() for p in model.parameters())
    tokens = params.pretrain.steps * params.pretrain.batch_size * params.model.context
    print(f"pretrain: {n_params / 1e6:.2f}M parameters, corpus {len(stream):,} tokens, "
          f"training on {tokens:,} tokens ({tokens / len(stream):.1f} epochs)")
    start = time.perf_counter()
    losses = train(model, stream, params)
    seconds = time.perf_counter() - start
    print(f"pretrain: {seconds:.0f}s, {tokens / seconds:,.0f} tokens/s, final loss {losses[-1]:.3f}")
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_json({"external": False, "n_params": n_params, "corpus_tokens": int(len(stream)),
                "train_tokens": tokens, "first_loss": round(losses[0], 4), "final_loss": round(losses[-1], 4),
                "final_ppl": round(math.exp(losses[-1]), 3)}, params.pretrain.metrics)
    every = params.pretrain.log_every
    write_csv([{"step": min((i + 1) * every, params.pretrain.steps), "loss": round(loss, 5)} for i, loss in enumerate(losses)],
              params.pretrain.loss_curve, ["step", "loss"])
    return out
