"""Models and tokenizers: building the demo LM, loading any causal LM, and encoding queries.

Every stage that needs the model goes through ``load_model`` so that the world's own LM and a user's
Hugging Face model (``model.name_or_path``) look the same downstream. A sequence always starts with
the tokenizer's own special tokens (our tokenizer prepends ``<|endoftext|>``, as between training
documents), and a query is ``prompt + "\\n"`` followed by the completion, tokenized separately so the
completion's tokens are known exactly.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from pipeline.core.config import ModelConfig
from pipeline.core.errors import ParamsError, WherefromError

EOS = "<|endoftext|>"
PAD = "<|pad|>"
PROMPT_SEPARATOR = "\n"
EXTERNAL_POINTER = "external_model.json"  # written instead of weights when model.name_or_path is set
IGNORE = -100  # label of a token that no loss counts (padding, and a query's prompt)


def available_cores() -> int:
    """The cores this process may use: ``OMP_NUM_THREADS`` when set (a batch scheduler's share of the
    machine, or the test runner's per worker), else every core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Pin torch (and OpenMP) to ``threads`` (0 = ``available_cores()``) so parallel processes don't oversubscribe."""
    n = threads or available_cores()
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with every digit its own pre-token, so numbers are read digit by digit."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{EOS} $A", special_tokens=[(EOS, eos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD)


def build_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        max_position_embeddings=4 * cfg.context,  # queries may run past the training window; RoPE extends
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def check_name_or_path(name_or_path: str) -> None:
    """A path-like value must be an existing model directory; anything else is taken as a hub id."""
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()
    path = Path(name_or_path).expanduser()
    if looks_local and not path.is_dir():
        raise ParamsError(f"model.name_or_path: no such directory: {name_or_path}")
    if looks_local and not (path / "config.json").is_file():
        raise ParamsError(f"model.name_or_path: {name_or_path} has no config.json (not a saved model)")


def load_model(model_dir: str | Path, dtype: torch.dtype = torch.float32):
    """Load the stage's model: the one saved in ``model_dir``, or the external one it points to."""
    model_dir = Path(model_dir)
    pointer = model_dir / EXTERNAL_POINTER
    source = json.loads(pointer.read_text())["name_or_path"] if pointer.is_file() else str(model_dir)
    if not pointer.is_file() and not (model_dir / "config.json").is_file():
        raise WherefromError(f"{model_dir}: no model here; run the pretrain stage first")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError, SafetensorError) as err:  # SafetensorError: a truncated or corrupt weights file
        raise WherefromError(f"model {source}: cannot be loaded: {str(err).splitlines()[0]}") from None
    n_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embeddings:
        raise WherefromError(f"model {source}: the tokenizer does not match the model ({len(tokenizer)} tokens, "
                             f"{n_embeddings} embeddings)")
    if tokenizer.pad_token_id is None:  # many causal LMs ship without one; padding is always masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    linear_conv1d(model)
    model.eval()
    return model, tokenizer


def linear_conv1d(model: torch.nn.Module) -> int:
    """Replace GPT-2's ``Conv1D`` layers with equal ``nn.Linear`` ones (weight transposed), in place.

    ``Conv1D`` computes ``x @ W + b`` with ``W`` stored ``[in, out]``: an ``nn.Linear`` with ``W.T`` is
    the same function. kronfluence tracks only ``nn.Linear`` (and ``Conv2d``), so without this a GPT-2
    would silently have no tracked layers. Returns how many were replaced.
    """
    from transformers.pytorch_utils import Conv1D

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = torch.nn.Linear(n_in, n_out, bias=child.bias is not None, device=child.weight.device,
                                         dtype=child.weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.T)
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, name, linear)
                swapped += 1
    return swapped


def encode_query(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of ``prompt + separator + completion`` and the index where the completion starts."""
    prompt_ids = tokenizer(prompt + PROMPT_SEPARATOR)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, len(prompt_ids)


def pad_batch(items: list[tuple], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``(ids, start)`` items; labels count only tokens from ``start`` on, never padding. An item
    ``(ids, start, counted)`` counts only the tokens from ``start`` whose flag in ``counted`` is true (one
    answer segment of a completion)."""
    width = max(len(item[0]) for item in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, start, *counted) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        targets = torch.tensor(ids[start:])
        if counted:
            targets[~torch.tensor(counted[0], dtype=torch.bool)] = IGNORE
        labels[row, start : len(ids)] = targets
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def sample_tokens(logits: torch.Tensor) -> torch.Tensor:
    """One token per row of ``[n, vocab]`` logits, drawn from their softmax by inverse CDF.

    Same distribution as ``torch.multinomial``, 40x faster on the CPU for a 1000-token vocabulary
    (multinomial's exponential draws over every vocabulary entry were 10% of a factor pass).
    """
    cdf = torch.softmax(logits.float(), -1).cumsum_(-1)
    drawn = torch.searchsorted(cdf, torch.rand(cdf.size(0), 1, device=cdf.device) * cdf[:, -1:])
    return drawn.squeeze(1).clamp_(max=cdf.size(1) - 1)


def sequence_nll(model, batch: dict[str, torch.Tensor], sample: bool = False,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Summed next-token NLL of each sequence over its labelled positions (labels shifted here, as in HF).

    ``sample=True`` draws the targets from the model's own distribution instead, which makes
    kronfluence's covariance the true Fisher (the Gauss-Newton matrix for this loss), as in the paper.
    One function for the probe's NLL and influence's measurement keeps score_per_nat consistent; the probe
    asks for float64 (``dtype``), since a confident completion's few hundredths of a nat lose up to 2% summed
    in float32, and score_per_nat divides by them.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.to(dtype)
    logits, labels = logits[:, :-1], batch["labels"][:, 1:]
    if sample:
        labels = labels.clone()
        with torch.no_grad():
            counted = labels != IGNORE
            labels[counted] = sample_tokens(logits[counted])
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return losses.sum(dim=1)


@torch.no_grad()
def completion_nll(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int) -> list[float]:
    """Summed negative log-likelihood (nats) of each completion given its prompt; prompt tokens masked."""
    out = []
    for i in range(0, len(prompts), batch_size):
        batch = pad_batch([encode_query(tokenizer, p, c) for p, c in
                           zip(prompts[i:i + batch_size], completions[i:i + batch_size])], tokenizer.pad_token_id)
        out += sequence_nll(model, batch, dtype=torch.float64).tolist()
    return out


@torch.no_grad()
def completion_token_nll(model, tokenizer, prompt: str, completion: str) -> tuple[list[float], list[int]]:
    """Each completion token's NLL (nats, float64) given everything before it, and the token the model
    ranked highest among the others there (its runner-up: the choice it weighed against the one made)."""
    ids, start = encode_query(tokenizer, prompt, completion)
    batch = pad_batch([(ids, start)], tokenizer.pad_token_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[
        0, start - 1 : len(ids) - 1
    ]
    logp = torch.log_softmax(logits.double(), dim=-1)
    targets = torch.tensor(ids[start:])
    nll = -logp.gather(1, targets[:, None])[:, 0]
    runner_up = logp.scatter(1, targets[:, None], -math.inf).argmax(-1)
    return nll.tolist(), runner_up.tolist()


@torch.no_grad()
def greedy_completions(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """The model's own greedy completion of each prompt, up to a blank line (where a next example would start)."""
    tokenizer.padding_side = "left"  # generation appends on the right, so pad on the left
    out = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        batch = [p + PROMPT_SEPARATOR for p in prompts[i:i + batch_size]]
        enc = tokenizer(batch, return_tensors="pt", padding=True)
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, min_new_tokens=1, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row in ids[:, enc["input_ids"].shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            out.append(text.strip().split("\n\n")[0].strip())  # a leading blank line does not end it
    return out
