"""A factors worker's peak memory at the GPU profile's shape, on a few documents, in a fresh process."""

from __future__ import annotations

import multiprocessing

import torch
from kronfluence.analyzer import prepare_model
from kronfluence.utils.constants import (
    ACTIVATION_COVARIANCE_MATRIX_NAME,
    ACTIVATION_EIGENVECTORS_NAME,
    GRADIENT_COVARIANCE_MATRIX_NAME,
    GRADIENT_EIGENVECTORS_NAME,
)
from transformers import LlamaConfig, LlamaForCausalLM

from influence import data
from influence.curvature import fisher
from influence.task import CausalLMTask, tracked_module_names
from pipeline.core.config import parse_params
from pipeline.core.model import set_threads

GPU_SHAPE = {"n_layers": 12, "hidden_size": 768, "intermediate_size": 3072, "n_heads": 12, "vocab_size": 32000,
             "context": 512}


def factor_worker_peak(shape: dict, n_docs: int, threads: int) -> dict[str, float]:
    """A factors worker's memory on a random-init Llama of ``shape``: both passes over ``n_docs`` random
    documents of a full context in one batch, MLP layers tracked, run in a fresh process. Returns the
    parameter count, the process's peak resident MB before the model (after imports) and overall
    (``ru_maxrss``), and the MB of the eigenvectors and corrected eigenvalues a lambda task holds (the
    covariance task's sums are as large)."""
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(_factor_worker, (shape, n_docs, threads))
    finally:
        pool.close()
        pool.join()


def _factor_worker(shape: dict, n_docs: int, threads: int) -> dict[str, float]:
    import resource

    set_threads(threads)
    start_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = parse_params({"model": shape}).model
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.context, tie_word_embeddings=True, pad_token_id=0))
    n_params = sum(p.numel() for p in model.parameters())
    model = prepare_model(model, CausalLMTask(tracked_module_names(model, "mlp")))
    gen = torch.Generator().manual_seed(0)
    docs = data.Encoded([(torch.randint(1, cfg.vocab_size, (cfg.context,), generator=gen).tolist(), 0)
                         for _ in range(n_docs)])
    sums = fisher.covariance(model, data.loader(docs, n_docs, 0), sample=True, desc=None)
    eigen = {vectors: {n: torch.eye(len(c)) for n, c in sums[covariance].items()}  # values do not change memory
             for vectors, covariance in ((ACTIVATION_EIGENVECTORS_NAME, ACTIVATION_COVARIANCE_MATRIX_NAME),
                                         (GRADIENT_EIGENVECTORS_NAME, GRADIENT_COVARIANCE_MATRIX_NAME))}
    del sums  # written and freed by the covariance task before the lambda task loads the eigenvectors
    lambdas = fisher.lambdas(model, data.loader(docs, n_docs, 0), eigen, sample=True, desc=None)
    held = [t for fitted in (eigen, lambdas) for by_module in fitted.values() for t in by_module.values()]
    return {"parameters": n_params, "start_mb": start_mb, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "factors_mb": sum(t.numel() * t.element_size() for t in held) / 2**20}


def report(n_docs: int, threads: int) -> None:
    peak = factor_worker_peak(GPU_SHAPE, n_docs, threads)
    print(f"factors worker at the GPU shape ({peak['parameters'] / 1e6:.0f}M parameters, "
          f"{', '.join(f'{k} {v}' for k, v in GPU_SHAPE.items())}), {n_docs} documents in one "
          f"batch, float32 on the CPU: peak {peak['peak_mb']:,.0f} MB resident ({peak['start_mb']:,.0f} MB before "
          f"the model), of which the eigenvectors and corrected eigenvalues {peak['factors_mb']:,.0f} MB; "
          "activations grow with the batch")
