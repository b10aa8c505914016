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

from pipeline.core.atomic import atomic_dir, write_csv, write_json
from pipeline.core.config import Params
from pipeline.core.corpus_reader import read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import EXTERNAL_POINTER, check_name_or_path, load_model, train_tokenizer
from pipeline.core.training import FINAL_OPTIMIZER, Checkpoint, pretrain, token_stream


def checkpoint_path(model_dir: Path) -> Path:
    """Beside the model directory, which is only written once training ends (DVC leaves it alone: not an output)."""
    return model_dir.with_name(model_dir.name + ".checkpoint")


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

    texts = read_texts(params.corpus.out_dir)  # models/lm/ gets the weights, the tokenizer and AdamW's final state
    tokenizer = train_tokenizer(texts, params.model.vocab_size)
    stream = token_stream(tokenizer, texts)
    corpus_tokens = int(len(stream))
    tokens = params.pretrain.steps * params.pretrain.batch_size * params.model.context
    print(f"pretrain: corpus {corpus_tokens:,} tokens, training on {tokens:,} tokens "
          f"({tokens / corpus_tokens:.1f} epochs)")
    start = time.perf_counter()
    final_optimizer = checkpoint_path(out).with_suffix(".optimizer")  # moved into the model directory below
    final_optimizer.parent.mkdir(parents=True, exist_ok=True)
    try:
        model, losses = pretrain(tokenizer, stream, params.model, params.pretrain, params.training_seed,
                                 checkpoint=Checkpoint(checkpoint_path(out), params.runtime.checkpoint_every),
                                 optimizer_out=final_optimizer)
    except WherefromError as err:
        raise WherefromError(f"{params.corpus.out_dir}: {err}") from None
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    print(f"pretrain: {n_params / 1e6:.2f}M parameters, {seconds:.0f}s, {tokens / seconds:,.0f} tokens/s, "
          f"final loss {losses[-1]:.3f}")
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        final_optimizer.replace(tmp / FINAL_OPTIMIZER)  # tail-patch steps as this run's next step
    write_json({"external": False, "n_params": n_params, "corpus_tokens": corpus_tokens,
                "train_tokens": tokens, "first_loss": round(losses[0], 4), "final_loss": round(losses[-1], 4),
                "final_ppl": round(math.exp(losses[-1]), 3)}, params.pretrain.metrics)
    every = params.pretrain.log_every
    write_csv(
        [
            {"step": min((i + 1) * every, params.pretrain.steps), "loss": round(loss, 5)}
            for i, loss in enumerate(losses)
        ],
        params.pretrain.loss_curve,
        ["step", "loss"],
    )
    return out
