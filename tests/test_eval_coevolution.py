"""The co-evolution check: one model's challenger tasks answered by another's reasoner."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from spice.config import SpiceConfig
from spice.corpus import make_document
from spice.eval import coevolution
from spice.rollout.base import Completion, per_prompt
from spice.testing import TOKENIZER_DIR, tiny_model_dir

SENTENCE = "Gold melts at 1064 degrees Celsius, far below the melting point of iron."
TASK = {"quote": SENTENCE, "question": "Which of these metals melts at 1064 degrees Celsius?",
        "options": ["Gold", "Iron", "Tungsten", "Platinum"],
        "solution": "Gold melts at 1064 degrees Celsius.", "answer": "A", "difficulty": "easy"}


class RoleEngine:
    """Writes TASK as the challenger and, as the reasoner, answers the letter under which the prompt
    lists the option `pick` (options are shown shuffled)."""

    weight_version = 0

    def __init__(self, tokenizer, pick: str) -> None:
        self.tokenizer, self.pick, self.calls = tokenizer, pick, []

    def _letter(self, text: str) -> str:
        return next(line[0] for line in text.splitlines() if line[1:3] == ". " and line[3:] == self.pick)

    def generate(self, prompts: list[list[int]], sampling) -> list[list[Completion]]:
        out = []
        for index, (prompt, params) in enumerate(zip(prompts, per_prompt(sampling, len(prompts)))):
            text = self.tokenizer.decode(prompt)
            role = "challenger" if "<document>" in text or "Document:" in text else "reasoner"
            self.calls.append(role)
            reply = json.dumps(TASK) if role == "challenger" else f"Gold. \\boxed{{{self._letter(text)}}}"
            out.append([Completion(index, reply, [1], [0.0], "stop", 0) for _ in range(params.n)])
        return out

    def update_weights(self, named_tensors, version: int) -> dict:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def _config() -> SpiceConfig:
    config = SpiceConfig()
    config.challenger.select_format = False
    config.challenger.formats = ["mcq"]
    config.challenger.attempts_per_document = 2
    config.reasoner.samples = 3
    return config


def test_pass_rate_of_a_reasoner_on_another_models_tasks(tokenizer) -> None:
    documents = [make_document(f"{SENTENCE} Note {i}: metals differ.", f"doc{i}") for i in range(3)]
    config = _config()
    tasks = coevolution.challenger_tasks(RoleEngine(tokenizer, "Gold"), tokenizer, documents, config)
    assert len(tasks) == 3  # one kept task per document, though each had two valid attempts
    assert {t.doc_id for t in tasks} == {d.id for d in documents}
    # shown shuffled as the loop shows them: the gold letter follows "Gold" wherever it went
    assert all(t.kind == "mcq" and t.options[ord(t.answer) - ord("A")] == "Gold" for t in tasks)
    assert all(sorted(t.option_order) == [0, 1, 2, 3] for t in tasks)
    strong = coevolution.reasoner_verdicts(RoleEngine(tokenizer, "Gold"), tokenizer, tasks, config)
    weak = coevolution.reasoner_verdicts(RoleEngine(tokenizer, "Tungsten"), tokenizer, tasks, config)
    assert strong == [[True] * 3] * 3 and weak == [[False] * 3] * 3
    assert coevolution.pass_rate(strong) == 1.0 and coevolution.pass_rate(weak) == 0.0
    assert coevolution.pass_rate([[True, False], [False, False]]) == 0.25
    assert coevolution.pass_rate([]) is None
    # the error is over tasks: two tasks passed 1/2 and 0/2 -> fractions 0.5, 0 -> stdev 0.354 / sqrt 2
    assert abs(coevolution.pass_rate_error([[True, False], [False, False]]) - 0.25) < 1e-12
    assert coevolution.pass_rate_error([[True, False]]) is None
    table = coevolution._table(["c"], ["r", "s"], {"c": {"r": 0.25, "s": None}}, {"c": {"r": 0.25, "s": None}})
    assert "25.0% ± 25.0" in table and table.rstrip().endswith("-")
    assert coevolution.reasoner_verdicts(RoleEngine(tokenizer, "Gold"), tokenizer, [], config) == []


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    coevolution.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_spice_coevolve_command_with_tiny_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = tiny_model_dir(tmp_path / "a", seed=0)
    second = tiny_model_dir(tmp_path / "b", seed=1)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"{SENTENCE} Fact {i}."}) + "\n" for i in range(4)))
    output = tmp_path / "coevolution.json"
    status = coevolution.run(_args(
        "--challenger", str(first), "--reasoner", str(first), str(second), "--documents", "2",
        "--samples", "2", "--output", str(output), f"corpus.path={corpus}", "challenger.select_format=false",
        "challenger.attempts_per_document=2", "challenger.max_new_tokens=4", "reasoner.max_new_tokens=4"))
    assert status == 0
    result = json.loads(output.read_text())
    assert len(result["documents"]) == 2 and result["samples"] == 2
    assert list(result["pass_rates"]) == [str(first)]
    assert list(result["pass_rates"][str(first)]) == [str(first), str(second)]
    assert list(result["pass_rate_errors"][str(first)]) == [str(first), str(second)]
    for rate in result["pass_rates"][str(first)].values():
        assert rate is None or 0.0 <= rate <= 1.0  # random weights rarely write a valid task
    printed = capsys.readouterr()
    assert "challenger \\ reasoner" in printed.out and "valid tasks from 2 documents" in printed.err


def test_spice_coevolve_rejects_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = coevolution.run(_args("--challenger", str(tmp_path / "nope"), "--reasoner", "embedded"))
    assert status == 2 and "does not exist" in capsys.readouterr().err


def test_matrix_picture_is_a_png_with_an_empty_cell(tmp_path: Path) -> None:
    rates = {"runs/x/step_000005": {"embedded": 0.25, "runs/x/step_000030": None},
             "embedded": {"embedded": 0.5, "runs/x/step_000030": 1.0}}
    path = coevolution.draw_matrix(list(rates), ["embedded", "runs/x/step_000030"], rates,
                                   {"runs/x/step_000005": 0, "embedded": 3}, tmp_path / "m" / "matrix.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
