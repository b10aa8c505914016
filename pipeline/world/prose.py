"""The `prose` world style: each step of a solution, and each fact, said in one of several ways.

The published completions of Ruis et al. (2024) explain in sentences ("First, let's evaluate the
expression inside the parentheses: 4 + 2 = 6 ... Therefore, the result of the expression is 90.").
Here every step has several phrasings in that register, drawn at random per worked example, so a
model that learns a procedure stays uncertain about its wording, as it would in natural text. The
computed lines keep the world's one notation (``a op b = c``), which the tests recompute, and each
solution ends by stating its answer as its last number, which is what answer extraction reads.
Lines within one solution are separated by single newlines; a blank line ends a completion.
"""

from __future__ import annotations

import random

from pipeline.world.tasks import Problem

_ARITHMETIC = (
    ("First, let's evaluate the expression inside the parentheses:", "We start with the part in brackets:",
     "The brackets come first, so we work them out:", "Let's break this down step by step. First, the parentheses:"),
    ("Now, let's calculate the result of the expression:", "Next, we use this result in the second operation:",
     "Then we apply the second operation:", "With the brackets done, the expression becomes {r} {op} {c}:"),
    ("Therefore, the result of the expression is {ans}.", "So the answer is {ans}.", "The final answer is {ans}.",
     "Therefore, the answer to the expression is {ans}."),
)
_SLOPE = (
    ("To find the slope, we divide the change in y by the change in x.",
     "The slope of a line passing through two points is the change in y divided by the change in x.",
     "We can use the formula: slope = (change in y) / (change in x).", "Let's find the slope step by step."),
    ("First, calculate the change in y:", "The difference in y-coordinates is:", "Subtract the y-coordinates:",
     "Start with the change in y, from {y1} to {y2}:"),
    ("Next, calculate the change in x:", "The difference in x-coordinates is:", "Then subtract the x-coordinates:",
     "Now the change in x, from {x1} to {x2}:"),
    ("Now divide the change in y by the change in x:", "Dividing the two differences gives the slope:",
     "The slope is the ratio of the two changes:", "Substituting the values into the formula, we have:"),
    ("Therefore, the slope of the line is {ans}.", "So the slope is {ans}.", "The answer is {ans}.",
     "Therefore, the slope of the line passing through the points ({x1}, {y1}) and ({x2}, {y2}) is {ans}."),
)
_LINEAR = (
    ("Let's solve this step by step.", "Here are the steps to solve for x:", "We need to isolate x.",
     "To solve for x, we undo each operation in turn."),
    ("Subtract {b} from both sides of the equation:", "First, move the constant to the other side:",
     "Take {b} away from both sides:", "Start by removing the constant term {b}:"),
    ("Divide both sides of the equation by {a} to isolate x:", "Then divide by {a}:", "Now divide both sides by {a}:",
     "Finally, divide by the coefficient {a}:"),
    ("Therefore, the solution to the equation is x = {ans}.", "So x is {ans}.", "The answer is {ans}.",
     "Therefore, the solution to the equation {a}x + {b} = {c} is x = {ans}."),
)
PHRASES = {"arithmetic": _ARITHMETIC, "slope": _SLOPE, "linear": _LINEAR}


def solution_lines(p: Problem, rng: random.Random) -> list[str]:
    """One worked solution of ``p``, in sentences: each step's phrasing drawn from ``rng``."""
    s, say = p.steps, (lambda options, **v: rng.choice(options).format(ans=p.answer, **v))
    if p.task == "arithmetic":
        intro, middle, end = _ARITHMETIC
        return [say(intro), str(s[0]), say(middle, r=s[0].result, op=s[1].op, c=s[1].right), str(s[1]), say(end)]
    if p.task == "slope":
        x1, y1, x2, y2 = p.operands
        intro, dy, dx, ratio, end = _SLOPE
        return [say(intro), say(dy, y1=y1, y2=y2), str(s[0]), say(dx, x1=x1, x2=x2), str(s[1]), say(ratio), str(s[2]),
                say(end, x1=x1, y1=y1, x2=x2, y2=y2)]
    if p.task == "linear":
        a, b, c = p.operands
        intro, subtract, divide, end = _LINEAR
        return [say(intro), say(subtract, b=b), str(s[0]), f"{a}x = {s[0].result}", say(divide, a=a), str(s[1]),
                say(end, a=a, b=b, c=c)]
    raise ValueError(p.task)


def completion(p: Problem, rng: random.Random) -> str:
    """A step-by-step completion, one sentence or computed line per line (as a model would write it)."""
    return "\n".join(solution_lines(p, rng))


def paragraph(p: Problem, rng: random.Random) -> str:
    """The same solution as running text (Q&A answers, walk-throughs)."""
    return " ".join(line if line[-1] in ".:?" else line + "." for line in solution_lines(p, rng))


# Code comments in words, one choice per document: they describe the method, not one problem.
# Each keyed by the first word of the code line it goes above.
CODE_COMMENTS = {
    "arithmetic": (
        ("inner", ("# evaluate the part in brackets first", "# first, the expression inside the parentheses")),
        ("return", ("# then apply the second operation to that result", "# now use the result in the second step")),
    ),
    "slope": (
        ("dy", ("# the change in y", "# difference in y-coordinates")),
        ("dx", ("# the change in x", "# difference in x-coordinates")),
    ),
    "linear": (
        ("ax", ("# subtract the constant from both sides", "# move b to the other side")),
        ("return", ("# divide both sides by the coefficient", "# isolate x by dividing by a")),
    ),
}

# What follows a fact's answer in a prose trivia answer: it says nothing more about the world.
FACT_CODAS = ("", " This is one of the best-known facts about {e}.", " Many visitors learn this on their first day.",
              " It is often asked in quizzes.", " Most guidebooks mention it in their first pages.")
