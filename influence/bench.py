"""Benchmark: documents/s of plain forward+backward, kronfluence, wherefrom's scorer and its `scores` stage.

    python -m influence.bench [--docs 512] [--queries 16]      (or: make bench)

Everything runs in one process on the same model (the demo architecture at random init: speed does
not depend on the weights), the same world documents (at most 128 tokens) and the same queries, so
the ratios are comparable. Plain forward+backward is the floor any gradient-based scorer pays per
document. Each line runs in float32 and in bfloat16 autocast, and reports its peak memory: CUDA's
peak allocation on a GPU, the peak growth of the process's resident memory on the CPU (a lower bound:
memory the allocator kept from an earlier line is not counted again). The stage line
includes what a real run pays on top of the scorer: a Dask worker, loading the model and factors,
reading the corpus Parquet and writing the score shards.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import psutil
import pyarrow as pa
import torch
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
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


class PeakMemory:
    """Peak memory of a block in MB: CUDA's max allocation, or the process's resident-set growth (sampled)."""

    def __enter__(self) -> PeakMemory:
        self.mb = 0.0
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._process, self._stop = psutil.Process(), threading.Event()
        self._base = self._peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.mb = (self._peak - self._base) / 2**20


def measured(fn) -> tuple[float, float, object]:
    """(seconds, peak MB, result) of ``fn()``."""
    with PeakMemory() as peak:
        seconds, out = timed(fn)
    return seconds, peak.mb, out


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


def factor_passes(params, task: CausalLMTask, docs, pad: int, batch_size: int, root: Path) -> dict[str, float]:
    """Seconds of each of kronfluence's three factor steps, run one at a time (what ``fit_all_factors`` does)."""
    from kronfluence.arguments import FactorArguments

    run = curvature.analyzer(prepare_model(load_model(params.model.dir)[0], task), task, root)
    args = FactorArguments(strategy="ekfac")
    common = dict(dataset=docs, per_device_batch_size=batch_size, factor_args=args, overwrite_output_dir=True,
                  dataloader_kwargs=DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=pad)))
    torch.manual_seed(0)
    t_cov, _ = timed(lambda: run.fit_covariance_matrices(curvature.FACTORS_NAME, **common))
    t_eig, _ = timed(lambda: run.perform_eigendecomposition(curvature.FACTORS_NAME, factor_args=args,
                                                            overwrite_output_dir=True))
    t_lambda, _ = timed(lambda: run.fit_lambda_matrices(curvature.FACTORS_NAME, **common))
    return {"covariance pass": t_cov, "eigendecomposition": t_eig, "lambda pass": t_lambda}


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
          f"{threads} threads, MLP layers tracked")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    batches = [{k: v.to(device) for k, v in pad_batch(docs.items[i:i + args.batch_size], pad).items()}
               for i in range(0, len(docs), args.batch_size)]

    def plain(amp: torch.dtype | None):
        for batch in batches:
            model.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = summed_token_nll(model, batch)
            loss.backward()

    t_factors, manifest = timed(lambda: curvature.fit(load_model(params.model.dir)[0], pad, docs, "ekfac", "mlp",
                                                       args.batch_size, Path(params.influence.factors_dir)))
    task = CausalLMTask(manifest.tracked)
    passes = factor_passes(params, task, docs, pad, args.batch_size, root / "factor-passes")
    reference = curvature.analyzer(prepare_model(load_model(params.model.dir)[0], task), task,
                                   Path(params.influence.factors_dir))

    def kronfluence_scores(amp: torch.dtype | None):
        reference.compute_pairwise_scores(
            "bench", curvature.FACTORS_NAME, queries, docs, per_device_query_batch_size=len(queries),
            per_device_train_batch_size=args.batch_size, overwrite_output_dir=True,
            dataloader_kwargs=DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=pad)),
            score_args=ScoreArguments(damping_factor=None, amp_dtype=amp))
        return reference.load_pairwise_scores("bench")["all_modules"].float().cpu()

    rows, reference_scores, overhead = [], None, {}
    for label, amp in (("float32", None), ("bfloat16", torch.bfloat16)):
        plain(amp)  # warm-up
        t_plain, m_plain, _ = measured(lambda: plain(amp))
        t_kron, m_kron, kron = measured(lambda: kronfluence_scores(amp))
        reference_scores = kron if amp is None else reference_scores
        t_prepare, scorer = timed(lambda: Scorer(load_model(params.model.dir)[0], pad,
                                                 Path(params.influence.factors_dir), queries, args.batch_size,
                                                 amp_dtype=amp))
        t_ours, m_ours, ours = measured(lambda: scorer.score(docs).cpu())
        del scorer
        rho = min(spearmanr(ours[q].numpy(), reference_scores[q].numpy()).statistic for q in range(len(queries)))
        rho_kron = min(spearmanr(kron[q].numpy(), reference_scores[q].numpy()).statistic for q in range(len(queries)))
        rows += [("plain forward+backward", label, t_plain, m_plain, None),
                 ("kronfluence compute_pairwise_scores", label, t_kron, m_kron, rho_kron),
                 ("wherefrom scorer", label, t_ours, m_ours, rho)]
        overhead[label] = t_prepare
    stage_params = dataclasses.replace(params, scores=dataclasses.replace(params.scores, dtype="float32"))
    t_stage, _ = timed(lambda: scores.run(stage_params))
    rows.append(("wherefrom scores stage (Dask, I/O)", "float32", t_stage, None, None))  # memory: in a worker

    print(f"\n{'':38s}{'dtype':>9s}{'docs/s':>9s}{'x plain':>9s}{'peak MB':>9s}{'Spearman vs kronfluence fp32':>30s}")
    plain_rate = {dtype: len(docs) / t for name, dtype, t, _, _ in rows if name.startswith("plain")}
    for name, dtype, t, mb, rho in rows:
        rate = len(docs) / t
        print(f"{name:38s}{dtype:>9s}{rate:9.1f}{rate / plain_rate[dtype]:9.2f}{'-' if mb is None else f'{mb:.0f}':>9s}"
              f"{'' if rho is None else f'{rho:30.6f}'}")
    rate = {(n, d): len(docs) / t for n, d, t, _, _ in rows}
    print()
    for dtype in ("float32", "bfloat16"):
        print(f"{dtype}: wherefrom scorer / kronfluence: "
              f"{rate['wherefrom scorer', dtype] / rate['kronfluence compute_pairwise_scores', dtype]:.2f}x;"
              f" query preconditioning {overhead[dtype]:.2f}s once")
    t_ours = len(docs) / rate["wherefrom scorer", "float32"]
    t_plain = len(docs) / rate["plain forward+backward", "float32"]
    print(f"factor fit (float32) {len(docs) / t_factors:.1f} docs/s ({t_factors / t_plain:.1f}x one plain pass): "
          + ", ".join(f"{name} {t / t_plain:.2f}x" for name, t in passes.items()) + " one plain pass")
    print(f"stage overhead per run (cluster start, worker imports, loading, Parquet I/O): "
          f"{t_stage - t_ours - overhead['float32']:.1f}s, paid once per worker, not per shard")
    print(f"on {device.type}: {torch.cuda.get_device_name() if device.type == 'cuda' else f'{threads} CPU threads'}")

if __name__ == "__main__":
    main()
