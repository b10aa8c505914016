"""The generated world: deterministic, and its ground truth is true."""

import contextlib
import io
import re

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import make_params

from pipeline.core import schemas
from pipeline.stages import corpus
from pipeline.world import filler
from pipeline.world.documents import PROCEDURE_FORMATS, STYLES
from pipeline.world.generate import generate_documents, world_for
from pipeline.world.tasks import REASONING_TASKS, SAMPLERS, is_held_out
from queries.answers import mentions
from queries.suites import build_suites


@pytest.fixture(scope="module", params=STYLES)
def world_docs(tmp_path_factory, request):
    """A mid-sized world in each style: every fact kind and procedure format, in under a second."""
    params = make_params(tmp_path_factory.mktemp("w"), corpus={"n_entities": 6, "procedure_docs_per_task": 40,
                                                               "filler_docs": 60, "fact_doc_repeats": 3,
                                                               "style": request.param})
    assert params.corpus.reading_docs == 6
    world = world_for(params)
    return params, world, generate_documents(params.corpus, world, params.seed)


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    a, b = make_params(tmp_path / "a"), make_params(tmp_path / "b")
    corpus.run(a)
    corpus.run(b)
    files_a = sorted((tmp_path / "a/data/corpus").glob("*.parquet"))
    files_b = sorted((tmp_path / "b/data/corpus").glob("*.parquet"))
    assert len(files_a) > 1  # docs_per_file splits the test corpus
    assert [f.name for f in files_a] == [f.name for f in files_b]
    assert all(fa.read_bytes() == fb.read_bytes() for fa, fb in zip(files_a, files_b))
    other = make_params(tmp_path / "c", seed=1)
    assert world_for(other).facts != world_for(a).facts


def test_corpus_schema_and_ids(tmp_path):
    params = make_params(tmp_path)
    corpus.run(params)
    table = ds.dataset(params.corpus.out_dir, format="parquet").to_table()
    assert pq.read_schema(next((tmp_path / "data/corpus").glob("*.parquet"))) == schemas.CORPUS
    assert sorted(table.column("doc_id").to_pylist()) == list(range(table.num_rows))
    assert set(table.column("source").to_pylist()) <= set(filler._TEMPLATES)
    assert min(table.column("n_tokens").to_pylist()) > 0
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary files left behind


def test_every_fact_is_stated_exactly_where_labelled(world_docs):
    _, world, docs = world_docs
    for fact in world.facts:
        labelled = [d for d in docs if fact.fact_id in d.fact_ids]
        assert 3 <= len(labelled) <= 3 * 3, fact.fact_id  # wiki, trivia and narrative, each repeated
        assert {d.source for d in labelled} == {"wiki", "math_and_trivia", "webdata"}
        for d in labelled:
            assert fact.entity in d.text and mentions(d.text, fact.value), (fact, d.text)
        unlabelled = [d for d in docs if fact.fact_id not in d.fact_ids]
        assert not [d for d in unlabelled if fact.entity in d.text and mentions(d.text, fact.value)]


def test_factual_queries_ask_facts_of_the_corpus(world_docs):
    params, world, _ = world_docs
    counts = dict(factual=10, arithmetic=3, slope=3, linear=3, factual_control=2, reasoning_control=3)
    specs = build_suites(world_for(params, n_unseen=2), counts, params.seed)
    facts = {f.fact_id: f for f in world.facts}
    for spec in (s for s in specs if s.task == "factual"):
        assert facts[spec.fact_id].value == spec.answer and facts[spec.fact_id].entity in spec.prompt
    corpus_entities = {f.entity for f in world.facts}
    for spec in (s for s in specs if s.task == "factual_control"):
        assert spec.answer in spec.prompt and not any(e in spec.prompt for e in corpus_entities)


_BINARY = re.compile(r"(?<![\d)])(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)")
# Each problem a procedure document states, and how to solve it independently of the world's code.
_PROBLEM = {
    "arithmetic": (
        re.compile(r"\((\d+) ([-+*]) (\d+)\) ([-+*]) (\d+)"),
        lambda a, o1, b, o2, c: _apply(_apply(int(a), o1, int(b)), o2, int(c)),
    ),
    "slope": (
        re.compile(r"What is the slope of the line passing through the points \((\d+), (\d+)\) and \((\d+), (\d+)\)"),
        lambda x1, y1, x2, y2: (int(y2) - int(y1)) / (int(x2) - int(x1)),
    ),
    "linear": (re.compile(r"Solve for x: (\d+)x \+ (\d+) = (\d+)"), lambda a, b, c: (int(c) - int(b)) / int(a)),
}
_LAST_NUMBER = re.compile(r"-?\d+(?=\D*$)")


def stated_answers(doc) -> list[tuple[tuple[str, ...], int]]:
    """Each problem in ``doc`` with the answer the document gives it: in code, the ``answer N`` comment;
    elsewhere the last number before the next problem (every solution ends by stating its answer)."""
    pattern, _ = _PROBLEM[doc.procedure]
    found = list(pattern.finditer(doc.text))
    if doc.source == "code":
        return [(m.groups(), int(a)) for m, a in zip(found, re.findall(r"answer (-?\d+)", doc.text))]
    ends = [m.start() for m in found[1:]] + [len(doc.text)]
    return [(m.groups(), int(_LAST_NUMBER.search(doc.text[m.end():end]).group())) for m, end in zip(found, ends)]


def _apply(a, op, b):
    if op == "/":
        return a / b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def test_every_worked_number_in_procedure_documents_is_right(world_docs):
    _, _, docs = world_docs
    assert {d.procedure for d in docs if d.procedure} == {*REASONING_TASKS, "reading"}
    procedures = [d for d in docs if d.procedure in REASONING_TASKS]
    steps = answers = 0
    for d in procedures:
        for a, op, b, result in _BINARY.findall(d.text):  # every worked step
            assert _apply(int(a), op, int(b)) == int(result), (a, op, b, result, d.text)
            steps += 1
        _, solve = _PROBLEM[d.procedure]
        for operands, stated in stated_answers(d):  # every final answer, recomputed independently
            assert solve(*operands) == stated, (operands, stated, d.text)
            answers += 1
        if d.source == "code":  # the code really runs and prints the answers its comments state
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(d.text.strip("`").removeprefix("python\n"), {})
            printed = [int(x) for x in out.getvalue().split()]
            stated = [int(x) for x in re.findall(r"answer (-?\d+)", d.text)]
            assert printed == stated and printed, d.text
    examples = sum(1 for _ in procedures) * 3  # examples_per_procedure_doc in the test profile
    assert steps >= 2 * examples and answers == examples


def test_reading_documents_answer_from_their_own_context(world_docs):
    _, world, docs = world_docs
    reading = [d for d in docs if d.procedure == "reading"]
    assert len(reading) == 6  # the test profile's corpus.reading_docs
    corpus_entities = {f.entity for f in world.facts}
    throwaway = {f.entity for f in world.throwaway}
    for d in reading:
        *context, answer = d.text.split("\n")
        numbers = re.findall(r"-?\d+", answer)
        words = set(re.findall(r"[A-Z][a-z]+", answer)) - {"The", "Mount", "There"}
        assert all(n in "\n".join(context) for n in numbers) and all(w in context[0] for w in words), d.text
        assert not any(e in d.text for e in corpus_entities)  # never the world's own facts
    assert sum(any(e in d.text for e in throwaway) for d in reading) == len(reading) // 2


def test_procedure_formats_and_sources(world_docs):
    _, _, docs = world_docs
    by_task = {t: {d.source for d in docs if d.procedure == t} for t in REASONING_TASKS}
    for sources in by_task.values():  # step-by-step, Q&A, prose and code all present
        assert {"math_and_trivia", "stackexchange", "code"} <= sources and sources & {
            "wiki",
            "arxiv_markdown",
            "webdata",
        }
    assert len(PROCEDURE_FORMATS) == 4


def test_query_problems_never_appear_in_the_corpus(world_docs):
    params, world, docs = world_docs
    counts = dict(factual=3, arithmetic=15, slope=15, linear=15, factual_control=1, reasoning_control=1)
    specs = build_suites(world_for(params, n_unseen=1), counts, params.seed)
    texts = "\n".join(d.text for d in docs)
    reasoning = [s for s in specs if s.task in REASONING_TASKS]
    assert len({s.prompt for s in reasoning}) == 45
    for spec in reasoning:
        question = spec.prompt.split("\n")[0].removeprefix("Calculate the answer: ").removeprefix("Solve for x: ")
        assert question not in texts, spec.prompt


def test_held_out_split_is_a_stable_tenth():
    import random
    rng = random.Random(0)
    for task, sampler in SAMPLERS.items():
        problems = [sampler(rng) for _ in range(4000)]
        share = sum(is_held_out(p, seed=0) for p in problems) / len(problems)
        assert 0.06 < share < 0.14, (task, share)
        assert [is_held_out(p, 0) for p in problems[:50]] == [is_held_out(p, 0) for p in problems[:50]]


def test_bench_packs_world_documents_in_order_to_fill_a_context(world_docs):
    from pipeline.bench.common import packed
    from pipeline.core.model import train_tokenizer

    docs = world_docs[2]
    long = packed(docs, 256)
    tokenizer = train_tokenizer([d.text for d in docs], 1000)
    assert len(long) > 10
    assert all(len(tokenizer(d.text)["input_ids"]) >= 256 for d in long)  # pre-tokens bound BPE tokens below
    joined = "\n\n".join(d.text for d in long)
    assert joined == "\n\n".join(d.text for d in docs)[:len(joined)]  # consecutive documents, none skipped


def test_prose_solutions_vary_their_wording_and_read_back_like_terse_ones():
    """Answer extraction and the segment rules read the text, so they need no change for prose."""
    import random

    from pipeline.world import prose
    from queries.answers import final_answer, is_correct
    from queries.segments import char_segments

    rng = random.Random(0)
    for task, sampler in SAMPLERS.items():
        problems = [sampler(rng) for _ in range(40)]
        texts = [prose.completion(p, rng) for p in problems]
        assert len({t.split("\n")[0] for t in texts}) == len(prose.PHRASES[task][0])  # every opening is used
        for p, text in zip(problems, texts):
            assert "\n\n" not in text  # a blank line would end the completion early
            assert final_answer(text) == p.answer and is_correct("reasoning", text, str(p.answer)), text
            segments = char_segments(p.prompt, text, str(p.answer))
            end = text.rindex(str(p.answer))
            assert segments[end] == "answer" and "scaffold" in segments, text
