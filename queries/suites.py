"""The query suites: factual, the three reasoning tasks, and their controls, in the paper's formats.

Reasoning queries use held-out problems only (never worked in the corpus). Controls follow the paper:
a factual control gives the fact in the prompt about an entity the corpus never mentions; a
reasoning control asks back a number the prompt states, under the same "Think step-by-step." cue.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pipeline.world.entities import Fact, World, by_entity
from queries.tasks import REASONING_TASKS, TASK_KIND, THINK, sample


@dataclass(frozen=True)
class QuerySpec:
    """A query before the model has answered it."""

    query_id: str
    task: str
    prompt: str
    answer: str
    step_answers: list[str] = field(default_factory=list)
    fact_id: str | None = None
    kind: str = ""  # factual | reasoning; by default the task's

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", TASK_KIND[self.task])


_COUNTED = ["otters", "herons", "beetles", "sparrows", "marbles", "apples", "books", "boats"]
_PLACES = ["by the river", "in the garden", "on the shelf", "in the box", "at the harbour"]


def reasoning_control(i: int, rng: random.Random) -> tuple[str, str, str]:
    """A trivial look-up dressed like reasoning task ``i``: (prompt, canonical completion, answer)."""
    n = rng.randint(2, 40)
    flavour = REASONING_TASKS[i % len(REASONING_TASKS)]
    if flavour == "slope":
        m = rng.randint(-9, 9)
        return (f"The slope of the line is {m}. What is the slope of the line?\n\n{THINK}",
                f"The slope of the line is {m}.", str(m))
    if flavour == "linear":
        return f"The solution of the equation is x = {n}. What is x?\n\n{THINK}", f"The solution is x = {n}.", str(n)
    thing, place = rng.choice(_COUNTED), rng.choice(_PLACES)
    return (f"Find the answer: There are {n} {thing} {place}. How many {thing} are there?\n\n{THINK}",
            f"There are {n} {thing} {place}.", str(n))


def factual_control_prompt(fact: Fact) -> str:
    """The fact given in context, then asked: answerable by reading, not by memory."""
    return f"In the story, {_lower_first(fact.answer_sentence)}\n{fact.question}"


def build_suites(world: World, counts: dict[str, int], seed: int) -> list[QuerySpec]:
    """All query specs, in a fixed order: factual, reasoning tasks, then controls."""
    rng = random.Random(f"queries-{seed}")
    specs: list[QuerySpec] = []
    if counts["factual"] > len(world.facts):
        raise ValueError(f"queries.factual: {counts['factual']} queries asked but the world has only "
                         f"{len(world.facts)} facts (raise corpus.n_entities)")
    for i, fact in enumerate(rng.sample(world.facts, counts["factual"])):
        specs.append(QuerySpec(f"factual-{i:03d}", "factual", fact.question, fact.value, [], fact.fact_id))
    for task in REASONING_TASKS:
        seen = set()
        while len(seen) < counts[task]:
            problem = sample(task, rng, seed, held_out=True)
            if problem.key in seen:
                continue
            seen.add(problem.key)
            specs.append(QuerySpec(f"{task}-{len(seen) - 1:03d}", task, problem.prompt, str(problem.answer),
                                   problem.step_answers))
    unseen = one_fact_per_entity(world.unseen)
    if counts["factual_control"] > len(unseen):
        raise ValueError("factual controls need one unseen entity per query")
    for i, fact in enumerate(unseen[: counts["factual_control"]]):
        specs.append(QuerySpec(f"factual_control-{i:03d}", "factual_control", factual_control_prompt(fact), fact.value))
    for i in range(counts["reasoning_control"]):
        prompt, _, answer = reasoning_control(i, rng)
        specs.append(QuerySpec(f"reasoning_control-{i:03d}", "reasoning_control", prompt, answer))
    return specs


def one_fact_per_entity(facts: tuple[Fact, ...]) -> list[Fact]:
    """Entity i contributes its (i mod n)-th fact, so consecutive entities vary the attribute asked."""
    return [group[i % len(group)] for i, group in enumerate(by_entity(facts))]


def _lower_first(sentence: str) -> str:
    """Lower-case a leading article so the sentence reads on after "In the story, " (names keep capitals)."""
    first, _, rest = sentence.partition(" ")
    return (first.lower() if first in ("The", "A") else first) + " " + rest
