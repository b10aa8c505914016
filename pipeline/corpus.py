"""Stage `corpus`: generate the world's documents, with ground truth, as Parquet.

    wherefrom corpus            # reads params.yaml, writes data/corpus/part-*.parquet

The same seed and params give byte-identical files. Documents state facts (wiki articles, trivia,
narratives; each repeated as paraphrases), show procedures (four formats per reasoning task, never on
a query's own numbers), answer questions from their own context (``reading``, about throwaway
entities) or are filler. Order is shuffled so that no shard is all one kind.
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from tqdm.auto import tqdm

from pipeline import dataset_corpus, filler, schemas
from pipeline.atomic import atomic_dir, write_json, write_parquet
from pipeline.config import CorpusConfig, Params
from pipeline.errors import WherefromError
from pipeline.documents import (PROCEDURE_FORMATS, Document, narrative, procedure_document, reading_document, trivia,
                                wiki_article)
from pipeline.world import World, build_world, by_entity
from queries.suites import factual_control_prompt, one_fact_per_entity, reasoning_control
from queries.tasks import REASONING_TASKS, sample

# Words, single digits and punctuation runs: a tokenizer-independent length (every BPE token of a
# digit-split byte-level tokenizer lies within one of these, so it is a lower bound on its count).
_PRE_TOKEN = re.compile(r"[^\W\d_]+|\d|[^\w\s]+|_")


MANIFEST = "_manifest.json"  # how a user corpus was read (the leading "_" keeps Parquet readers off it)


def n_pre_tokens(text: str) -> int:
    return len(_PRE_TOKEN.findall(text))


def corpus_texts(corpus_dir: str) -> list[str]:
    """Every document's text, in file order."""
    return ds.dataset(corpus_dir, format="parquet").to_table(columns=["text"]).column("text").to_pylist()


def world_for(params: Params, n_unseen: int = 0) -> World:
    """The world a corpus was generated from: a pure function of the seed and the corpus settings."""
    return build_world(params.seed, params.corpus.n_entities, n_throwaway=params.corpus.reading_docs // 2,
                       n_unseen=n_unseen, reserved=filler.vocabulary())


def generate_documents(cfg: CorpusConfig, world: World, seed: int) -> list[Document]:
    rng = random.Random(f"corpus-{seed}")
    docs: list[Document] = []
    for facts in by_entity(world.facts):
        docs += [wiki_article(facts, rng) for _ in range(cfg.fact_doc_repeats)]
        for fact in facts:
            docs += [trivia(fact, rng) for _ in range(cfg.fact_doc_repeats)]
            docs += [narrative(fact, rng) for _ in range(cfg.fact_doc_repeats)]
    for task in REASONING_TASKS:
        for i in range(cfg.procedure_docs_per_task):
            problems = [sample(task, rng, seed, held_out=False) for _ in range(cfg.examples_per_procedure_doc)]
            docs.append(procedure_document(task, PROCEDURE_FORMATS[i % len(PROCEDURE_FORMATS)], problems, rng))
    stories = one_fact_per_entity(world.throwaway)  # half the reading documents; restated numbers the rest
    docs += [reading_document(factual_control_prompt(f), f.answer_sentence, rng) for f in stories]
    for i in range(cfg.reading_docs - len(stories)):
        prompt, completion, _ = reasoning_control(i, rng)
        docs.append(reading_document(prompt, completion, rng))
    docs += [filler.filler_document(rng) for _ in range(cfg.filler_docs)]
    rng.shuffle(docs)
    return docs


def to_table(docs: list[Document], first_id: int = 0) -> pa.Table:
    return pa.Table.from_pydict({
        "doc_id": list(range(first_id, first_id + len(docs))),
        "text": [d.text for d in docs],
        "source": [d.source for d in docs],
        "n_tokens": [n_pre_tokens(d.text) for d in docs],
        "fact_ids": [d.fact_ids or None for d in docs],
        "procedure": [d.procedure for d in docs],
    }, schema=schemas.CORPUS)


def run_dataset(cfg: CorpusConfig) -> Path:
    """A user's corpus, streamed into the corpus schema ``docs_per_file`` documents at a time."""
    if cfg.long_docs == "chunk" and cfg.id_column:
        raise WherefromError("corpus.long_docs: chunk gives every piece its own id; set corpus.id_column to null")
    report = dataset_corpus.ReadReport(cfg.dataset, long_docs=cfg.long_docs,
                                       chunk_tokens=cfg.chunk_tokens if cfg.long_docs == "chunk" else 0)
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        batch: list[tuple[int, str, str | None]] = []
        part = 0

        def flush() -> None:
            nonlocal part, batch
            if batch:
                ids, texts, sources = zip(*batch)
                table = pa.Table.from_pydict({
                    "doc_id": list(ids), "text": list(texts), "source": list(sources),
                    "n_tokens": [n_pre_tokens(t) for t in texts], "fact_ids": [None] * len(ids),
                    "procedure": [None] * len(ids)}, schema=schemas.CORPUS)
                write_parquet(table, tmp / f"part-{part:05d}.parquet", schemas.CORPUS)
                part, batch = part + 1, []

        for doc in tqdm(dataset_corpus.documents(cfg, report), desc="corpus", unit="doc", mininterval=1.0):
            batch.append(doc)
            if len(batch) == cfg.docs_per_file:
                flush()
        flush()
        if not report.written:
            raise WherefromError(f"{cfg.dataset}: no documents to keep ({report.read} read, "
                                 f"{report.empty_skipped} empty)")
        write_json(dataclasses.asdict(report), tmp / MANIFEST)
    print(f"corpus: {report.written} documents from {cfg.dataset} -> {out}/ ({report.read} read, "
          f"{report.empty_skipped} empty skipped, {report.chunked} chunked; long documents: {cfg.long_docs})")
    return out


def run(params: Params) -> Path:
    cfg = params.corpus
    if cfg.dataset:
        return run_dataset(cfg)
    docs = generate_documents(cfg, world_for(params), params.seed)
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        for part, start in enumerate(range(0, len(docs), cfg.docs_per_file)):
            chunk = docs[start:start + cfg.docs_per_file]
            write_parquet(to_table(chunk, start), tmp / f"part-{part:05d}.parquet", schemas.CORPUS)
    counts = {}
    for d in docs:
        key = "fact" if d.fact_ids else (d.procedure or "filler")
        counts[key] = counts.get(key, 0) + 1
    print(f"corpus: {len(docs)} documents -> {out}/ ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return out
