"""Finding answers in text: the final answer of a completion, and whether a text mentions an answer.

Numbers are compared as numbers, never as substrings: ``21`` is not in ``210``, ``1,344`` is
``1344`` and ``21.0`` is ``21``. Words are matched whole and case-insensitively.
"""

from __future__ import annotations

import re

# A number: thousands groups ("1,344") or plain digits, optional sign and decimals, not glued to
# letters or other digits. The sign counts only when it is not a binary minus ("7 - 4").
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")
_ANSWER_IS = re.compile(r"answer\s+(?:is|:)\s*(?:x\s*=\s*)?", re.IGNORECASE)


def numbers_in(text: str) -> list[float]:
    """Every number in ``text``, in order, as floats."""
    out = []
    for m in _NUMBER.finditer(text):
        sign, digits, decimals = m.groups()
        out.append(float(f"{sign}{digits.replace(',', '')}{decimals or ''}"))
    return out


def as_number(text: str) -> float | None:
    found = numbers_in(text.strip())
    return found[0] if len(found) == 1 and _NUMBER.fullmatch(text.strip()) else None


def final_answer(completion: str) -> float | None:
    """The number after the first "answer is", else the last number in the completion."""
    m = _ANSWER_IS.search(completion)
    if m:
        after = numbers_in(completion[m.end():m.end() + 40])
        if after and _NUMBER.match(completion, m.end()):
            return after[0]
        return None
    found = numbers_in(completion)
    return found[-1] if found else None


def mentions(text: str, answer: str) -> bool:
    """Whether ``text`` states ``answer``: as a number if it is one, else as whole words."""
    value = as_number(answer)
    if value is not None:
        return value in numbers_in(text)
    return re.search(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", text, re.IGNORECASE) is not None


def is_correct(kind: str, completion: str, answer: str) -> bool:
    """Reasoning: the extracted final answer equals the answer. Factual: the completion states it."""
    if kind == "reasoning":
        value = final_answer(completion)
        return value is not None and value == as_number(answer)
    return mentions(completion, answer)
