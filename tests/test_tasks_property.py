"""`parse_task` never raises: property tests over arbitrary text and arbitrary JSON (hypothesis),
integers of 10,000 digits included (int() refuses over 4300)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spice.corpus import Document
from spice.tasks import ANSWER_KINDS, GROUNDING_MODES, Invalid, Task, parse_format_choice, parse_task

DOC = Document(id="d", source="test", text="The Eiffel Tower in Paris was completed in 1889 for the World's Fair.")
KIND = st.sampled_from((None, *ANSWER_KINDS))
MODE = st.sampled_from(GROUNDING_MODES)
HUGE = st.integers(min_value=4000, max_value=10_000).map(lambda n: "9" * n)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40), HUGE)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                    st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                    max_leaves=20)
KEYS = st.sampled_from(("answer_type", "quote", "question", "answer", "options", "solution", "difficulty"))
TASKLIKE = st.dictionaries(KEYS, JSON, max_size=7)
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _dump(obj) -> str:
    """JSON text of `obj`, with huge digit strings written as bare integers (json.dumps refuses the ints)."""
    text = json.dumps(obj)
    return text.replace('"' + "9" * 4000, "9" * 4000).replace("9" * 4000 + '"', "9" * 4000) if "9" * 4000 in text else text


@SLOW
@given(st.text(max_size=300), KIND, MODE)
def test_any_text(text, kind, mode):
    assert isinstance(parse_task(text, DOC, kind, grounding=mode), (Task, Invalid))
    assert isinstance(parse_format_choice(text), (tuple, Invalid))


@SLOW
@given(TASKLIKE, KIND, MODE)
def test_any_json_object(obj, kind, mode):
    assert isinstance(parse_task(_dump(obj), DOC, kind, grounding=mode), (Task, Invalid))


@SLOW
@given(JSON, KIND)
def test_any_json_value(value, kind):
    assert isinstance(parse_task(_dump(value), DOC, kind), (Task, Invalid))


def test_a_10000_digit_integer_answer():
    for answer in ("9" * 10_000, '"' + "9" * 10_000 + '"', "-" + "1" * 10_000):
        text = '{"answer_type": "integer", "quote": "completed in 1889 for the World", "question": "When was it completed?", ' \
               f'"answer": {answer}}}'
        task = parse_task(text, DOC, "integer")
        assert isinstance(task, Task) and task.answer == answer.strip('"')  # kept as text, never int()
