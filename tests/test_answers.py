"""Answer extraction on the completions a model actually writes, including the awkward ones."""

import pytest

from queries.answers import final_answer, is_correct, mentions, numbers_in


@pytest.mark.parametrize("completion, expected", [
    ("7 - 4 = 3\n3 * 7 = 21\nThe answer is 21.", 21),
    ("19 - 62 = -43\n95 - 94 = 1\n-43 / 1 = -43\nThe answer is -43.", -43),
    ("The answer is 210.", 210),
    ("Therefore, the answer to the expression is 1,344.", 1344),
    ("The answer is 21.0", 21),
    ("The answer is x = 14.", 14),
    ("Answer: 7", 7),
    ("3 + 4 = 7\n7 * 2 = 14", 14),  # no "answer is": the last number
    ("The answer is 12. The answer is 13.", 12),  # the first stated answer counts
    ("The answer is unclear.", None),  # "answer is" without a number: no answer, not the last number
    ("I do not know.", None),
    ("", None),
])
def test_final_answer(completion, expected):
    assert final_answer(completion) == expected


def test_numbers_are_numbers():
    assert numbers_in("(94, 62) and (95, -19); 7 - 4 = 3; 1,344 and 2.5") == [94, 62, 95, -19, 7, 4, 3, 1344, 2.5]
    assert numbers_in("x2 - x1 and abc123") == []  # digits glued to letters are names, not numbers
    assert not mentions("The answer is 210.", "21")
    assert not mentions("item 121 and 2100", "21")
    assert mentions("It is 4,821 meters tall.", "4821")
    assert mentions("the capital of Veloria is Tarnis.", "tarnis")
    assert not mentions("Tarnisburg is far", "Tarnis")


@pytest.mark.parametrize("kind, completion, answer, correct", [
    ("reasoning", "9 - 2 = 7\n7 * 3 = 21\nThe answer is 21.", "21", True),
    ("reasoning", "9 - 2 = 7\n7 * 3 = 21\nThe answer is 210.", "21", False),
    ("reasoning", "The answer is -4.", "-4", True),
    ("reasoning", "The answer is 4.", "-4", False),
    ("reasoning", "21 / 3 = 7", "7", True),
    ("factual", "The capital of Veloria is Tarnis.", "Tarnis", True),
    ("factual", "The capital of Veloria is Tarn.", "Tarnis", False),
    ("factual", "Mount Kel is 4821 meters tall.", "4821", True),
    ("factual", "Mount Kel is 48210 meters tall.", "4821", False),
])
def test_is_correct(kind, completion, answer, correct):
    assert is_correct(kind, completion, answer) is correct
