"""What a top document is to its query: it ``states_answer``, it ``shows_procedure``, or it is ``other``.

Two labellers. ``truth_label`` reads the generated world's ground truth (the document's ``fact_ids``
and ``procedure``). ``text_label`` reads only the text, so it also works on a real corpus, and the
analysis reports how often it agrees with the truth where both exist.
"""

from __future__ import annotations

import re

STATES_ANSWER, SHOWS_PROCEDURE, OTHER = "states_answer", "shows_procedure", "other"
LABELS = (STATES_ANSWER, SHOWS_PROCEDURE, OTHER)

# The corpus procedure that answers each task; controls are answered by reading the prompt, which the
# `reading` documents show.
PROCEDURE_FOR_TASK = {"arithmetic": "arithmetic", "slope": "slope", "linear": "linear",
                      "factual_control": "reading", "reasoning_control": "reading"}

# A worked step ("7 - 4 = 3", "x = 56 / 7 = 8", "(7, 23)" is not one), or code that computes.
WORKED_STEP = re.compile(r"-?\d+(?:\.\d+)?\s*[-+*/×÷]\s*\(?-?\d+(?:\.\d+)?\)?\s*=\s*-?\d+(?:\.\d+)?")
_CODE = re.compile(r"^\s*def \w+\(.*\):|^\s*return\b", re.MULTILINE)


def truth_label(task: str, fact_id: str | None, doc_fact_ids: list[str] | None, doc_procedure: str | None) -> str:
    if fact_id and doc_fact_ids and fact_id in doc_fact_ids:
        return STATES_ANSWER
    if doc_procedure is not None and doc_procedure == PROCEDURE_FOR_TASK.get(task):
        return SHOWS_PROCEDURE
    return OTHER


def shows_working(text: str) -> bool:
    """At least two worked computations, or a function that computes: text that shows how."""
    return len(WORKED_STEP.findall(text)) >= 2 or _CODE.search(text) is not None


def text_label(text: str, answers_query: bool) -> str:
    """Shows working, else states the answer to this very question, else other. ``answers_query`` is
    ``queries.answers.answers_question(text, answer, prompt)``, which the caller usually has already."""
    if shows_working(text):
        return SHOWS_PROCEDURE
    return STATES_ANSWER if answers_query else OTHER
