"""``python -m pipeline.bench.magic``: what exact attribution (MAGIC, ``influence/exact``) costs, against the
training step it differentiates.

On the ``lds`` profile's model and batches (``validation.profile``: the run make validate retrains), at random
init on the bench's world documents: one step of ``train`` itself, one step of the differentiable replay, and
one transposed step for a block of K query adjoints, per query. A MAGIC run of T steps costs, per block, two
replays (the checkpoints, then each stretch again) and T transposed steps; the last lines project that onto the
profile's T and a set of queries, beside what the same number of retrains costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from influence.exact.attribution import stream_of
from influence.exact.metagradients import transpose_step
from influence.exact.replay import Batches, Recipe, State, initial_state, step
from pipeline.bench.common import setup, timed
from pipeline.core.config import parse_params
from pipeline.core.model import load_model, set_threads
from pipeline.core.training import train
from pipeline.world.generate import generate_documents, world_for


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="lds", help="the profile whose model and batches are timed")
    ap.add_argument("--steps", type=int, default=6, help="steps timed per line")
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 4, 8, 16], help="query-block sizes K")
    ap.add_argument("--queries", type=int, default=60, help="queries in the projection")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    raw = yaml.safe_load(Path("params.yaml").read_text())
    params = parse_params({**raw, "profile": args.profile}, f"params.yaml, profile {args.profile}")
    fields = {f: getattr(params.model, f) for f in ("n_layers", "hidden_size", "intermediate_size", "n_heads",
                                                   "vocab_size", "context")}
    root = Path(tempfile.mkdtemp(prefix="wherefrom-bench-magic-"))
    bench, tokenizer, _, _ = setup(root, 300, 1, threads, model=fields)
    texts = [d.text for d in generate_documents(bench.corpus, world_for(bench), 0)]
    cfg = dataclasses.replace(params.pretrain, steps=args.steps + 1)
    recipe = Recipe.of(cfg, params.model.context, 0)
    stream, lengths = stream_of(tokenizer, texts)
    model, _ = load_model(bench.model.dir)
    trained, _ = timed(lambda: train(model, stream, dataclasses.replace(cfg, steps=args.steps), params.model.context,
                                     0, progress=False))
    base = trained / args.steps
    print(f"magic bench: the {args.profile} profile's {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-"
          f"parameter model, {cfg.batch_size} x {params.model.context} tokens a step, {threads} threads")
    print(f"  train, one step                         {base * 1e3:8.1f} ms   1.00x")
    model.set_attn_implementation("eager")
    model.train()
    batches = Batches(stream, lengths, recipe)
    state = initial_state(model)
    replayed, _ = timed(lambda: [step(model, batches, state, recipe) for _ in range(args.steps)])
    forward = replayed / args.steps
    print(f"  replay, one step                        {forward * 1e3:8.1f} ms   {forward / base:5.2f}x")
    per_query = {}
    for k in args.blocks:
        adjoint = State(0, 1e-3 * torch.randn(k, state.theta.numel()), torch.zeros(k, state.theta.numel()),
                        torch.zeros(k, state.theta.numel()))
        into = torch.zeros(k, batches.n_docs, dtype=torch.float64)
        took, _ = timed(lambda: [transpose_step(model, batches, state, recipe, adjoint, into)
                                 for _ in range(args.steps)])
        per_query[k] = took / args.steps / k
        print(f"  transposed step, K = {k:2d}, per query       {per_query[k] * 1e3:8.1f} ms   "
              f"{per_query[k] / base:5.2f}x")
    k = max(per_query, key=lambda b: -per_query[b] - 2 * forward / b)  # the cheapest block per query
    steps, n = params.pretrain.steps, args.queries
    run = steps * (n * per_query[k] + int(np.ceil(n / k)) * 2 * forward)
    print(f"  projected: {n} queries x {steps:,} steps at K = {k}: {run / 3600:.1f} h "
          f"({run / n:.0f} s a query; one retrain of {steps:,} steps: {steps * base:.0f} s)")


if __name__ == "__main__":
    main()
