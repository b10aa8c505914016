"""Answer segments: the rules on tricky completions, and the probe's token table against its own NLL."""

import pyarrow.parquet as pq
import pytest

from pipeline.core import schemas
from pipeline.stages import probe
from queries.segments import SEGMENTS, char_segments, token_segments


def spans(prompt: str, completion: str, answer: str) -> list[tuple[str, str]]:
    """(segment, text) of every run of characters outside the scaffold."""
    out, segments = [], char_segments(prompt, completion, answer)
    for i, (char, segment) in enumerate(zip(completion, segments)):
        if segment == "scaffold":
            continue
        if out and segments[i - 1] == segment and out[-1][2] == i:
            out[-1] = (segment, out[-1][1] + char, i + 1)
        else:
            out.append((segment, char, i + 1))
    return [(s, t) for s, t, _ in out]


@pytest.mark.parametrize("prompt, completion, answer, expected", [
    # an answer that is also a step result: the step is computed, its last statement the answer
    ("Calculate the answer: (7 - 4) * 7", "7 - 4 = 3\n3 * 7 = 21\nThe answer is 21.", "21",
     [("copied", "7"), ("copied", "4"), ("computed", "3"), ("copied", "3"), ("copied", "7"), ("computed", "21"),
      ("answer", "21")]),
    # negative numbers keep their sign; a binary minus is scaffold
    ("What is the slope through (3, 6) and (4, 5)?", "5 - 6 = -1\n4 - 3 = 1\n-1 / 1 = -1\nThe answer is -1.", "-1",
     [("copied", "5"), ("copied", "6"), ("computed", "-1"), ("copied", "4"), ("copied", "3"), ("computed", "1"),
      ("copied", "-1"), ("copied", "1"), ("copied", "-1"), ("answer", "-1")]),
    # 21 is not in 210, and 21.5 is one number
    ("Count 2 things.", "It is 210, or 21.5, so 21 with 2", "21",
     [("computed", "210"), ("computed", "21.5"), ("answer", "21"), ("copied", "2")]),
    # a decimal answer equal to an integer is the same number; thousands groups are one number
    ("Add 1,000 and 500.5", "1,000 + 500.5 = 1500.5\nThe answer is 1500.50", "1500.5",
     [("copied", "1,000"), ("copied", "500.5"), ("computed", "1500.5"), ("answer", "1500.50")]),
    # a factual answer in words, matched whole and without case; a name in the prompt is scaffold
    ("What is the capital of Bribrun?", "The capital of Bribrun is KOUTEX, not Koutexia.", "Koutex",
     [("answer", "KOUTEX")]),
    # no answer given (a user's query): no answer segment, numbers by the other rules
    ("Solve for x: 2x + 1 = 7", "7 - 1 = 6\n6 / 2 = 3", "",
     [("copied", "7"), ("copied", "1"), ("computed", "6"), ("copied", "6"), ("copied", "2"), ("computed", "3")]),
    # a coefficient glued to its variable is a number of the prompt
    ("Solve for x: 4x + 4 = 16", "16 - 4 = 12\n12 / 4 = 3\nThe answer is 3.", "3",
     [("copied", "16"), ("copied", "4"), ("computed", "12"), ("copied", "12"), ("copied", "4"), ("computed", "3"),
      ("answer", "3")]),
])
def test_segment_rules(prompt, completion, answer, expected):
    assert spans(prompt, completion, answer) == expected


def test_a_token_takes_the_number_it_covers_and_whitespace_is_scaffold():
    completion = "x = 21\n"
    offsets = [(0, 1), (1, 3), (3, 5), (5, 6), (6, 7)]  # "x", " =", " 2", "1", "\n"
    assert token_segments("", completion, "21", offsets) == ["scaffold", "scaffold", "answer", "answer", "scaffold"]


def test_the_probe_records_every_completion_token_with_its_segment_and_nll(trained):
    probe.run(trained)
    queries = pq.read_table(trained.queries.out).to_pylist()
    table = pq.read_table(trained.queries.segments)
    assert table.schema == schemas.SEGMENTS
    rows = table.to_pylist()
    assert set(r["segment"] for r in rows) <= set(SEGMENTS)
    for q in queries:
        tokens = sorted((r for r in rows if r["query_id"] == q["query_id"]), key=lambda r: r["position"])
        assert [r["position"] for r in tokens] == list(range(len(tokens))) and tokens
        assert "".join(q["completion"][r["char_start"]:r["char_end"]] for r in tokens) == q["completion"]
        assert sum(r["nll"] for r in tokens) == pytest.approx(q["completion_nll"], rel=1e-5)
