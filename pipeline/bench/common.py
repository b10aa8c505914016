"""What every benchmark shares: timing, peak memory, and the bench's corpus, model and queries on disk."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import torch

from influence import data
from pipeline.core import schemas
from pipeline.core.atomic import write_parquet
from pipeline.core.config import parse_params
from pipeline.core.corpus_reader import n_pre_tokens
from pipeline.core.model import build_model, completion_nll, load_model, train_tokenizer
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
