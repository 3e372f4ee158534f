"""The eval runner: exact aggregation with a scripted engine, and an end-to-end run of a tiny model
through the real in-process engine and the `spice eval` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from spice.eval import command
from spice.eval.benchmarks import Benchmark, Item
from spice.eval.runner import evaluate, evaluate_during_training, format_table, rescore
from spice.rollout.base import Completion, per_prompt
from spice.testing import TOKENIZER_DIR, tiny_model_dir

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


class ScriptedEngine:
    """Answers each question with the scripted responses (cycled over the samples of a prompt)."""

    weight_version = 0

    def __init__(self, tokenizer, answers: dict[str, list[str]]) -> None:
        self.tokenizer, self.answers, self.calls = tokenizer, answers, []

    def generate(self, prompts: list[list[int]], sampling) -> list[list[Completion]]:
        params = per_prompt(sampling, len(prompts))
        self.calls.append(params)
        out = []
        for index, (prompt, one) in enumerate(zip(prompts, params)):
            text = self.tokenizer.decode(prompt)
            responses = next(r for q, r in self.answers.items() if q in text)
            out.append([Completion(index, responses[k % len(responses)], [1, 2, 3], [0.0] * 3, "stop", 0)
                        for k in range(one.n)])
        return out

    def update_weights(self, named_tensors, version: int) -> dict:
        return {}

    def close(self) -> None:
        pass


MATH = Benchmark("toy_math", [Item("a", "What is 2 + 3?", "5", "integer"),
                              Item("b", "What is 7 * 6?", "42", "integer")], "memory")
MCQ = Benchmark("toy_mcq", [Item("m", "Which planet is the largest?", "B", "mcq",
                                 ("Mars", "Jupiter", "Venus", "Earth"))], "memory", ["file line 3: bad"])


def test_scores_are_means_of_verdicts(tokenizer, tmp_path: Path) -> None:
    engine = ScriptedEngine(tokenizer, {
        "2 + 3": ["\\boxed{5}", "\\boxed{4}", "\\boxed{5}", "\\boxed{5}"],  # 3 of 4 samples right
        "7 * 6": ["\\boxed{41}"],
        "largest": ["\\boxed{B}"],
    })
    lines = []
    result = evaluate(engine, tokenizer, [MATH, MCQ], samples=4, temperature=0.6, max_new_tokens=64,
                      log=lines.append, output=tmp_path / "out" / "result.json")
    assert result["scores"] == {"toy_math": pytest.approx(0.375), "toy_mcq": 1.0}
    assert result["mean"] == pytest.approx((0.375 + 1.0) / 2)
    records = result["benchmarks"]["toy_math"]["records"]
    assert [r["score"] for r in records] == [0.75, 0.0]
    first = records[0]
    assert first["gold"] == "5" and "What is 2 + 3?" in first["prompt"]
    assert [s["correct"] for s in first["samples"]] == [True, False, True, True]
    assert first["samples"][1]["extracted"] == "4" and first["samples"][1]["response"] == "\\boxed{4}"
    (call,) = engine.calls  # one request for every item of both benchmarks
    assert len(call) == 3 and all(p.n == 4 and p.temperature == 0.6 and p.max_new_tokens == 64 for p in call)
    assert len({p.seed for p in call}) == 3  # every item its own random stream
    assert result["benchmarks"]["toy_mcq"]["skipped"] == ["file line 3: bad"]
    assert any("skipped file line 3" in line for line in lines)
    assert any("toy_math: 2/2 items" in line for line in lines)
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["scores"] == result["scores"]
    table = format_table(result)
    assert "toy_math" in table and "37.5" in table and "100.0" in table and "68.8" in table
    for record in saved["benchmarks"]["toy_math"]["records"]:  # verdicts of an older verifier
        for sample in record["samples"]:
            sample.update(correct=not sample["correct"], extracted=None)
    saved["scores"]["toy_math"] = 0.625
    assert rescore(saved)["scores"] == result["scores"] and saved["mean"] == result["mean"]
    assert saved["benchmarks"]["toy_math"]["records"] == records


def test_greedy_is_the_default_and_samples_need_a_temperature(tokenizer) -> None:
    engine = ScriptedEngine(tokenizer, {"2 + 3": ["\\boxed{5}"], "7 * 6": ["\\boxed{42}"]})
    result = evaluate(engine, tokenizer, [MATH], log=None)
    assert result["scores"]["toy_math"] == 1.0
    assert all(p.temperature == 0 and p.n == 1 and p.seed is None for p in engine.calls[0])
    with pytest.raises(ValueError, match="temperature"):
        evaluate(engine, tokenizer, [MATH], samples=4, log=None)
    with pytest.raises(ValueError, match="given twice"):
        evaluate(engine, tokenizer, [MATH, MATH], log=None)


def test_evaluate_during_training_returns_flat_metrics(tokenizer) -> None:
    from spice.config import EvalConfig

    engine = ScriptedEngine(tokenizer, {"2 + 3": ["\\boxed{5}"], "7 * 6": ["\\boxed{1}"],
                                        "What is half of 3?": ["\\boxed{1.5}"], "": ["no idea"]})
    config = EvalConfig(every=1, benchmarks=[f"local={DATA / 'eval_local.jsonl'}"], limit=None)
    metrics = evaluate_during_training(engine, tokenizer, config)
    assert set(metrics) == {"eval/local", "eval/mean"}
    assert metrics["eval/local"] == pytest.approx(2 / 6)  # "2 + 3" and "half of 3" of its 6 items
    assert metrics["eval/mean"] == metrics["eval/local"]


def test_end_to_end_tiny_model_through_the_real_engine(model_dir: Path, tokenizer, tmp_path: Path) -> None:
    from spice.rollout.hf import HFRolloutEngine

    engine = HFRolloutEngine(model_dir, batch_size=4, seed=0)
    names = ["gsm8k", "arc_challenge", f"local={DATA / 'eval_local.jsonl'}"]
    result = evaluate(engine, engine.tokenizer, names, limit=3, max_new_tokens=8, log=None,
                      output=tmp_path / "eval.json")
    assert list(result["scores"]) == ["gsm8k", "arc_challenge", "local"]
    for bench in result["benchmarks"].values():
        assert bench["items"] == 3 and len(bench["records"]) == 3
        for record in bench["records"]:
            (sample,) = record["samples"]
            assert record["question"] in record["prompt"] and 0 < sample["tokens"] <= 8
            assert sample["correct"] in (True, False) and record["score"] == float(sample["correct"])
    assert len(result["benchmarks"]["local"]["skipped"]) == 9
    # greedy decoding is deterministic: a second run gives the same responses
    again = evaluate(engine, engine.tokenizer, ["gsm8k"], limit=3, max_new_tokens=8, log=None)
    responses = [r["samples"][0]["response"] for r in again["benchmarks"]["gsm8k"]["records"]]
    assert responses == [r["samples"][0]["response"] for r in result["benchmarks"]["gsm8k"]["records"]]
    assert json.loads((tmp_path / "eval.json").read_text())["benchmarks"]["gsm8k"]["items"] == 3


def _eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_spice_eval_command(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    output = tmp_path / "result.json"
    status = command.run(_eval_args("--model", str(model_dir), "--benchmarks", "math500,mmlu", "--limit", "2",
                                    "--max-new-tokens", "4", "--output", str(output), "rollout.batch_size=2"))
    assert status == 0
    printed = capsys.readouterr().out
    assert "math500" in printed and "mmlu" in printed and str(output) in printed
    saved = json.loads(output.read_text())
    assert saved["settings"]["model"] == str(model_dir) and saved["settings"]["max_new_tokens"] == 4
    assert [b["items"] for b in saved["benchmarks"].values()] == [2, 2]


def test_spice_eval_rejects_bad_input_before_loading_a_model(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert command.run(_eval_args("--model", str(tmp_path), "--benchmarks", "gsm8k,nope")) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert command.run(_eval_args("--model", str(tmp_path / "absent"), "--benchmarks", "gsm8k")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert command.run(_eval_args("--benchmarks", "gsm8k", "--samples", "4", "--temperature", "0",
                                  "--model", str(tmp_path / "absent"))) == 2
    assert "needs --temperature above 0" in capsys.readouterr().err
    assert command.run(_eval_args("--list")) == 0
    assert "arc_challenge" in capsys.readouterr().out
