"""Benchmark: documents/s of plain forward+backward, kronfluence, wherefrom's scorer and its `scores` stage.

    python -m pipeline.bench [--docs 512] [--queries 16]      (or: make bench)

It also fits EK-FAC twice, with kronfluence's passes and with wherefrom's, and times each step.

Everything runs in one process on the same model, the same world documents and the same queries, so
the ratios are comparable. The model is the demo architecture at random init (speed does not depend
on the weights) and documents are cut to their first 128 tokens (``long_docs: truncate``, so every
line reads the same sequences) and ordered by length, as the `scores` stage batches them, so that every
line pads the same batches; --layers, --hidden, ... --context give
another size, with world documents packed to fill the context. Plain forward+backward is the floor
any gradient-based scorer pays per document. Each line runs in float32 and in bfloat16 autocast, and
reports its peak memory: CUDA's peak allocation on a GPU, the peak growth of the process's resident
memory on the CPU (a lower bound: memory the allocator kept from an earlier line is not counted
again). The stage line is the `scores` stage's steady rate on a Dask worker, reading the corpus
Parquet and writing the score shards; the time until its workers are ready (start, imports, model,
factors, queries) is printed apart, since a run pays it once. Scale-out compares that rate on one
worker and on two, one core (or GPU) each, against what two processes reach here without Dask.
The `factors` stage's two passes on Dask are timed the same way (one worker, two, and the cost of one
more shard), and a factors worker's peak memory is measured at the GPU shape on a few documents.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import random
import statistics
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
from kronfluence.utils.constants import (
    ACTIVATION_COVARIANCE_MATRIX_NAME,
    ACTIVATION_EIGENVECTORS_NAME,
    GRADIENT_COVARIANCE_MATRIX_NAME,
    GRADIENT_EIGENVECTORS_NAME,
)
from kronfluence.utils.dataset import DataLoaderKwargs
from scipy.stats import spearmanr
from transformers import LlamaConfig, LlamaForCausalLM

from influence import curvature, data, factor_runner, fisher
from influence.runner import Scored, score_corpus
from influence.scorer import Scorer
from influence.task import CausalLMTask, summed_token_nll, tracked_module_names
from pipeline.core import schemas
from pipeline.core.atomic import write_parquet
from pipeline.core.config import parse_params
from pipeline.core.corpus_reader import n_pre_tokens, read_doc_ids
from pipeline.core.model import build_model, completion_nll, load_model, pad_batch, set_threads, train_tokenizer
from pipeline.stages.probe import segment_table
from pipeline.world.documents import Document
from pipeline.world.generate import generate_documents, to_table, world_for
from pipeline.world.tasks import REASONING_TASKS, sample
from queries.suites import QuerySpec


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


def packed(docs: list[Document], n_tokens: int) -> list[Document]:
    """Consecutive world documents joined until each has at least ``n_tokens`` tokens (pre-tokens are
    a lower bound on BPE tokens), for documents as long as a larger model's context."""
    out, texts = [], []
    for doc in docs:
        texts.append(doc.text)
        if n_pre_tokens("\n\n".join(texts)) >= n_tokens:
            out.append(Document("\n\n".join(texts), doc.source))
            texts = []
    return out


def setup(root: Path, n_docs: int, n_queries: int, threads: int, batch_size: int = 16, model: dict | None = None):
    """A world corpus, its tokenizer, a random-init model (the demo's, or ``model``'s ModelConfig
    fields) and queries, all on disk under ``root``. Given a ``context``, world documents are packed
    to fill it."""
    params = parse_params({"scores": {"out_dir": str(root / "scores"), "shard_size": n_docs, "batch_size": batch_size},
                           "dask": {"workers": 1, "threads_per_worker": threads},
                           "corpus": {"out_dir": str(root / "corpus"), "long_docs": "truncate"},
                           "model": {"dir": str(root / "model"), **(model or {})},
                           "queries": {"out": str(root / "queries.parquet"),
                                       "segments": str(root / "segments.parquet")},
                           "influence": {"factors_dir": str(root / "factors")}})
    docs = generate_documents(params.corpus, world_for(params), params.seed)
    if "context" in (model or {}):
        docs = packed(docs, params.model.context)
    docs = docs[:n_docs]
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
    specs = [QuerySpec(f"q{i:03d}", p.task, p.prompt, str(p.answer), p.step_answers) for i, p in enumerate(problems)]
    write_parquet(segment_table(model, tokenizer, specs, completions), params.queries.segments, schemas.SEGMENTS)
    encoded = data.documents(tokenizer, [d.text for d in docs], params.model.context, whole=False).by_length()
    return params, tokenizer, encoded, data.queries(tokenizer, prompts, completions)


def stage(params, root: Path, workers: int, threads: int, shard_size: int, run: int = 0) -> Scored:
    """The `scores` stage on the bench corpus (float32), from scratch, on ``workers`` x ``threads``."""
    out_dir = root / f"scores-{workers}x{threads}-{shard_size}-{run}"
    return score_corpus(dataclasses.replace(
        params, scores=dataclasses.replace(params.scores, dtype="float32", shard_size=shard_size, out_dir=str(out_dir)),
        dask=dataclasses.replace(params.dask, workers=workers, threads_per_worker=threads)))


def scale_out(params, root: Path, pad_id: int, docs: data.Encoded, queries: data.Encoded, pairs: int) -> None:
    """Steady scoring rate of the stage on two workers over one, each worker one core (or one GPU), in
    ``pairs`` paired runs: on a small machine one pair's ratio moves by +-0.1 with the machine's noise.
    On the CPU it also prints what two processes could reach here without Dask, for the scorer itself
    (two processes share the caches and memory bandwidth) and for plain matmuls (the cores)."""
    units = torch.cuda.device_count() if torch.cuda.is_available() else psutil.cpu_count(logical=False) or 1
    if not pairs:
        return
    if units < 2:
        print(f"scale-out: needs 2 {'GPUs' if torch.cuda.is_available() else 'cores'}, this machine has {units}")
        return
    shard_size = max(1, len(docs) // 16)  # 8 shards a worker: a short tail where one worker idles
    runs = [{n: (lambda run: run.documents / run.scoring_s)(stage(params, root, n, 1, shard_size, i)) for n in (1, 2)}
            for i in range(pairs)]
    ratios = [rate[2] / rate[1] for rate in runs]
    unit = "GPU" if torch.cuda.is_available() else "thread"
    print(f"scale-out (shards of {shard_size}), 2 workers x 1 {unit} over 1 worker x 1 {unit}: "
          f"{statistics.median(ratios):.2f}x, the median of {pairs} paired runs "
          f"({', '.join(f'{rate[2]:.1f}/{rate[1]:.1f}' for rate in runs)} docs/s)")
    if not torch.cuda.is_available():
        scorer = (params.model.dir, params.influence.factors_dir, pad_id, docs, queries, params.scores.batch_size)
        print(f"this machine's ceiling, two single-thread processes without Dask over one: the scorer "
              f"{two_processes(_score_alone, scorer):.2f}x, plain matmuls {two_processes(_matmuls, ()):.2f}x")


_SCORER = None


def _score_alone(model_dir: str, factors_dir: str, pad_id: int, docs: data.Encoded, queries: data.Encoded,
                 batch_size: int) -> float:
    """Documents/s of one single-thread scorer (built on the first call in this process)."""
    global _SCORER
    torch.set_num_threads(1)
    if _SCORER is None:
        _SCORER = Scorer(load_model(model_dir)[0], pad_id, Path(factors_dir), queries, batch_size)
        _SCORER.score(data.Encoded(docs.items[:batch_size]))
    seconds, _ = timed(lambda: _SCORER.score(docs))
    return len(docs) / seconds


def _matmuls(*_) -> float:
    """512x512 matmuls/s on one thread for 3 s: the cores alone, with everything in cache."""
    torch.set_num_threads(1)
    a, n, end = torch.randn(512, 512), 0, time.perf_counter() + 3.0
    while time.perf_counter() < end:
        a @ a
        n += 1
    return n / 3.0


def two_processes(work, args: tuple) -> float:
    """Throughput of ``work(*args)`` in two processes at once over one alone, both processes warm."""
    pool = multiprocessing.get_context("spawn").Pool(2)
    try:
        pool.starmap(work, [args, args], chunksize=1)  # both started and warm before timing
        one = pool.apply(work, args)
        two = sum(pool.starmap(work, [args, args], chunksize=1))
    finally:
        pool.close()  # not terminate(): a killed worker leaks tqdm's lock (a semaphore) to the tracker
        pool.join()
    return two / one


def factors_stage(params, root: Path, workers: int, shard_size: int, run: int = 0) -> float:
    """Seconds of both passes of the `factors` stage's Dask fit (not the workers' start) on the bench corpus,
    from scratch, on ``workers`` single-thread workers."""
    seconds: dict[str, float] = {}
    out = root / f"factors-{workers}x1-{shard_size}-{run}"
    factor_runner.fit(dataclasses.replace(
        params, influence=dataclasses.replace(params.influence, factors_dir=str(out), shard_size=shard_size),
        dask=dataclasses.replace(params.dask, workers=workers, threads_per_worker=1)),
        read_doc_ids(params.corpus.out_dir), out, seconds)
    return seconds["covariance pass"] + seconds["lambda pass"]


def factors_scale_out(params, root: Path, n_docs: int, pairs: int) -> None:
    """Both factor passes on two single-thread workers over one, in ``pairs`` paired runs (on 2 cores or
    2 GPUs), and what one more shard costs: each shard is one covariance task and one lambda task."""
    units = torch.cuda.device_count() if torch.cuda.is_available() else psutil.cpu_count(logical=False) or 1
    if pairs and units >= 2:
        shard_size = max(1, n_docs // 16)
        runs = [{n: factors_stage(params, root, n, shard_size, i) for n in (1, 2)} for i in range(pairs)]
        print(f"factors stage scale-out (shards of {shard_size}), both passes on 2 workers over 1: "
              f"{statistics.median(t[1] / t[2] for t in runs):.2f}x, the median of {pairs} paired runs "
              f"({', '.join(f'{n_docs / t[2]:.1f}/{n_docs / t[1]:.1f}' for t in runs)} docs/s)")
    few, many = max(1, n_docs // 2), max(1, n_docs // 32)
    n_few, n_many = -(-n_docs // few), -(-n_docs // many)
    extra = factors_stage(params, root, 1, many) - factors_stage(params, root, 1, few)
    print(f"factors stage per-shard overhead: {extra / (2 * (n_many - n_few)) * 1000:.0f} ms per shard task "
          f"({n_many} against {n_few} shards of the same {n_docs} documents, 1 worker)")


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
    held = [t for factors in (eigen, lambdas) for by_module in factors.values() for t in by_module.values()]
    return {"parameters": n_params, "start_mb": start_mb, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "factors_mb": sum(t.numel() * t.element_size() for t in held) / 2**20}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

    steps = {}
    for fitter in ("kronfluence", "wherefrom"):  # wherefrom's factors are the ones scored below
        steps[fitter] = {}
        manifest = curvature.fit(load_model(params.model.dir)[0], pad, docs, "ekfac", "mlp", args.batch_size,
                                 Path(params.influence.factors_dir), fitter=fitter, seconds=steps[fitter])
    task = CausalLMTask(manifest.tracked)
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
        scorer = None  # frees the model and its preconditioned queries before the next dtype
        if amp is None:  # the same pass with what the variant methods need: dot products and self-influence
            scorer = Scorer(load_model(params.model.dir)[0], pad, Path(params.influence.factors_dir), queries,
                            args.batch_size, variants=True)
            t_variants, m_variants, _ = measured(lambda: scorer.attribute(docs))
            scorer = None
        rho = min(spearmanr(ours[q].numpy(), reference_scores[q].numpy()).statistic for q in range(len(queries)))
        rho_kron = min(spearmanr(kron[q].numpy(), reference_scores[q].numpy()).statistic for q in range(len(queries)))
        rows += [("plain forward+backward", label, t_plain, m_plain, None),
                 ("kronfluence compute_pairwise_scores", label, t_kron, m_kron, rho_kron),
                 ("wherefrom scorer", label, t_ours, m_ours, rho)]
        if amp is None:
            rows.append(("wherefrom scorer + variants", label, t_variants, m_variants, None))
        overhead[label] = t_prepare
    staged = stage(params, root, 1, threads, max(1, len(docs) // 4))
    rows.append(("wherefrom scores stage (Dask, I/O)", "float32", staged.scoring_s, None, None))  # memory: in a worker

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
    print(f"variants (identity, ekfac_cosine, relatif) in the same pass: "
          f"{rate['wherefrom scorer', 'float32'] / rate['wherefrom scorer + variants', 'float32']:.2f}x the "
          "scorer's time (tokens rotated into the eigenbasis, each document's per-layer gradient there, "
          "its dot products)")
    t_plain = len(docs) / rate["plain forward+backward", "float32"]
    print("\nEK-FAC factors (float32), time / one plain pass over the same documents:")
    print(f"{'':14s}" + "".join(f"{step:>20s}" for step in steps["kronfluence"]) + f"{'all':>8s}{'docs/s':>9s}")
    for fitter, seconds in steps.items():
        total = sum(seconds.values())
        print(f"{fitter:14s}" + "".join(f"{t / t_plain:19.2f}x" for t in seconds.values())
              + f"{total / t_plain:7.2f}x{len(docs) / total:9.1f}")
    print(f"wherefrom / kronfluence: {sum(steps['kronfluence'].values()) / sum(steps['wherefrom'].values()):.2f}x "
          "faster, the same factors (tests/test_fisher.py)")
    print(f"\nscores stage: shards of {len(docs) // 4} documents, each read from Parquet and written as Parquet; "
          f"workers ready (cluster start, imports, model, factors, queries) in {staged.ready_s:.1f}s, once per run")
    scale_out(params, root, pad, docs, queries, args.scale_out_pairs)
    factors_scale_out(params, root, len(docs), args.scale_out_pairs)
    if args.factor_memory_docs:
        peak = factor_worker_peak(GPU_SHAPE, args.factor_memory_docs, threads)
        print(f"factors worker at the GPU shape ({peak['parameters'] / 1e6:.0f}M parameters, "
              f"{', '.join(f'{k} {v}' for k, v in GPU_SHAPE.items())}), {args.factor_memory_docs} documents in one "
              f"batch, float32 on the CPU: peak {peak['peak_mb']:,.0f} MB resident ({peak['start_mb']:,.0f} MB before "
              f"the model), of which the eigenvectors and corrected eigenvalues {peak['factors_mb']:,.0f} MB; "
              "activations grow with the batch")
    print(f"on {device.type}: {torch.cuda.get_device_name() if device.type == 'cuda' else f'{threads} CPU threads'}")

if __name__ == "__main__":
    main()
