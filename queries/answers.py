"""Finding answers in text: the final answer of a completion, and whether a text mentions an answer.

Numbers are compared as numbers, never as substrings: ``21`` is not in ``210``, ``1,344`` is
``1344`` and ``21.0`` is ``21``. Words are matched whole and case-insensitively.
"""

from __future__ import annotations

import re

# A number: thousands groups ("1,344") or plain digits, optional sign and decimals, not glued to
# letters or other digits. The sign counts only when it is not a binary minus ("7 - 4").
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")
# The same, where a letter may follow: a coefficient written against its variable ("2x") is a number too.
_COEFFICIENT = re.compile(_NUMBER.pattern.removesuffix("(?![\\w])") + "(?!\\d)")
_ANSWER_IS = re.compile(r"answer\s+(?:is|:)\s*(?:x\s*=\s*)?", re.IGNORECASE)


def number_spans(text: str, coefficients: bool = False) -> list[tuple[int, int, float]]:
    """Every number in ``text``, in order: its start and end (a sign included) and its value; with
    ``coefficients``, also those glued to a following letter (the ``2`` of ``2x``)."""
    out = []
    for m in (_COEFFICIENT if coefficients else _NUMBER).finditer(text):
        sign, digits, decimals = m.groups()
        out.append((m.start(), m.end(), float(f"{sign}{digits.replace(',', '')}{decimals or ''}")))
    return out


def numbers_in(text: str) -> list[float]:
    """Every number in ``text``, in order, as floats."""
    return [value for _, _, value in number_spans(text)]


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
    """Whether ``text`` states ``answer``: as a number if it is one, else as whole words. An empty
    answer (unknown) is never stated."""
    return ParsedText(text).mentions(answer)


def is_correct(kind: str, completion: str, answer: str) -> bool:
    """Reasoning: the extracted final answer equals the answer. Factual: the completion states it."""
    if kind == "reasoning":
        value = final_answer(completion)
        return value is not None and value == as_number(answer)
    return mentions(completion, answer)


# A capitalised word that does not start a sentence: a name ("Mount Nimair", "Bribrun").
_CAPITALISED = re.compile(r"\b[A-Z][\w'-]*")
_WITH_DIGIT = re.compile(r"\S*\d\S*")


def key_terms(prompt: str) -> tuple[str, set[str]]:
    """What identifies a question: its problem (the text from its first to its last word with a digit,
    on the line with the most: ``(2 - 1) * 7``, ``7x + 3 = 59``), and the names it mentions."""
    names = {m.group() for m in _CAPITALISED.finditer(prompt) if not _starts_sentence(prompt, m.start())}
    line = max(prompt.splitlines() or [""], key=lambda s: len(_WITH_DIGIT.findall(s)))
    found = list(_WITH_DIGIT.finditer(line))
    return (squeeze(line[found[0].start():found[-1].end()]).strip("?.!,:;") if found else ""), names


def squeeze(text: str) -> str:
    """Whitespace runs as one space, so a problem matches however it is wrapped."""
    return " ".join(text.split())


def _starts_sentence(text: str, at: int) -> bool:
    before = text[:at].rstrip(" ")
    return not before or before[-1] in ".?!:\n"


def answers_question(text: str, answer: str, prompt: str) -> bool:
    """Whether ``text`` states ``answer`` together with what identifies the question (its numbers, in
    order, and its names): the answer *to this question*, not a number that happens to be the same."""
    return ParsedText(text).answers_question(answer, prompt)


class ParsedText:
    """A text whose numbers and whitespace-squeezed form are parsed once, on first use: the analysis
    checks hundreds of answers against each top document."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._numbers: set[float] | None = None
        self._squeezed: str | None = None

    @property
    def numbers(self) -> set[float]:
        if self._numbers is None:
            self._numbers = set(numbers_in(self.text))
        return self._numbers

    @property
    def squeezed(self) -> str:
        if self._squeezed is None:
            self._squeezed = squeeze(self.text)
        return self._squeezed

    def mentions(self, answer: str) -> bool:
        if not answer.strip():
            return False
        value = as_number(answer)
        if value is not None:
            return value in self.numbers
        return re.search(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", self.text, re.IGNORECASE) is not None

    def answers_question(self, answer: str, prompt: str) -> bool:
        if not self.mentions(answer):
            return False
        problem, names = key_terms(prompt)
        return problem in self.squeezed and all(self.mentions(name) for name in names)
