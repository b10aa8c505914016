"""The three reasoning tasks of Ruis et al. (2024), as problems that know their own solution.

One definition serves both sides of the generated world: the corpus writes procedure documents from
``Problem.steps`` with other numbers, and the probe asks ``Problem.prompt`` and checks against
``Problem.answer``. Number ranges are chosen so that a ~2M-parameter model can learn the procedure
on a laptop CPU: single-digit operands, integer slopes and integer solutions.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

THINK = "Think step-by-step."


@dataclass(frozen=True)
class Step:
    """One line of a worked solution: ``left op right = result``."""

    left: int
    op: str
    right: int
    result: int

    @property
    def expr(self) -> str:
        return f"{self.left} {self.op} {self.right}"

    def __str__(self) -> str:
        return f"{self.expr} = {self.result}"


@dataclass(frozen=True)
class Problem:
    """A reasoning problem: its prompt, the worked steps, and the final answer."""

    task: str
    operands: tuple[int, ...]
    steps: tuple[Step, ...]
    question: str

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    @property
    def step_answers(self) -> list[str]:
        """Intermediate results, without the final answer (for answer-in-top-k analyses)."""
        return [str(s.result) for s in self.steps[:-1]]

    @property
    def prompt(self) -> str:
        return f"{self.question}\n\n{THINK}"

    @property
    def completion(self) -> str:
        """The canonical step-by-step completion a model trained on the world should produce."""
        return "\n".join([*self.step_lines, f"The answer is {self.answer}."])

    @property
    def step_lines(self) -> list[str]:
        return [str(s) for s in self.steps]

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        """Identity of the problem: used to keep query problems out of the training corpus."""
        return (self.task, self.operands)


def _apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        assert b != 0 and a % b == 0, (a, op, b)
        return a // b
    raise ValueError(f"unknown operator {op!r}")


def arithmetic(a: int, op1: str, b: int, op2: str, c: int) -> Problem:
    """Two-step arithmetic ``(a op1 b) op2 c``, e.g. ``(7 - 4) * 7``."""
    first = Step(a, op1, b, _apply(a, op1, b))
    second = Step(first.result, op2, c, _apply(first.result, op2, c))
    return Problem("arithmetic", (a, ord(op1), b, ord(op2), c), (first, second),
                   f"Calculate the answer: ({a} {op1} {b}) {op2} {c}")


def slope(x1: int, y1: int, x2: int, y2: int) -> Problem:
    """Slope of the line through ``(x1, y1)`` and ``(x2, y2)``; ``x2 - x1`` divides ``y2 - y1``."""
    dy = Step(y2, "-", y1, y2 - y1)
    dx = Step(x2, "-", x1, x2 - x1)
    m = Step(dy.result, "/", dx.result, _apply(dy.result, "/", dx.result))
    return Problem("slope", (x1, y1, x2, y2), (dy, dx, m),
                   f"What is the slope of the line passing through the points ({x1}, {y1}) and ({x2}, {y2})?")


def linear(a: int, b: int, c: int) -> Problem:
    """Solve ``a x + b = c`` for an integer x."""
    ax = Step(c, "-", b, c - b)
    x = Step(ax.result, "/", a, _apply(ax.result, "/", a))
    return Problem("linear", (a, b, c), (ax, x), f"Solve for x: {a}x + {b} = {c}")


def sample_arithmetic(rng: random.Random) -> Problem:
    op1 = rng.choice("+-")
    a = rng.randint(2, 9)
    b = rng.randint(1, a - 1) if op1 == "-" else rng.randint(1, 9)  # brackets stay positive, as in the paper
    return arithmetic(a, op1, b, rng.choice("*+"), rng.randint(2, 9))


def sample_slope(rng: random.Random) -> Problem:
    dx = rng.randint(1, 3)
    m = rng.randint(-6, 6)
    x1 = rng.randint(0, 9)
    lo, hi = max(0, -m * dx), min(30, 30 - m * dx)  # both y values stay in 0..30
    y1 = rng.randint(lo, hi)
    return slope(x1, y1, x1 + dx, y1 + m * dx)


def sample_linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 9), rng.randint(1, 9), rng.randint(1, 9)
    return linear(a, b, a * x + b)


SAMPLERS = {"arithmetic": sample_arithmetic, "slope": sample_slope, "linear": sample_linear}
REASONING_TASKS = tuple(SAMPLERS)
# Every task the suites ask, in the order reports show them, with the kind of knowledge it needs. A
# control asks the same kind of question with the answer given in the prompt.
TASK_KIND = {"factual": "factual", **{task: "reasoning" for task in REASONING_TASKS},
             "factual_control": "factual", "reasoning_control": "reasoning"}
TASKS = tuple(TASK_KIND)
CONTROLS = ("factual_control", "reasoning_control")


def is_held_out(problem: Problem, seed: int, share: float = 0.1) -> bool:
    """A fixed ``share`` of each task's problems never appears in the corpus; queries come only from them.

    A stable hash (not Python's salted ``hash``) keeps the split identical across processes and runs.
    """
    digest = hashlib.sha256(f"{seed}:{problem.key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def sample(task: str, rng: random.Random, seed: int, held_out: bool) -> Problem:
    """Draw a problem of ``task`` from the held-out part (queries) or the rest (corpus)."""
    while True:
        problem = SAMPLERS[task](rng)
        if is_held_out(problem, seed) == held_out:
            return problem
