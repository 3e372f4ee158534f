"""The challenger's JSON schemas agree with the parser: every schema-valid reply parses into a Task or
is rejected for a semantic reason that no schema can express (spice.schemas, spice.tasks)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spice.corpus import Document
from spice.schemas import (
    ANSWER_PATTERNS,
    SEMANTIC_REASONS,
    format_selection_schema,
    schema_json,
    task_schema,
)
from spice.tasks import (
    ANSWER_KINDS,
    INVALID_REASONS,
    LETTERS,
    MIN_QUOTE_CHARS,
    Invalid,
    Task,
    challenger_messages,
    parse_format_choice,
    parse_task,
)

DOC = Document(id="doc-1", source="test", text=(
    "Marie Curie won the Nobel Prize in Physics in 1903 and the Nobel Prize in Chemistry in 1911. "
    "She was born in Warsaw in 1867. Polonium, which she discovered, was named after Poland."))
STYLES = ("paper", "compact")


def _text(prop: dict, extra: list[str] = (), piece: int = 1) -> st.SearchStrategy[str]:
    """Any string the property admits: free unicode, pieces of the document (of at least `piece`
    characters), or phrases in `extra`."""
    lo, hi = prop["minLength"], prop["maxLength"]
    piece = max(lo, piece)
    doc_piece = st.integers(0, len(DOC.text) - piece).flatmap(
        lambda i: st.integers(i + piece, min(len(DOC.text), i + hi)).map(lambda j: DOC.text[i:j]))
    choices = [st.text(min_size=lo, max_size=min(hi, 120)), doc_piece]
    fitting = [e for e in extra if lo <= len(e) <= hi]
    if fitting:
        choices.append(st.sampled_from(fitting))
    return st.one_of(*choices)


QUESTIONS = ["In what year did Marie Curie win the Nobel Prize in Chemistry?",
             "According to the text, where was she born?", "What does the passage above say?", " "]


def _value(name: str, prop: dict) -> st.SearchStrategy:
    if "const" in prop:
        return st.just(prop["const"])
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    if prop.get("type") == "array":
        item = _text(prop["items"], ["1903", "1911", "1867", "Warsaw", "1903 "])
        return st.lists(item, min_size=prop["minItems"], max_size=prop["maxItems"])
    if "pattern" in prop:
        return st.from_regex(prop["pattern"], fullmatch=True)
    if name == "question":
        return _text(prop, QUESTIONS)
    if name == "quote":
        return _text(prop, ["1903", " ", "the Nobel Prize in Chemistry in 1911"], piece=MIN_QUOTE_CHARS)
    return _text(prop, ["x^2 + 1", "(1911 - 1903", "sqrt(2)/2", " "])


COHERENT = {"question": QUESTIONS[0], "quote": "the Nobel Prize in Chemistry in 1911"}
COHERENT_ANSWERS = {"integer": "1911", "float": "1911", "string": "Warsaw", "expression": "x^2 + 1"}


def coherent_reply(schema: dict) -> dict:
    """One reply the schema admits that is also a valid task (a question about its quote), so that the
    property below always sees the valid outcome, whatever the generator draws."""
    kind = schema["properties"].get("answer_type", {}).get("const", "mcq")
    reply = {}
    for name, prop in schema["properties"].items():
        if "const" in prop:
            reply[name] = prop["const"]
        elif "enum" in prop:
            reply[name] = prop["enum"][0]
        elif prop.get("type") == "array":
            reply[name] = ["1903", "1911", "1867", "Warsaw"]
        elif name in COHERENT:
            reply[name] = COHERENT[name]
        elif name == "answer":
            reply[name] = COHERENT_ANSWERS[kind]
        else:
            reply[name] = "Stated in the quote."
    return reply


def replies(schema: dict) -> st.SearchStrategy[dict]:
    """Objects valid against a task schema, keys in the schema's order."""
    props = schema["properties"]
    return st.fixed_dictionaries({name: _value(name, prop) for name, prop in props.items()})


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", ANSWER_KINDS)
def test_schema_valid_replies_parse_or_fail_semantically(kind, style):
    schema = task_schema(kind, style)
    jsonschema.Draft202012Validator.check_schema(schema)
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @example(coherent_reply(schema))
    @given(replies(schema))
    def check(obj):
        jsonschema.validate(obj, schema)
        text = json.dumps(obj, ensure_ascii=False)
        for asked in (kind, None):
            result = parse_task(text, DOC, asked)
            if isinstance(result, Invalid):
                assert result.reason in SEMANTIC_REASONS, (result, obj)
                seen.add(result.reason)
                continue
            seen.add("valid")
            assert result.kind == kind and result.question == obj["question"].strip()
            assert result.quote == obj["quote"].strip()
            if kind == "mcq":
                assert result.answer == obj["answer"] and len(result.options) == 4
            elif kind == "integer":
                assert int(result.answer) == int(obj["answer"])
            else:
                assert result.answer == obj["answer"].strip()

    check()
    grounding = {"quote_not_in_document", "quote_too_short", "empty_quote"}
    assert "valid" in seen and seen & grounding  # the generator reaches both outcomes


@given(st.sampled_from([{"format": "mcq"}] + [{"format": "free_form", "answer_type": k} for k in ANSWER_KINDS[1:]]))
def test_format_schema_and_parser_agree(obj):
    jsonschema.validate(obj, format_selection_schema())
    expected = ("mcq", "mcq") if obj["format"] == "mcq" else ("free_form", obj["answer_type"])
    assert parse_format_choice(json.dumps(obj)) == expected


@pytest.mark.parametrize("obj", [{"format": "free_form"}, {"format": "free_form", "answer_type": "mcq"},
                                 {"format": "mcq", "answer_type": "integer"}, {"format": "essay"}])
def test_format_schema_rejects_what_the_parser_would_question(obj):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, format_selection_schema())


@pytest.mark.parametrize("kind", ANSWER_KINDS)
def test_schema_fields_are_the_parsers_fields(kind):
    for style in STYLES:
        schema = task_schema(kind, style)
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) == set(schema["properties"])
        assert {"question", "answer", "quote", "difficulty"} <= set(schema["properties"])
        assert ("options" in schema["properties"]) == (kind == "mcq")
        assert ("answer_type" in schema["properties"]) == (kind != "mcq")
        for name, prop in schema["properties"].items():
            if prop.get("type") == "string" and "pattern" not in prop:
                assert prop["maxLength"] <= 1000, name  # bounded, so a constrained reply always ends
    options = task_schema("mcq")["properties"]["options"]
    assert options["minItems"] == options["maxItems"] == 4
    assert task_schema("mcq")["properties"]["answer"]["enum"] == list(LETTERS)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", ANSWER_KINDS)
def test_prompt_asks_for_the_schema_keys_in_order(kind, style):
    prompt = challenger_messages(DOC, kind, style)[-1]["content"]
    positions = []
    for key in task_schema(kind, style)["properties"]:
        match = re.search(rf"\b{key}\b", prompt.split("in this order:" if style == "paper" else "JSON keys:")[1])
        assert match, key
        positions.append(match.start())
    assert positions == sorted(positions)


@pytest.mark.parametrize(("kind", "good", "bad"), [
    ("integer", ["42", "-7", "0", "9" * 15], ["4.2", "42 ", "1,000", "", "-", "9" * 16]),
    ("float", ["3.75", "-0.5", "12", "1" * 12 + ".5"], ["3.", ".5", "1e3", "three", "1" * 13, "1" * 19, "1.123456789"]),
    ("string", ["Warsaw", "Marie Curie", "Nobel Prize Chemistry", "a" * 20], ["a b c d", "", " Warsaw", "a  b",
                                                                                "a" * 21]),
])
def test_answer_patterns_mean_the_same_to_jsonschema_and_xgrammar(kind, good, bad):
    xgr = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string

    pattern = re.compile(ANSWER_PATTERNS[kind])
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": ANSWER_PATTERNS[kind]}},
              "required": ["a"]}
    grammar = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    for value, expected in [(g, True) for g in good] + [(b, False) for b in bad]:
        assert bool(pattern.search(value)) is expected, value
        assert _is_grammar_accept_string(grammar, json.dumps({"a": value})) is expected, value


def test_semantic_reasons_are_named_reasons():
    assert SEMANTIC_REASONS <= set(INVALID_REASONS)


def test_schemas_compile_with_xgrammar():
    xgr = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string

    obj = {"quote": "She was born in Warsaw in 1867.", "question": "Where was Marie Curie born?",
           "options": ["Paris", "Warsaw", "Vienna", "Lyon"], "solution": "Stated.", "answer": "B",
           "difficulty": "easy"}
    grammar = xgr.Grammar.from_json_schema(schema_json(task_schema("mcq")), any_whitespace=False)
    assert _is_grammar_accept_string(grammar, json.dumps(obj))
    assert not _is_grammar_accept_string(grammar, json.dumps({**obj, "answer": "E"}))
    grammar = xgr.Grammar.from_json_schema(schema_json(format_selection_schema()), any_whitespace=False)
    assert _is_grammar_accept_string(grammar, '{"format": "free_form", "answer_type": "float"}')
    assert not _is_grammar_accept_string(grammar, '{"format": "free_form"}')
    with pytest.raises(ValueError, match="'essay'"):
        task_schema("essay")


def test_quote_choices_are_the_documents_sentences_and_always_ground():
    from spice.schemas import LIMITS, quote_choices
    text = ("Marie Curie was born in Warsaw in 1867.  She won two Nobel Prizes! Ok. "
            + " ".join(f"w{i}" for i in range(120)) + ".")
    choices = quote_choices(text, "compact")
    assert choices[:2] == ["Marie Curie was born in Warsaw in 1867.", "She won two Nobel Prizes!"]
    assert "Ok." not in choices  # shorter than the parser's minimum quote
    assert all(8 <= len(c) <= LIMITS["compact"]["text"] for c in choices) and len(choices) >= 4
    schema = task_schema("integer", "compact", quotes=choices)
    assert schema["properties"]["quote"] == {"enum": choices}
    document = Document(id="d", source="test", text=text)
    for quote in choices:
        reply = {"answer_type": "integer", "quote": quote, "question": "In which year was Curie born?",
                 "answer": "1867", "difficulty": "easy"}
        jsonschema.validate(reply, schema)
        result = parse_task(json.dumps(reply), document, "integer", grounding="exact")
        # every constrained quote grounds; a question unrelated to its quote is still refused
        assert isinstance(result, Task) if quote == choices[0] else \
            (isinstance(result, Task) or result.reason == "question_off_quote"), (quote, result)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**reply, "quote": "Marie Curie was born in Paris in 1867."}, schema)
