"""The controls' texts, shared by the world and the suites: the world's `reading` documents are written in the
controls' form, and the suites ask them.

A factual control gives the fact in the prompt about an entity the corpus never mentions; a reasoning control
asks back a number the prompt states, under the same "Think step-by-step." cue.
"""

from __future__ import annotations

import random

from pipeline.world.entities import Fact, by_entity
from pipeline.world.tasks import REASONING_TASKS, THINK

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


def one_fact_per_entity(facts: tuple[Fact, ...]) -> list[Fact]:
    """Entity i contributes its (i mod n)-th fact, so consecutive entities vary the attribute asked."""
    return [group[i % len(group)] for i, group in enumerate(by_entity(facts))]


def _lower_first(sentence: str) -> str:
    """Lower-case a leading article so the sentence reads on after "In the story, " (names keep capitals)."""
    first, _, rest = sentence.partition(" ")
    return (first.lower() if first in ("The", "A") else first) + " " + rest
