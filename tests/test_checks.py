"""Check programs (spice.checks) and the refinement pass (spice.refine): verdicts on scripted challenger
outputs, for the cases a small model never produces, and the prompt, schema and config they use."""

import json

import pytest
from transformers import AutoTokenizer

from spice import checks
from spice.config import ConfigError, load_config
from spice.corpus import Document
from spice.refine import refine_tasks
from spice.schemas import task_schema
from spice.tasks import Invalid, Task, challenger_messages, parse_task
from tests.scripted import ScriptedTextEngine

TEXT = ("The bakery sold 144 loaves on Monday and 96 loaves on Tuesday; each loaf cost 3.5 dollars. "
        "It opened on 14 March 2019 in Leeds.")
DOC = Document(id="d1", text=TEXT, source="test")
QUOTE = "sold 144 loaves on Monday and 96 loaves on Tuesday"


def output(answer, program=None, kind="integer", question="How many loaves did the Leeds bakery sell on "
           "Monday and Tuesday together?"):
    obj = {"answer_type": kind, "quote": QUOTE, "question": question, "solution": "Add both days."}
    if program is not None:
        obj["program"] = program
    obj.update(answer=answer, difficulty="easy")
    return json.dumps(obj)


def run_checks(texts, mode="optional", kind="integer", timeout=2.0):
    results = [parse_task(t, DOC, kind) for t in texts]
    assert all(isinstance(r, Task) for r in results), results
    return checks.check_tasks(results, texts, [TEXT] * len(texts), mode, "rlimits" if not SECCOMP else "seccomp",
                              timeout)


try:
    from spice.sandbox import check_mode
    check_mode("seccomp")
    SECCOMP = True
except Exception:
    SECCOMP = False


def test_verdicts_of_scripted_programs():
    texts = [
        output("240", "monday = 144\ntuesday = 96\nprint(monday + tuesday)"),  # passed
        output("250", "print(144 + 96)"),  # a wrong gold answer: the program disagrees
        output("240", "print(144 + 96 / 0)"),  # raises
        output("240", "while True:\n    pass"),  # runs out of time
        output("240", "print(240)"),  # copies the answer: computes nothing
        output("240", ""),  # no program
        output("240", "import os\nprint(os.getcwd())"),  # outside the allow-list
        output("240", "x = 144 + 96"),  # prints nothing
    ]
    results = run_checks(texts, timeout=1.0)
    verdicts = [record["verdict"] for _, record in results]
    assert verdicts == ["passed", "check_mismatch", "check_failed", "check_failed", "check_trivial", "absent",
                        "check_failed", "check_failed"]
    assert isinstance(results[0][0], Task) and isinstance(results[5][0], Task)
    for (result, _), verdict in zip(results, verdicts):
        if verdict.startswith("check_"):
            assert isinstance(result, Invalid) and result.reason == verdict
            assert isinstance(result.extra["task"], Task)  # the task stays available to the audit
    assert results[1][0].detail == "program printed '240', answer is '250'"
    assert "ZeroDivisionError" in results[2][1]["error"]
    assert "limit" in results[3][1]["error"]
    assert "ImportError" in results[6][1]["error"]
    assert results[7][1]["error"] == "the program printed nothing"
    assert results[0][1]["output"] == "240\n" and results[0][1]["seconds"] > 0
    assert results[0][1]["literals_in_document"] == [2, 2]


def test_required_numeric_needs_a_program_and_off_checks_nothing():
    (result, record), = run_checks([output("240")], mode="required_numeric")
    assert isinstance(result, Invalid) and result.reason == "check_missing"
    (result, record), = run_checks([output("240", "print(1 + 1)")], mode="off")
    assert isinstance(result, Task) and record is None
    string = output("Leeds", "print('Leeds')", kind="string",
                    question="In which city is the bakery that sold 144 loaves on Monday?")
    (result, record), = run_checks([string], mode="required_numeric", kind="string")
    assert isinstance(result, Task) and record is None  # strings carry no program


def test_agreement_is_the_verifiers():
    texts = [output("840", "print((144 + 96) * 3.5)"),  # 840.0 is 840
             output("840.0", "print(240 * 3.5)", kind="float"),
             output("0.6", "print(144 / 240)", kind="float"),
             output("0.33", "print(1 / 3)", kind="float"),  # rounded gold, unrounded program: disagree
             output("0.33", "print(round(1 / 3, 2))", kind="float"),
             output("x^2 + 2*x + 1", "print('x**2 + 2*x + 1' if 1 + 1 == 2 else '')", kind="expression")]
    kinds = ["integer", "float", "float", "float", "float", "expression"]
    results = [checks.check_tasks([parse_task(t, DOC, k)], [t], [TEXT], "optional",
                                  "seccomp" if SECCOMP else "rlimits")[0] for t, k in zip(texts, kinds)]
    assert [r["verdict"] for _, r in results] == ["passed", "passed", "passed", "check_mismatch", "passed",
                                                  "passed"]


def test_invalid_tasks_are_passed_through_untouched():
    invalid = Invalid("quote_not_in_document")
    results = checks.check_tasks([invalid], [output("240", "print(240)")], [TEXT], "required_numeric")
    assert results == [(invalid, None)]


def test_trivial_programs():
    assert checks.is_trivial("print(240)")
    assert checks.is_trivial("answer = '240'\nprint(answer)")
    assert checks.is_trivial("print(str(-240))")
    assert checks.is_trivial("from fractions import Fraction\nprint(Fraction(3, 4))")
    assert not checks.is_trivial("print(144 + 96)")
    assert not checks.is_trivial("print(sum([144, 96]))")
    assert not checks.is_trivial("print(-x)")
    assert not checks.is_trivial("print(")  # a syntax error is the sandbox's to report


def test_program_of_and_literals():
    assert checks.program_of(output("240", "print(1)")) == "print(1)"
    assert checks.program_of(output("240")) == ""
    assert checks.program_of('{"program": 5}') == "" and checks.program_of("no json") == ""
    assert checks.literals_in_document("print(144 + 96 + 7 + 2)", TEXT) == (2, 3)
    assert checks.literals_in_document("print(3.5 * 1234)", "3.5 and 1,234") == (2, 2)


def test_program_field_modes():
    assert checks.program_field("integer", "off") is None
    assert checks.program_field("integer", "optional") == "optional"
    assert checks.program_field("integer", "required_numeric") == "required"
    assert checks.program_field("expression", "required_numeric") == "optional"
    assert checks.program_field("mcq", "required_numeric") is None
    assert checks.program_field("string", "optional") is None
    with pytest.raises(ValueError, match="check mode"):
        checks.program_field("integer", "always")


def test_prompt_and_schema_ask_for_the_program_before_the_answer():
    for style in ("paper", "compact"):
        plain = challenger_messages(DOC, "integer", style)[-1]["content"]
        asked = challenger_messages(DOC, "integer", style, "required")[-1]["content"]
        assert "program" not in plain and "program" in asked
        assert asked.index("program") < asked.rindex("answer")
        schema = task_schema("integer", style, "required")
        keys = list(schema["properties"])
        assert keys.index("program") == keys.index("answer") - 1 and "program" in schema["required"]
        assert schema["properties"]["program"]["minLength"] == 1
        assert "minLength" not in task_schema("integer", style, "optional")["properties"]["program"]
        assert "program" not in task_schema("integer", style)["properties"]
    assert 'Write ""' in challenger_messages(DOC, "float", "paper", "optional")[-1]["content"]
    with pytest.raises(ValueError):
        challenger_messages(DOC, "mcq", "paper", "required")
    with pytest.raises(ValueError):
        task_schema("integer", "paper", "sometimes")


def test_config_fields_are_validated(monkeypatch):
    config = load_config(None, ["challenger.check=required_numeric", "challenger.refine_rounds=2",
                                "challenger.check_sandbox=rlimits"])
    assert config.challenger.check == "required_numeric" and config.challenger.refine_rounds == 2
    assert load_config().challenger.check == "off" and load_config().challenger.refine_rounds == 0
    for override, message in (("challenger.check=sometimes", "challenger.check"),
                              ("challenger.check_sandbox=none", "challenger.check_sandbox"),
                              ("challenger.check_timeout=0", "challenger.check_timeout"),
                              ("challenger.refine_rounds=-1", "challenger.refine_rounds")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])
    from spice import sandbox
    monkeypatch.setattr(sandbox, "check_mode", lambda mode: (_ for _ in ()).throw(sandbox.SandboxError("no seccomp")))
    with pytest.raises(ConfigError, match="challenger.check_sandbox: no seccomp"):
        load_config(None, ["challenger.check=optional"])
    load_config(None, ["challenger.check=off"])  # no sandbox needed when nothing is checked


def test_check_metrics():
    records = [None, {"program": "p", "verdict": "passed", "seconds": 0.1},
               {"program": "p", "verdict": "check_mismatch", "seconds": 0.2}, {"program": "", "verdict": "absent",
                                                                              "seconds": 0.0}]
    metrics = checks.check_metrics(records)
    assert metrics["check/tasks"] == 3 and metrics["check/program_share"] == pytest.approx(2 / 3)
    assert metrics["check/passed"] == pytest.approx(1 / 3) and metrics["check/check_mismatch"] == pytest.approx(1 / 3)
    assert metrics["check/sandbox_seconds"] == pytest.approx(0.3)
    assert checks.check_metrics([None]) == {}


# ---------------------------------------------------------------- refinement

HARDER = "Over Monday and Tuesday, how many loaves did the Leeds bakery that opened in March 2019 sell?"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


class Sample:
    def __init__(self, text, kind="integer"):
        self.document, self.kind, self.prompt_ids = DOC, kind, [1]
        self.completion = type("C", (), {"text": text})()
        self.result = parse_task(text, DOC, kind)
        self.check = None
        self.versions = []


def refine_config(*extra):
    return load_config(None, ["challenger.refine_rounds=2", "challenger.prompt_style=paper",
                              "challenger.constrained_decoding=false", *extra])


def editor_script(*edits):
    """Suggestions are a fixed line; editor outputs come from `edits`, one per editor request."""
    queue = list(edits)

    def respond(prompt, sampling):
        if "You are now the editor" in prompt:
            return queue.pop(0)
        assert "You are now the suggester" in prompt
        return "Mention the opening date."
    return respond


def test_refinement_accepts_a_harder_task_with_the_same_answer(tokenizer):
    sample = Sample(output("240", "print(144 + 96)"))
    engine = ScriptedTextEngine(tokenizer, editor_script(output("240", "print(144 + 96)", question=HARDER),
                                                         output("250", "print(144 + 96 + 10)", question=HARDER + "!")))
    refine_tasks(engine, tokenizer, [sample], refine_config("challenger.check=optional"), 0)
    assert isinstance(sample.result, Task) and sample.result.question == HARDER
    assert sample.completion.text == output("240", "print(144 + 96)", question=HARDER)
    assert sample.prompt_ids != [1] and "You are now the editor" in tokenizer.decode(sample.prompt_ids)
    assert [v["status"] for v in sample.versions] == ["original", "accepted", "rejected"]
    assert sample.versions[2]["reason"] == "answer_changed"
    assert sample.versions[1]["suggestion"] == "Mention the opening date."
    assert sample.versions[1]["check"]["verdict"] == "passed"
    assert sample.check["verdict"] == "passed"
    prompts, sampling = engine.requests[0]
    assert "sold 144 loaves" in prompts[0] and sampling.n == 1 and sampling.json_schema is None


def test_refinement_rejects_ungrounded_failing_and_unchanged_edits(tokenizer):
    bad_quote = output("240", "print(144 + 96)", question=HARDER).replace(QUOTE, "sold many loaves in Leeds")
    cases = [(bad_quote, "quote_not_in_document"),
             (output("240", "print(144 + 95)", question=HARDER), "check_mismatch"),
             (output("240", "print(144 + 96)"), "unchanged"),
             ("not json", "no_json")]
    for text, reason in cases:
        sample = Sample(output("240", "print(144 + 96)"))
        original = sample.result
        engine = ScriptedTextEngine(tokenizer, editor_script(text, text))
        refine_tasks(engine, tokenizer, [sample], refine_config("challenger.check=optional"), 0)
        assert sample.result == original and sample.prompt_ids == [1]
        assert [v.get("reason") for v in sample.versions[1:]] == [reason, reason], text


def test_refinement_keeps_the_correct_option_of_an_mcq(tokenizer):
    def mcq(options, answer, question="Which city did the bakery open in?"):
        return json.dumps({"quote": "It opened on 14 March 2019 in Leeds", "question": question,
                           "options": options, "solution": "Quoted.", "answer": answer, "difficulty": "easy"})
    sample = Sample(mcq(["Leeds", "York", "Hull", "Bath"], "A"), kind="mcq")
    harder = mcq(["York", "Hull", "Leeds", "Bath"], "C", "Which city saw the bakery open in March 2019?")
    moved = mcq(["York", "Hull", "Leeds", "Bath"], "A", "Which English city saw the bakery open in 2019?")
    engine = ScriptedTextEngine(tokenizer, editor_script(harder, moved))
    refine_tasks(engine, tokenizer, [sample], refine_config(), 0)
    assert sample.result.answer == "C" and sample.result.options[2] == "Leeds"
    assert [v.get("reason") for v in sample.versions] == [None, None, "answer_changed"]


def test_invalid_samples_are_not_refined(tokenizer):
    sample = Sample("garbage")
    engine = ScriptedTextEngine(tokenizer, editor_script())
    refine_tasks(engine, tokenizer, [sample], refine_config(), 0)
    assert engine.requests == [] and sample.versions == []


def test_bench_scripted_outputs_get_their_labelled_verdicts():
    import argparse

    from spice.bench.checks import SCRIPTED, scripted
    row = scripted("seccomp" if SECCOMP else "rlimits", argparse.Namespace(repeat=1, timeout=1.0))
    assert row["outputs"] == len(SCRIPTED) and row["empty_ok"]
    assert row["agree_with_label"] == (len(SCRIPTED) if SECCOMP else len(SCRIPTED) - 1)
