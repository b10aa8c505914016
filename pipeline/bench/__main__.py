"""``python -m pipeline.bench``: the benchmarks on one bench corpus, model and queries (``pipeline/bench/__init__.py``
says what each measures)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from pipeline.bench import __doc__ as ABOUT
from pipeline.bench import factor_memory, scale_out, scoring
from pipeline.bench.common import setup
from pipeline.core.model import load_model, set_threads


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=ABOUT.splitlines()[0])
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--scale-out-pairs", type=int, default=5, help="paired 1- and 2-worker runs (0: none)")
    ap.add_argument("--factor-memory-docs", type=int, default=2,
                    help="documents for the factors worker's peak memory at the GPU shape (0: not measured)")
    size = ap.add_argument_group("model (default: the demo's; the GPU figures use --layers 12 --hidden 768 "
                                 "--intermediate 3072 --heads 12 --vocab 32000 --context 512)")
    for flag, field in (("--layers", "n_layers"), ("--hidden", "hidden_size"), ("--intermediate", "intermediate_size"),
                        ("--heads", "n_heads"), ("--vocab", "vocab_size"), ("--context", "context")):
        size.add_argument(flag, type=int, dest=field)
    args = ap.parse_args(argv)
    model_fields = {f: getattr(args, f) for f in ("n_layers", "hidden_size", "intermediate_size", "n_heads",
                                                  "vocab_size", "context") if getattr(args, f) is not None}
    threads = set_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="wherefrom-bench-"))
    params, tokenizer, docs, queries = setup(root, args.docs, args.queries, threads, args.batch_size, model_fields)
    pad = tokenizer.pad_token_id
    model, _ = load_model(params.model.dir)
    n_tokens = sum(len(ids) for ids, _ in docs.items)
    print(f"bench: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-parameter Llama, {len(docs)} documents "
          f"({n_tokens / len(docs):.0f} tokens on average), {len(queries)} queries, batch {args.batch_size}, "
          f"{threads} threads, MLP layers tracked")
    del model
    scoring.run(params, root, pad, docs, queries, args.batch_size, threads)
    scale_out.scale_out(params, root, pad, docs, queries, args.scale_out_pairs)
    scale_out.factors_scale_out(params, root, len(docs), args.scale_out_pairs)
    if args.factor_memory_docs:
        factor_memory.report(args.factor_memory_docs, threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"on {device}: {torch.cuda.get_device_name() if device == 'cuda' else f'{threads} CPU threads'}")


if __name__ == "__main__":
    main()
