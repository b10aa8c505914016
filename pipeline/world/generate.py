"""The world's corpus: every document, with its ground truth, from the seed and the corpus settings.

The same seed and settings give the same documents in the same order. Documents state facts (wiki
articles, trivia, narratives; each repeated as paraphrases), show procedures (four formats per
reasoning task, never on a query's own numbers), answer questions from their own context
(``reading``, about throwaway entities) or are filler. Order is shuffled so that no shard is all one
kind.
"""

from __future__ import annotations

import random

import pyarrow as pa

from pipeline.core import schemas
from pipeline.core.config import CorpusConfig, Params
from pipeline.core.corpus_reader import n_pre_tokens
from pipeline.world import filler
from pipeline.world.controls import factual_control_prompt, one_fact_per_entity, reasoning_control
from pipeline.world.documents import (
    PROCEDURE_FORMATS,
    Document,
    narrative,
    procedure_document,
    reading_document,
    trivia,
    wiki_article,
)
from pipeline.world.entities import World, build_world, by_entity
from pipeline.world.tasks import REASONING_TASKS, sample


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
            docs += [trivia(fact, rng, cfg.style) for _ in range(cfg.fact_doc_repeats)]
            docs += [narrative(fact, rng) for _ in range(cfg.fact_doc_repeats)]
    for task in REASONING_TASKS:
        for i in range(cfg.procedure_docs_per_task):
            problems = [sample(task, rng, seed, held_out=False) for _ in range(cfg.examples_per_procedure_doc)]
            docs.append(
                procedure_document(task, PROCEDURE_FORMATS[i % len(PROCEDURE_FORMATS)], problems, rng, cfg.style)
            )
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
