"""The kronfluence Task for causal LMs: what is measured on a query, and what a document's loss is.

A batch is ``{"input_ids", "attention_mask", "labels"}`` with ``labels = -100`` wherever a token must
not count: padding always, and the prompt of a query. Then one loss function serves both sides:

- the training loss of a document is its summed language-modelling loss;
- the measurement of a query is the summed NLL of its completion tokens (prompt masked).

kronfluence's score is ``∇f_qᵀ (G + λI)⁻¹ ∇L_d``. With f_q the completion's NLL, a positive score means
a gradient step on the document lowers that NLL: the document makes the completion more likely.
"""

from __future__ import annotations

import torch
from kronfluence.task import Task
from torch import nn

from pipeline.core.model import sequence_nll


def summed_token_nll(model: nn.Module, batch: dict[str, torch.Tensor], sample: bool = False) -> torch.Tensor:
    """The batch's total NLL over labelled tokens: what kronfluence differentiates."""
    return sequence_nll(model, batch, sample=sample).sum()


def tracked_module_names(model: nn.Module, which: str) -> list[str]:
    """``mlp``: the linear layers of every MLP block (the paper's choice); ``all_linear``: every linear
    layer except the output head (tied to the embeddings in small models, and vocabulary-sized)."""
    if which not in ("mlp", "all_linear"):
        raise ValueError(f"unknown tracked modules {which!r}: use 'mlp' or 'all_linear'")
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and not name.endswith("lm_head")
             and name != "embed_out"]
    if which == "mlp":
        names = [n for n in names if ".mlp." in f".{n}."]
    if not names:
        raise ValueError(f"no nn.Linear modules to track ({which}) in {type(model).__name__}")
    return names


class CausalLMTask(Task):
    """What wherefrom measures; the only thing kronfluence needs to know about our models."""

    def __init__(self, tracked: list[str]) -> None:
        self.tracked = tracked

    def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
        return summed_token_nll(model, batch, sample=sample)

    def compute_measurement(self, batch, model) -> torch.Tensor:
        return summed_token_nll(model, batch)

    def get_influence_tracked_modules(self) -> list[str]:
        return self.tracked

    def get_attention_mask(self, batch) -> torch.Tensor:
        # Unmasked, kronfluence's covariance counts padded positions; tests check padding changes nothing.
        return batch["attention_mask"]
