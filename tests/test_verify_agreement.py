"""The agreement suite (tests/data/verify_agreement.jsonl): the fast path never disagrees with the
math-verify path on the items it decides, and the combined verifier gives the expected verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spice import verify as V

DATA = Path(__file__).resolve().parent / "data" / "verify_agreement.jsonl"


@pytest.fixture(scope="module", autouse=True)
def generous_timeout():
    """Correctness, not latency, is tested here: a loaded machine must not turn a slow item into a
    timeout (which counts as wrong)."""
    V.configure(timeout=3.0)
    yield
    V.configure(timeout=V.DEFAULT_TIMEOUT_S)


@pytest.fixture(scope="module")
def suite():
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    items = [(r["response"], r["gold"], r["kind"]) for r in rows]
    return rows, items, V.fast_verdicts(items)


def test_suite_is_large_and_covers_every_kind(suite):
    rows, _, _ = suite
    assert len(rows) >= 500
    assert {r["kind"] for r in rows} == set(V.KINDS)
    assert sum(r["source"] == "edge" for r in rows) >= 150
    assert {True, False} == {r["expected"] for r in rows}


@pytest.mark.skipif(V._C is None, reason="spice._C is not built")
def test_fast_path_never_disagrees_with_math_verify(suite, record_property):
    rows, items, fast = suite
    decided = [i for i, v in enumerate(fast) if v != V.UNDECIDED]
    slow = V.slow_verdicts([items[i] for i in decided])
    disagreements = [(rows[i]["response"][-80:], rows[i]["gold"], rows[i]["kind"], fast[i], s)
                     for i, s in zip(decided, slow) if (fast[i] == V.EQUIVALENT) != s]
    assert not disagreements
    undecided_share = 1 - len(decided) / len(items)
    record_property("undecided_share", round(undecided_share, 4))
    assert undecided_share < 0.25  # the suite is edge-case heavy; realistic outputs are decided far more often


def test_hand_labelled_rows_say_why(suite):
    rows, _, _ = suite
    hand = [r for r in rows if r.get("label") == "hand"]
    assert len(hand) >= 20 and all(r.get("why") for r in hand)


def test_combined_verifier_gives_the_expected_verdicts(suite):
    rows, items, _ = suite
    got = V.verify_batch(items)
    wrong = [(r["response"][-80:], r["gold"], r["kind"], r["expected"]) for r, v in zip(rows, got) if v != r["expected"]]
    assert not wrong
