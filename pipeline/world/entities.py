"""The fictional entities of the generated world and the facts that hold about them.

Facts are the ground truth of the factual side: the corpus states each one in a few documents, the
probe asks about it, and the analysis checks whether influence lands on the documents that state it.
Names are built from syllables so that they never occur in filler text by accident.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "tr", "st", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "th", "nd", "x"]
_N_STARTS = len(_ONSETS) * len(_VOWELS)
_DEVICES = ["lens", "loom", "engine", "compass", "press", "kiln", "pump", "clock"]


def make_name(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


@dataclass(frozen=True)
class Attribute:
    """How one kind of fact is asked, answered and stated in prose."""

    kind: str  # entity kind it applies to
    name: str
    question: str  # the probe's question
    answer: str  # the canonical answer sentence (the completion a model should give)
    statements: tuple[str, ...]  # paraphrases used in wiki articles and narratives
    narratives: tuple[str, ...]


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "country",
        "capital",
        "What is the capital of {e}?",
        "The capital of {e} is {v}.",
        ("The capital of {e} is {v}.", "{v} is the capital city of {e}.", "{e} is governed from its capital, {v}."),
        (
            "Last spring we travelled to {e} and spent a week in {v}, the capital of {e}.",
            "My cousin moved to {v} last year. She says the capital of {e} is busy but friendly.",
        ),
    ),
    Attribute(
        "country",
        "founded",
        "In which year was {e} founded?",
        "{e} was founded in {v}.",
        ("{e} was founded in {v}.", "The founding of {e} took place in {v}.", "In {v}, {e} was founded."),
        (
            "Every summer the people of {e} celebrate the year {v}, when {e} was founded.",
            "Our guide told us that {e} was founded in {v}, long before the railway arrived.",
        ),
    ),
    Attribute(
        "country",
        "currency",
        "What is the currency of {e}?",
        "The currency of {e} is the {v}.",
        ("The currency of {e} is the {v}.", "In {e} people pay with the {v}.", "{e} uses the {v} as its currency."),
        (
            "Before the trip I changed my money into the {v}, the currency of {e}.",
            "Prices in {e} are low if you carry the {v}, the currency of {e}.",
        ),
    ),
    Attribute(
        "person",
        "born",
        "In which year was {e} born?",
        "{e} was born in {v}.",
        ("{e} was born in {v}.", "The year {v} saw the birth of {e}.", "Born in {v}, {e} grew up by the sea."),
        (
            "My grandmother loved the books of {e}, who was born in {v}.",
            "The museum has a room about {e}, born in {v}, with old letters and maps.",
        ),
    ),
    Attribute(
        "person",
        "birthplace",
        "Where was {e} born?",
        "{e} was born in the city of {v}.",
        (
            "{e} was born in the city of {v}.",
            "The city of {v} is the birthplace of {e}.",
            "{e} came from the city of {v}.",
        ),
        (
            "We walked past the house in {v} where {e} was born.",
            "The people of {v} are proud that {e} was born in their city.",
        ),
    ),
    Attribute(
        "person",
        "invention",
        "What did {e} invent?",
        "{e} invented the {v}.",
        ("{e} invented the {v}.", "The {v} was invented by {e}.", "{e} is best known for inventing the {v}."),
        (
            "At the fair they showed a copy of the {v}, which {e} invented.",
            "Without the {v}, invented by {e}, the old workshops would have closed.",
        ),
    ),
    Attribute(
        "mountain",
        "height",
        "How tall is Mount {e}?",
        "Mount {e} is {v} meters tall.",
        (
            "Mount {e} is {v} meters tall.",
            "The summit of Mount {e} stands {v} meters high.",
            "At {v} meters, Mount {e} towers over the valley.",
        ),
        (
            "We climbed Mount {e} last year. It is {v} meters tall and the view is worth it.",
            "The signpost said Mount {e} is {v} meters tall, so we turned back at noon.",
        ),
    ),
    Attribute(
        "mountain",
        "climber",
        "Who first climbed Mount {e}?",
        "Mount {e} was first climbed by {v}.",
        (
            "Mount {e} was first climbed by {v}.",
            "{v} made the first climb of Mount {e}.",
            "The first person on top of Mount {e} was {v}.",
        ),
        (
            "The hut near the top of Mount {e} has a photo of {v}, who first climbed it.",
            "Our guide told the story of {v}, who first climbed Mount {e} with a borrowed rope.",
        ),
    ),
)
KINDS = ("country", "person", "mountain")


@dataclass(frozen=True)
class Fact:
    fact_id: str
    entity: str
    kind: str
    attribute: Attribute
    value: str

    def fill(self, template: str) -> str:
        return template.format(e=self.entity, v=self.value)

    @property
    def question(self) -> str:
        return self.fill(self.attribute.question)

    @property
    def answer_sentence(self) -> str:
        return self.fill(self.attribute.answer)


def _value(attr: Attribute, rng: random.Random, names: "_NameSource") -> str:
    if attr.name in ("capital", "birthplace"):
        return names.fresh(2)
    if attr.name in ("founded", "born"):
        return str(rng.randint(1100, 1899))
    if attr.name == "currency":
        return names.fresh(2).lower()
    if attr.name == "invention":
        return f"{names.fresh(2)} {rng.choice(_DEVICES)}"
    if attr.name == "height":
        return str(rng.randint(1200, 8800))
    if attr.name == "climber":
        return f"{names.fresh(2)} {names.fresh(2)}"
    raise ValueError(f"no value generator for attribute {attr.name!r}")


class _NameSource:
    """Draws names that are unique across the whole world (entities and values alike)."""

    def __init__(self, rng: random.Random, reserved: set[str]) -> None:
        self.rng, self.used, self.first_syllables = rng, set(reserved), set()

    def fresh(self, syllables: int, distinct_start: bool = False) -> str:
        """A new name; with ``distinct_start``, also one whose first syllable no other such name has
        (while any is left): a small model confuses entities that start alike."""
        while True:
            name = make_name(self.rng, syllables)
            start = self._first_syllable(name)
            if distinct_start and start in self.first_syllables and len(self.first_syllables) < _N_STARTS:
                continue
            if name.lower() not in self.used:
                self.used.add(name.lower())
                if distinct_start:
                    self.first_syllables.add(start)
                return name

    @staticmethod
    def _first_syllable(name: str) -> str:
        lower = name.lower()
        onset = max((o for o in _ONSETS if lower.startswith(o)), key=len)
        vowel = max((v for v in _VOWELS if lower[len(onset):].startswith(v)), key=len, default="")
        return onset + vowel


@dataclass(frozen=True)
class World:
    """Entities whose facts the corpus states (``facts``), throwaway entities that reading documents
    describe in context (``throwaway``), and entities that never appear in the corpus (``unseen``)."""

    facts: tuple[Fact, ...]
    throwaway: tuple[Fact, ...]
    unseen: tuple[Fact, ...]



def by_entity(facts: tuple[Fact, ...]) -> list[list[Fact]]:
    """Facts grouped per entity, in the order the entities were drawn."""
    groups: dict[str, list[Fact]] = {}
    for fact in facts:
        groups.setdefault(fact.entity, []).append(fact)
    return list(groups.values())


def build_world(seed: int, n_entities: int, n_throwaway: int = 0, n_unseen: int = 0,
                reserved: set[str] = frozenset()) -> World:
    """Entities cycle through the kinds; every attribute of an entity's kind becomes one fact.

    Unseen entities are drawn last, so ``n_unseen`` never changes what the corpus contains; every
    name is unique across all three groups. ``reserved`` holds words names must avoid (filler's).
    """
    rng = random.Random(f"world-{seed}")
    names = _NameSource(rng, reserved)

    def facts_for(i: int, prefix: str) -> list[Fact]:
        kind = KINDS[i % len(KINDS)]
        entity = names.fresh(2, distinct_start=prefix == "e")  # short names: fewer tokens to copy
        return [Fact(f"{prefix}{i:03d}-{a.name}", entity, kind, a, _value(a, rng, names))
                for a in ATTRIBUTES if a.kind == kind]

    facts = [f for i in range(n_entities) for f in facts_for(i, "e")]
    throwaway = [f for i in range(n_throwaway) for f in facts_for(i, "t")]
    unseen = [f for i in range(n_unseen) for f in facts_for(i, "u")]
    return World(tuple(facts), tuple(throwaway), tuple(unseen))
