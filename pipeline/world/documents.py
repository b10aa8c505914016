"""Documents of the generated world: the ones that state facts and the ones that show procedures.

Each writer returns ``Document`` objects that carry their ground truth (``fact_ids`` or
``procedure``), so the analysis can later ask whether influence landed on the right kind of text.
Procedure documents come in the four formats that carry procedural knowledge in the paper:
step-by-step worked examples, Q&A threads, prose walk-throughs and code with example calls.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pipeline.world import prose
from pipeline.world.entities import Fact
from pipeline.world.tasks import Problem

SOURCES = ("wiki", "math_and_trivia", "stackexchange", "code", "arxiv_markdown", "webdata")
PROCEDURE_FORMATS = ("step", "qa", "prose", "code")
STYLES = ("terse", "prose")  # terse: one template per format; prose: each step and fact said in several ways


@dataclass(frozen=True)
class Document:
    text: str
    source: str
    fact_ids: list[str] = field(default_factory=list)
    procedure: str | None = None


# ---------------------------------------------------------------- facts

def wiki_article(facts: list[Fact], rng: random.Random) -> Document:
    """An encyclopedia entry about one entity: it states every fact about it."""
    entity, kind = facts[0].entity, facts[0].kind
    title = f"Mount {entity}" if kind == "mountain" else entity
    intro = {"country": f"{entity} is a small country known for its rivers and old stone towns.",
             "person": f"{entity} was a scholar and traveller whose notebooks are still read today.",
             "mountain": f"Mount {entity} is a mountain with a long ridge and a glacier on its north side."}[kind]
    body = " ".join(f.fill(rng.choice(f.attribute.statements)) for f in rng.sample(facts, len(facts)))
    return Document(f"{title}\n\n{intro} {body}", "wiki", [f.fact_id for f in facts])


def trivia(fact: Fact, rng: random.Random, style: str = "terse") -> Document:
    """A quiz question in exactly the probe's format, sometimes under a header; in prose, answered by any of
    the fact's statements and sometimes a sentence more."""
    header = rng.choice(
        ["", f"Trivia night, round {rng.randint(1, 9)}.\n", "Quiz question.\n", "Test your knowledge.\n"]
    )
    answer = fact.answer_sentence if style == "terse" else \
        fact.fill(rng.choice(fact.attribute.statements)) + fact.fill(rng.choice(prose.FACT_CODAS))
    return Document(f"{header}{fact.question}\n{answer}", "math_and_trivia", [fact.fact_id])


def narrative(fact: Fact, rng: random.Random) -> Document:
    return Document(fact.fill(rng.choice(fact.attribute.narratives)), "webdata", [fact.fact_id])


# ---------------------------------------------------------------- reading (answering from context)

def reading_document(prompt: str, completion: str, rng: random.Random) -> Document:
    """A question answered from its own context, in the control queries' formats.

    It teaches the model to copy an answer (and an entity's name) from the prompt, so that controls
    are answerable; its entities are throwaway ones, never the world's facts.
    """
    return Document(f"{prompt}\n{completion}", rng.choice(["math_and_trivia", "webdata"]), [], "reading")


# ---------------------------------------------------------------- procedures

def _as_sentence(question: str) -> str:
    return question if question.endswith("?") else question + "."


def _explain(p: Problem) -> str:
    """The steps of one problem in words."""
    s = p.steps
    if p.task == "arithmetic":
        return f"Work inside the brackets first: {s[0]}. Then {s[1]}. So the answer is {p.answer}."
    if p.task == "slope":
        return (f"The change in y is {s[0]}. The change in x is {s[1]}. "
                f"The slope is the change in y divided by the change in x: {s[2]}. So the slope is {p.answer}.")
    if p.task == "linear":
        a = p.operands[0]
        return (
            f"Move the constant to the other side: {a}x = {s[0]}. Then divide by {a}: x = {s[1]}. So x is {p.answer}."
        )
    raise ValueError(p.task)


_QA_TITLES = {
    "arithmetic": [
        "How do I evaluate an expression with brackets by hand?",
        "Order of operations with a bracket and a second step",
    ],
    "slope": ["How do I find the slope from two points?", "Slope of a line through two given points"],
    "linear": ["How do I solve a linear equation like ax + b = c?", "Solving for x in a one-step linear equation"],
}
_PROSE_INTROS = {
    "arithmetic": [
        "## Brackets come first",
        "When an expression has a bracket, the bracket is computed before anything else.",
    ],
    "slope": ["## The slope of a line", "The slope measures how much y changes for each unit change in x."],
    "linear": [
        "## Solving linear equations",
        "To solve an equation of the form ax + b = c we undo each operation in turn.",
    ],
}
_CODE = {
    "arithmetic": (
        "def two_step(a, b, c, first, second):\n"
        '    """Evaluate (a first b) second c, one operation at a time."""\n'
        '    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}\n'
        "    inner = ops[first](a, b)\n"
        "    return ops[second](inner, c)\n",
        lambda p: (
            f"two_step({p.operands[0]}, {p.operands[2]}, {p.operands[4]}, "
            f'"{chr(p.operands[1])}", "{chr(p.operands[3])}")'
        ),
    ),
    "slope": (
        "def slope(x1, y1, x2, y2):\n"
        '    """Slope of the line through (x1, y1) and (x2, y2)."""\n'
        "    dy = y2 - y1\n"
        "    dx = x2 - x1\n"
        "    return dy // dx  # exact: these points have an integer slope\n",
        lambda p: "slope({}, {}, {}, {})".format(*p.operands),
    ),
    "linear": (
        "def solve_linear(a, b, c):\n"
        '    """Solve a*x + b = c for x."""\n'
        "    ax = c - b\n"
        "    return ax // a  # exact: the solution is an integer\n",
        lambda p: "solve_linear({}, {}, {})".format(*p.operands),
    ),
}


def procedure_document(task: str, fmt: str, problems: list[Problem], rng: random.Random,
                       style: str = "terse") -> Document:
    """One document showing how to solve ``task`` on ``problems`` (never the probe's own problems)."""
    worked = (lambda p: p.completion) if style == "terse" else (lambda p: prose.completion(p, rng))
    explain = _explain if style == "terse" else (lambda p: prose.paragraph(p, rng))
    if fmt == "step":
        text = "\n\n".join(f"{p.prompt}\n{worked(p)}" for p in problems)
        source = "math_and_trivia"
    elif fmt == "qa":
        question = problems[0].question
        answers = "\n\n".join(
            f"Answer: {explain(p)}" if i == 0 else f"Another example: {_as_sentence(p.question)} {explain(p)}"
            for i, p in enumerate(problems)
        )
        text = f"Question: {rng.choice(_QA_TITLES[task])}\nFor example: {question}\n\n{answers}"
        source = "stackexchange"
    elif fmt == "prose":
        title, intro = _PROSE_INTROS[task]
        examples = " ".join(f"For example: {_as_sentence(p.question)} {explain(p)}" for p in problems)
        text = f"{title}\n\n{intro} {examples}"
        source = rng.choice(["wiki", "arxiv_markdown", "webdata"])
    elif fmt == "code":
        definition, call = _CODE[task]
        if style == "prose":  # each of the method's two steps commented in words, phrased per document
            comments = {anchor: rng.choice(options) for anchor, options in prose.CODE_COMMENTS[task]}
            definition = "\n".join(f"    {comments[line.split()[0]]}\n{line}" if line.split()[:1] and line.split()[0]
                                   in comments and line.startswith("    ") else line for line in definition.split("\n"))
        calls = "\n".join(f"print({call(p)})  # {p.question}: {'; '.join(p.step_lines)}; answer {p.answer}"
                          for p in problems)
        text = f"```python\n{definition}\n\n{calls}\n```"
        source = "code"
    else:
        raise ValueError(f"unknown procedure format {fmt!r}")
    return Document(text, source, [], task)
