"""Which challenger attempts are made and trained: the paper's rounds until a valid task and its group
that keeps the valid:invalid ratio, and the `all_invalid` alternative."""

import json
import random

import pytest
from transformers import AutoTokenizer

from spice import loop
from spice.config import load_config
from spice.corpus import Document
from spice.rollout.base import Completion
from spice.tasks import Invalid, Task
from spice.testing import TOKENIZER_DIR

DOCS = [
    Document("doc-a", "Marie Curie was born in Warsaw in 1867 and won two Nobel Prizes, in physics and in "
                      "chemistry, the first person to do so.", "a"),
    Document("doc-b", "The Danube flows through ten countries, more than any other river in the world, before "
                      "it reaches the Black Sea.", "b"),
]


def _sample(document, valid, tag=""):
    result = Task(question=f"q{tag}", answer="A", kind="mcq", options=("w", "x", "y", "z"), quote="q",
                  doc_id=document.id) if valid else Invalid("no_json", tag)
    return loop.ChallengerSample(document, "mcq", [1], Completion(0, tag, [1], [-1.0], "stop", 0), result)


def _samples(pattern, document=DOCS[0]):
    return [_sample(document, flag == "v", str(i)) for i, flag in enumerate(pattern)]


@pytest.mark.parametrize("pattern, group_size, valid, invalid", [
    ("viii", 4, 1, 3),  # 1:3 kept as is
    ("vvii", 4, 1, 1),  # 2:2 -> one valid task, one invalid
    ("iiiviiii", 4, 1, 3),  # two rounds, 1:7 -> capped at the group size
    ("vvvi", 4, 1, 0),  # 3:1 -> round(1/3) = 0 invalid
    ("iiiiiiii", 4, 0, 4),  # no valid task: a group of invalid attempts
    ("vi", 2, 1, 1),
])
def test_paper_group_keeps_the_ratio(pattern, group_size, valid, invalid):
    samples = _samples(pattern)
    group = loop.paper_group(samples, group_size, random.Random(0))
    assert sum(isinstance(s.result, Task) for s in group) == valid
    assert sum(isinstance(s.result, Invalid) for s in group) == invalid
    if valid:
        assert group.count(next(s for s in samples if isinstance(s.result, Task))) == 1  # the first valid one
    assert group == [s for s in samples if s in group]  # attempt order


def test_selection_is_seeded_and_per_document():
    samples = _samples("iiiiiiii") + _samples("vvii", DOCS[1])
    config = load_config(None, ["challenger.attempts_per_document=4"])
    first = loop.select_attempts(samples, config, 3)
    assert first == loop.select_attempts(samples, config, 3)
    assert [s.document.id for s in first].count("doc-a") == 4 and [s.document.id for s in first].count("doc-b") == 2
    draws = {tuple(s.completion.text for s in loop.select_attempts(samples, config, i)[:4]) for i in range(8)}
    assert len(draws) > 1  # the invalid ones are drawn at random, not always the first


def test_all_invalid_trains_every_invalid_attempt_and_the_first_valid():
    samples = _samples("ivviii")
    config = load_config(None, ["challenger.attempt_selection=all_invalid", "challenger.attempts_per_document=2"])
    kept = loop.select_attempts(samples, config, 0)
    assert [s.completion.text for s in kept] == ["0", "1", "3", "4", "5"]


class RoundsEngine:
    """Answers doc-a with a valid grounded task from the third request on, doc-b never."""

    weight_version = 0
    progress = None

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.seeds, self.calls = [], 0

    def generate(self, prompts, sampling):
        self.calls += 1
        self.seeds.append(sampling.seed)
        out = []
        for index, prompt in enumerate(prompts):
            text = "not json"
            if DOCS[0].text[:40] in self.tokenizer.decode(prompt) and self.calls >= 3:
                words = DOCS[0].text.split()
                text = json.dumps({"question": "In which city was the first double Nobel laureate born?",
                                   "options": ["Warsaw", "Paris", "Vienna", "Rome"], "answer": "A",
                                   "quote": " ".join(words[:8]), "solution": "quoted", "difficulty": "easy"})
            out.append([Completion(index, text, [1], [-1.0], "stop", 0) for _ in range(sampling.n)])
        return out


def test_rounds_continue_until_a_valid_task_or_max_attempts():
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    config = load_config(None, ["challenger.attempts_per_document=2", "challenger.max_attempts=8",
                                "challenger.prompt_style=compact", "challenger.constrained_decoding=false"])
    engine = RoundsEngine(tokenizer)
    attempts = loop.challenge_documents(engine, tokenizer, DOCS, ["mcq", "mcq"], config, 0)
    per_doc = {d.id: [s for s in attempts if s.document is d] for d in DOCS}
    assert [isinstance(s.result, Task) for s in per_doc["doc-a"]] == [False] * 4 + [True] * 2  # 3 rounds
    assert len(per_doc["doc-b"]) == 8 and not any(isinstance(s.result, Task) for s in per_doc["doc-b"])
    assert engine.calls == 4 and len(set(engine.seeds)) == 4  # each round samples afresh
    assert [s.document.id for s in attempts] == ["doc-a"] * 6 + ["doc-b"] * 8
    trained = loop.select_attempts(attempts, config, 0)
    assert [isinstance(s.result, Task) for s in trained if s.document is DOCS[0]] == [False, True]
    assert len([s for s in trained if s.document is DOCS[1]]) == 2

    one_round = load_config(None, ["challenger.attempts_per_document=2", "challenger.max_attempts=8",
                                   "challenger.attempt_selection=all_invalid", "challenger.prompt_style=compact",
                                   "challenger.constrained_decoding=false"])
    assert len(loop.challenge_documents(RoundsEngine(tokenizer), tokenizer, DOCS, ["mcq", "mcq"], one_round, 0)) == 4
