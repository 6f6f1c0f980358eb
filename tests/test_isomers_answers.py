"""The single answer extractor: format, normalization, and what it refuses to read."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iga.isomers import extract_answer, format_answer_line, normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step one.\nAnswer: 14", "14"),
        ("Answer: Yes.", "yes"),
        ("answer:no", "no"),
        ("  ANSWER:   **K**  ", "K"),
        ("Answer: k", "K"),
        ("Answer: 14 vials", "14"),
        ("Answer: +07", "7"),
        ("Answer: 14.0", "14"),
        ("Answer: -3", "-3"),
        ("Answer: true", "yes"),
        ("x\nAnswer: 3\nAnswer: 5", "3"),  # the first answer line is the commitment
        ("The answer: 5", None),  # must start the line
        ("no answer here", None),
        ("Answer:", None),
        ("Answer:   \nnext line", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@given(st.integers(-(10**6), 10**6))
def test_integer_answers_round_trip(value):
    assert extract_answer(f"a step\n{format_answer_line(str(value))}") == str(value)


@given(st.sampled_from(["yes", "no", "YES", "No", "K", "b", "42"]))
def test_normalize_is_idempotent(token):
    once = normalize_answer(token)
    assert normalize_answer(once) == once
    assert extract_answer(format_answer_line(token)) == once
