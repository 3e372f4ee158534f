"""Benchmark loaders: every bundled set parses with its known first item, the local jsonl format
keeps good records and reports bad ones by line, unknown names list what is available."""

from __future__ import annotations

from pathlib import Path

import pytest

from spice.eval.benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    Item,
    load_benchmark,
    load_jsonl,
    numeric_kind,
    parse_spec,
    subset,
)
from spice.verify import last_boxed

DATA = Path(__file__).parent / "data"

# name -> (number of items, id, gold, kind, start of the question, number of choices) of the first item
FIRST_ITEMS = {
    "gsm8k": (1319, "0", "18", "integer", "Janet’s ducks lay 16 eggs per day", 0),
    "math500": (500, "0", "\\left( 3, \\frac{\\pi}{2} \\right)", "expression",
                "Convert the point $(0,3)$ in rectangular coordinates", 0),
    "math": (5000, "algebra/0", "2", "integer", "How many vertical asymptotes", 0),
    "mmlu": (14042, "abstract_algebra/0", "B", "mcq", "Find the degree for the given field extension", 4),
    "arc_challenge": (1172, "Mercury_7175875", "C", "mcq", "An astronomer observes that a planet rotates", 4),
    "arc_easy": (2376, "Mercury_417466", "A", "mcq", "Which statement best explains why photosynthesis", 4),
    "openbookqa": (500, "8-343", "B", "mcq", "A person wants to start saving money", 4),
    "csqa": (1221, "1afa02df02c908a558b4036e80242fac", "A", "mcq", "A revolving door is convenient", 5),
    "sciq": (1000, "0", "D", "mcq", "Who proposed the theory of evolution", 4),
    "medmcqa": (4183, "45258d3d-b974-44dd-a161-c3fccbdadd88", "A", "mcq",
                "Which of the following is not true for myelinated", 4),
    "medqa": (1273, "0", "C", "mcq", "A junior orthopaedic surgery resident", 5),
    "hellaswag": (10042, "0", "D", "mcq", "Which ending completes the text best?", 4),
}


def test_every_bundled_benchmark_is_checked() -> None:
    assert set(FIRST_ITEMS) == set(BENCHMARKS)


@pytest.mark.parametrize("name", sorted(FIRST_ITEMS))
def test_bundled_benchmark_first_items(name: str) -> None:
    count, item_id, gold, kind, start, choices = FIRST_ITEMS[name]
    benchmark = load_benchmark(name)
    assert benchmark.name == name and len(benchmark.items) == count and not benchmark.skipped
    first = benchmark.items[0]
    assert (first.id, first.answer, first.kind, len(first.choices)) == (item_id, gold, kind, choices)
    assert first.question.startswith(start)
    for item in benchmark.items[:20]:
        assert item.question and item.answer
        if item.kind == "mcq":
            assert 2 <= len(item.choices) <= 26
            assert item.answer in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:len(item.choices)]
            assert not item.question.startswith("Question:") and not item.question.endswith("Answer:")
    assert len({item.id for item in benchmark.items}) == count


def test_gsm8k_gold_has_no_thousands_separator() -> None:
    items = load_benchmark("gsm8k").items
    assert all(item.answer.lstrip("-").isdigit() for item in items)
    assert "2125" in {item.answer for item in items}  # "2,125" in the file


def test_math_gold_comes_from_the_boxed_solution_not_the_garbled_answer_field() -> None:
    first = load_benchmark("math500").items[0]
    assert not first.answer.startswith("\\le(")  # the pre-normalised field reads "\le(3,\frac{\pi}{2}\right)"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_last_boxed_balances_braces() -> None:
    assert last_boxed("so $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{1} then \\boxed{ {a}+{b} }") == "{a}+{b}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None


def test_numeric_kind() -> None:
    assert [numeric_kind(a) for a in ("12", "-3", "0.5", "-.25", "\\frac{1}{2}", "x+1")] == [
        "integer", "integer", "float", "float", "expression", "expression"]


def test_local_jsonl_keeps_good_records() -> None:
    benchmark = load_jsonl(DATA / "eval_local.jsonl")
    assert benchmark.name == "eval_local"
    assert benchmark.items == [
        Item("add", "What is 2 + 3?", "5", "integer"),
        Item("eval_local-2", "Which planet is the largest?", "B", "mcq",
             ("Mars", "Jupiter", "Venus", "Earth")),
        Item("eval_local-3", "Which number is prime?", "C", "mcq", ("4", "6", "7", "8", "9")),
        Item("17", "Simplify x + x.", "2x", "expression"),
        Item("eval_local-5", "What is half of 3?", "1.5", "float"),
        Item("eval_local-16", "Capital of France?", "Paris", "string"),
    ]


def test_local_jsonl_reports_bad_records_with_their_line() -> None:
    skipped = load_jsonl(DATA / "eval_local.jsonl").skipped
    lines = [int(problem.split(" line ")[1].split(":")[0]) for problem in skipped]
    assert lines == [6, 7, 8, 9, 10, 11, 13, 14, 15]  # line 12 is blank, not an error
    text = "\n".join(skipped)
    for expected in ("not valid JSON", "'answer' must be", "'question' must be", "neither a letter A-B",
                     "'boolean' is not one of", "contradicts 'choices'", "duplicate id 'add'",
                     "must be a JSON object", "did you mean 'choices'"):
        assert expected in text
    assert all(problem.startswith(str(DATA / "eval_local.jsonl")) for problem in skipped)


def test_local_jsonl_by_spec(tmp_path: Path) -> None:
    path = tmp_path / "aime.jsonl"
    path.write_text('{"question": "Find n.", "answer": "204"}\n')
    assert parse_spec(f"aime24={path}") == ("aime24", str(path))
    assert parse_spec(str(path)) == ("aime", str(path))
    assert parse_spec("gsm8k") == ("gsm8k", None)
    benchmark = load_benchmark(f"aime24={path}")
    assert benchmark.name == "aime24" and benchmark.items == [Item("aime-1", "Find n.", "204", "integer")]
    with pytest.raises(BenchmarkError, match="does not exist"):
        load_benchmark(str(tmp_path / "missing.jsonl"))


def test_unknown_benchmark_lists_the_available_ones() -> None:
    with pytest.raises(BenchmarkError) as error:
        load_benchmark("aime25")
    message = str(error.value)
    assert "unknown benchmark 'aime25'" in message
    assert all(name in message for name in BENCHMARKS) and "jsonl" in message


def test_subset_is_seeded_and_in_file_order() -> None:
    items = [Item(str(i), f"q{i}", str(i), "integer") for i in range(100)]
    chosen = subset(items, 10, seed=0)
    assert len(chosen) == 10 and chosen == subset(items, 10, seed=0)
    assert [int(i.id) for i in chosen] == sorted(int(i.id) for i in chosen)
    assert chosen != subset(items, 10, seed=1)
    assert chosen != items[:10]
    assert subset(items, None) == items and subset(items, 500) == items
