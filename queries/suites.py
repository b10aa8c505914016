"""The query suites: factual, the three reasoning tasks, and their controls, in the paper's formats.

Reasoning queries use held-out problems only (never worked in the corpus). Controls follow the paper
(their texts: ``pipeline/world/controls.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pipeline.world.controls import factual_control_prompt, one_fact_per_entity, reasoning_control
from pipeline.world.entities import World
from pipeline.world.tasks import REASONING_TASKS, TASK_KIND, sample


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
