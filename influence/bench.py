"""Benchmark: documents/s of plain forward+backward, kronfluence's pairwise scoring, and wherefrom's scorer.

    python -m influence.bench [--docs 512] [--queries 16] [--tokens 128]      (or: make bench)

All three run in one process on the same model (the demo architecture, random init), the same
documents and the same queries, so their ratios are comparable. Plain forward+backward is the floor
any gradient-based scorer pays per document.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from kronfluence.analyzer import prepare_model
from kronfluence.arguments import ScoreArguments
from kronfluence.utils.dataset import DataLoaderKwargs
from scipy.stats import spearmanr
from transformers import LlamaConfig, LlamaForCausalLM

from influence import curvature
from influence.data import Encoded
from influence.scorer import Scorer
from influence.task import CausalLMTask, summed_token_nll
from pipeline.config import ModelConfig
from pipeline.model import pad_batch, set_threads


def demo_model(seed: int) -> LlamaForCausalLM:
    cfg = ModelConfig()
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        max_position_embeddings=4 * cfg.context, tie_word_embeddings=True, pad_token_id=0)).eval()


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128, help="document length")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    vocab = ModelConfig().vocab_size
    docs = Encoded([(torch.randint(1, vocab, (args.tokens,), generator=gen).tolist(), 0) for _ in range(args.docs)])
    queries = Encoded([(torch.randint(1, vocab, (48,), generator=gen).tolist(), 24) for _ in range(args.queries)])
    batches = [pad_batch(docs.items[i:i + args.batch_size], 0) for i in range(0, len(docs), args.batch_size)]
    collate = DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=0))
    n_params = sum(p.numel() for p in demo_model(0).parameters())
    print(f"bench: {n_params / 1e6:.2f}M-parameter Llama, {args.docs} documents x {args.tokens} tokens, "
          f"{args.queries} queries, batch {args.batch_size}, {threads} threads, float32, MLP layers tracked")

    model = demo_model(0)

    def plain():
        for batch in batches:
            model.zero_grad(set_to_none=True)
            summed_token_nll(model, batch).backward()

    plain()  # warm-up
    t_plain, _ = timed(plain)

    root = Path(tempfile.mkdtemp(prefix="wherefrom-bench-"))
    t_factors, manifest = timed(lambda: curvature.fit(demo_model(0), 0, docs, "ekfac", "mlp", args.batch_size, root))

    task = CausalLMTask(manifest.tracked)
    reference = curvature.analyzer(prepare_model(demo_model(0), task), task, root)

    def kronfluence_scores():
        reference.compute_pairwise_scores(
            "bench", curvature.FACTORS_NAME, queries, docs, per_device_query_batch_size=args.queries,
            per_device_train_batch_size=args.batch_size, dataloader_kwargs=collate, overwrite_output_dir=True,
            score_args=ScoreArguments(damping_factor=None))
        return reference.load_pairwise_scores("bench")["all_modules"]

    t_kron, kron = timed(kronfluence_scores)
    t_prepare, scorer = timed(lambda: Scorer(demo_model(0), 0, root, queries, args.batch_size))
    t_ours, ours = timed(lambda: scorer.score(docs))

    rho = min(spearmanr(ours[q].numpy(), kron[q].numpy()).statistic for q in range(args.queries))
    rate = {name: args.docs / t for name, t in
            [("plain forward+backward", t_plain), ("kronfluence compute_pairwise_scores", t_kron),
             ("wherefrom scorer", t_ours)]}
    print(f"\n{'':38s}{'docs/s':>9s}{'x plain':>9s}")
    for name, r in rate.items():
        print(f"{name:38s}{r:9.1f}{r / rate['plain forward+backward']:9.2f}")
    print(f"\nwherefrom / kronfluence: {rate['wherefrom scorer'] / rate['kronfluence compute_pairwise_scores']:.2f}x; "
          f"one-off query preconditioning {t_prepare:.2f}s; factor fit {args.docs / t_factors:.1f} docs/s "
          f"({t_factors / t_plain:.1f}x one plain pass)")
    print(f"fidelity: min per-query Spearman, wherefrom vs kronfluence = {rho:.6f}")


if __name__ == "__main__":
    main()
