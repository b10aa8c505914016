"""Answer segments: which part of a completion each token is, by rules that read only the text.

A reasoning completion's NLL sits mostly on the digits it computes, and those dominate its gradient;
splitting the completion shows which parts draw on which documents. The rules read the prompt, the
completion and the answer, nothing else, so they apply alike to the generated world and to a user's
queries:

- ``answer``: the final answer where the completion states it, its last occurrence (a number matched
  as a number, ``21`` never inside ``210``; otherwise the answer's words, whole and case-insensitive);
- ``computed``: a number whose value appears neither in the prompt nor earlier in the completion, a
  value the model had to work out or recall (a coefficient counts: the ``2`` of ``2x``);
- ``copied``: a number whose value appears earlier, in the prompt or the completion;
- ``scaffold``: every other character: words, operators, ``=``, punctuation and layout.

A token takes the segment of the characters it covers; one that covers a number and something else
(`` 21`` with its leading space) takes the number's. A factual completion usually has only
``answer`` and ``scaffold``.
"""

from __future__ import annotations

import re

from pipeline.core.schemas import ANSWER_SEGMENTS
from queries.answers import as_number, number_spans

SEGMENTS = ANSWER_SEGMENTS
_RANK = {s: i for i, s in enumerate(SEGMENTS)}  # a token covering two segments takes the first in this order


def char_segments(prompt: str, completion: str, answer: str) -> list[str]:
    """The segment of every character of ``completion``."""
    out = ["scaffold"] * len(completion)
    spans = number_spans(completion, coefficients=True)
    answer_span = _answer_span(completion, answer, spans)
    seen = {value for _, _, value in number_spans(prompt, coefficients=True)}
    for start, end, value in spans:
        if (start, end) == answer_span:
            segment = "answer"
        elif value in seen:
            segment = "copied"
        else:
            segment = "computed"
        seen.add(value)
        out[start:end] = [segment] * (end - start)
    if answer_span and answer_span not in {(s, e) for s, e, _ in spans}:  # a worded answer
        out[answer_span[0]:answer_span[1]] = ["answer"] * (answer_span[1] - answer_span[0])
    return out


def token_segments(prompt: str, completion: str, answer: str, offsets: list[tuple[int, int]]) -> list[str]:
    """The segment of each completion token, given its character ``offsets`` in the completion."""
    chars = char_segments(prompt, completion, answer)
    out = []
    for start, end in offsets:
        covered = [chars[i] for i in range(start, end) if not completion[i].isspace()] or ["scaffold"]
        out.append(min(covered, key=_RANK.__getitem__))
    return out


def _answer_span(completion: str, answer: str, spans: list[tuple[int, int, float]]) -> tuple[int, int] | None:
    """Where the completion last states ``answer``: a number's span, or the answer's words."""
    if not answer.strip():
        return None
    value = as_number(answer)
    if value is not None:
        found = [(s, e) for s, e, v in spans if v == value]
        return found[-1] if found else None
    found = list(re.finditer(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", completion, re.IGNORECASE))
    return (found[-1].start(), found[-1].end()) if found else None
