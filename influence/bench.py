"""Benchmark: documents/s of plain forward+backward, kronfluence, wherefrom's scorer and its `scores` stage.

    python -m influence.bench [--docs 512] [--queries 16]      (or: make bench)

Everything runs in one process on the same model (the demo architecture at random init: speed does
not depend on the weights), the same world documents (at most 128 tokens) and the same queries, so
the ratios are comparable. Plain forward+backward is the floor any gradient-based scorer pays per
document. The stage line includes what a real run pays on top of the scorer: a Dask worker, loading
the model and factors, reading the corpus Parquet and writing the score shards.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from functools import partial
from pathlib import Path

import pyarrow as pa
from kronfluence.analyzer import prepare_model
from kronfluence.arguments import ScoreArguments
from kronfluence.utils.dataset import DataLoaderKwargs
from scipy.stats import spearmanr

from influence import curvature, data
from influence.scorer import Scorer
from influence.task import CausalLMTask, summed_token_nll
from pipeline import schemas, scores
from pipeline.atomic import write_parquet
from pipeline.config import parse_params
from pipeline.corpus import generate_documents, to_table, world_for
from pipeline.model import build_model, load_model, pad_batch, set_threads, train_tokenizer
from pipeline.probe import completion_nll
from queries.tasks import REASONING_TASKS, sample


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def setup(root: Path, n_docs: int, n_queries: int, threads: int):
    """A world corpus, its tokenizer, a random-init demo model and queries, all on disk under ``root``."""
    params = parse_params({"scores": {"out_dir": str(root / "scores"), "shard_size": n_docs},
                           "dask": {"workers": 1, "threads_per_worker": threads},
                           "corpus": {"out_dir": str(root / "corpus")}, "model": {"dir": str(root / "model")},
                           "queries": {"out": str(root / "queries.parquet")},
                           "influence": {"factors_dir": str(root / "factors")}})
    docs = generate_documents(params.corpus, world_for(params), params.seed)[:n_docs]
    tokenizer = train_tokenizer([d.text for d in docs], params.model.vocab_size)
    build_model(params.model, tokenizer, params.seed).save_pretrained(params.model.dir)
    tokenizer.save_pretrained(params.model.dir)
    write_parquet(to_table(docs), Path(params.corpus.out_dir) / "part-00000.parquet", schemas.CORPUS)
    rng = random.Random(0)  # canonical completions: the queries do not depend on the (untrained) model
    problems = [sample(REASONING_TASKS[i % len(REASONING_TASKS)], rng, 0, held_out=True) for i in range(n_queries)]
    prompts, completions = [p.prompt for p in problems], [p.completion for p in problems]
    model, tokenizer = load_model(params.model.dir)
    nll = completion_nll(model, tokenizer, prompts, completions, 32)
    table = pa.table({"query_id": [f"q{i:03d}" for i in range(n_queries)], "task": [p.task for p in problems],
                      "kind": ["reasoning"] * n_queries, "prompt": prompts, "completion": completions,
                      "answer": [str(p.answer) for p in problems], "step_answers": [p.step_answers for p in problems],
                      "correct": [True] * n_queries, "completion_nll": nll, "fact_id": [None] * n_queries})
    write_parquet(table, params.queries.out, schemas.QUERIES)
    return params, tokenizer, data.documents(tokenizer, [d.text for d in docs], params.model.context), \
        data.queries(tokenizer, prompts, completions)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="wherefrom-bench-"))
    params, tokenizer, docs, queries = setup(root, args.docs, args.queries, threads)
    pad = tokenizer.pad_token_id
    model, _ = load_model(params.model.dir)
    n_tokens = sum(len(ids) for ids, _ in docs.items)
    print(f"bench: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-parameter Llama, {len(docs)} documents "
          f"({n_tokens / len(docs):.0f} tokens on average), {len(queries)} queries, batch {args.batch_size}, "
          f"{threads} threads, float32, MLP layers tracked")

    batches = [pad_batch(docs.items[i:i + args.batch_size], pad) for i in range(0, len(docs), args.batch_size)]

    def plain():
        for batch in batches:
            model.zero_grad(set_to_none=True)
            summed_token_nll(model, batch).backward()

    plain()  # warm-up
    t_plain, _ = timed(plain)
    t_factors, manifest = timed(lambda: curvature.fit(load_model(params.model.dir)[0], pad, docs, "ekfac", "mlp",
                                                       args.batch_size, Path(params.influence.factors_dir)))
    task = CausalLMTask(manifest.tracked)
    reference = curvature.analyzer(prepare_model(load_model(params.model.dir)[0], task), task,
                                   Path(params.influence.factors_dir))

    def kronfluence_scores():
        reference.compute_pairwise_scores(
            "bench", curvature.FACTORS_NAME, queries, docs, per_device_query_batch_size=len(queries),
            per_device_train_batch_size=args.batch_size, overwrite_output_dir=True,
            dataloader_kwargs=DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=pad)),
            score_args=ScoreArguments(damping_factor=None))
        return reference.load_pairwise_scores("bench")["all_modules"]

    t_kron, kron = timed(kronfluence_scores)
    t_prepare, scorer = timed(lambda: Scorer(load_model(params.model.dir)[0], pad, Path(params.influence.factors_dir),
                                             queries, args.batch_size))
    t_ours, ours = timed(lambda: scorer.score(docs))
    t_stage, _ = timed(lambda: scores.run(params))

    rho = min(spearmanr(ours[q].numpy(), kron[q].numpy()).statistic for q in range(len(queries)))
    rate = {"plain forward+backward": len(docs) / t_plain, "kronfluence compute_pairwise_scores": len(docs) / t_kron,
            "wherefrom scorer": len(docs) / t_ours, "wherefrom scores stage (Dask, I/O)": len(docs) / t_stage}
    print(f"\n{'':38s}{'docs/s':>9s}{'x plain':>9s}")
    for name, r in rate.items():
        print(f"{name:38s}{r:9.1f}{r / rate['plain forward+backward']:9.2f}")
    print(f"\nwherefrom scorer / kronfluence: {rate['wherefrom scorer'] / rate['kronfluence compute_pairwise_scores']:.2f}x;"
          f" stage / kronfluence: {rate['wherefrom scores stage (Dask, I/O)'] / rate['kronfluence compute_pairwise_scores']:.2f}x;"
          f" query preconditioning {t_prepare:.2f}s once; factor fit {len(docs) / t_factors:.1f} docs/s "
          f"({t_factors / t_plain:.1f}x one plain pass)")
    print(f"stage overhead per run (cluster start, worker imports, loading, Parquet I/O): "
          f"{t_stage - t_ours - t_prepare:.1f}s, paid once per worker, not per shard")
    print(f"fidelity: min per-query Spearman, wherefrom vs kronfluence = {rho:.6f}")


if __name__ == "__main__":
    main()
