"""Each monitor on hand-made inputs, and the policy's rules (parsing errors name the key)."""

import math

import pytest
import torch

from spice.config import ConfigError, load_config
from spice.guard import monitors, policy


def test_valid_rate_and_accuracy_read_the_metrics_row():
    assert monitors.valid_task_rate({"valid_task_rate": 0.25}) == 0.25
    assert monitors.reasoner_accuracy({"reasoner_accuracy": 1.0}) == 1.0
    assert math.isnan(monitors.valid_task_rate({}))
    assert math.isnan(monitors.reasoner_accuracy({"reasoner_accuracy": None}))  # an iteration without a task


def test_iterations_without_a_task_do_not_read_as_unanswerable_tasks():
    rules = [r for r in policy.parse_rules(load_config().guard.rules) if r.name == "tasks unanswerable"]
    no_task = {"reasoner_accuracy": None}
    signals = [{"reasoner_accuracy": monitors.reasoner_accuracy(no_task)} for _ in range(3)]
    assert policy.evaluate(rules, signals[-1], signals[:-1]) == []
    zero = [{"reasoner_accuracy": 0.0}] * 3
    assert [f.rule.name for f in policy.evaluate(rules, zero[-1], zero[:-1])] == ["tasks unanswerable"]


def test_answer_leaks():
    assert monitors.answer_leaks("Curie was born in Warsaw; where was Curie born?", "Warsaw")
    assert not monitors.answer_leaks("Where was Curie born?", "Warsaw")
    assert not monitors.answer_leaks("How many prizes in 1867?", "8")  # a digit inside a number is no leak
    assert monitors.answer_leaks("Which river, the Danube, flows...?", "B", ["Rhine", "Danube"], "mcq")
    assert not monitors.answer_leaks("Which river flows through ten countries?", "B", ["Rhine", "Danube"], "mcq")
    assert not monitors.answer_leaks("Which is larger, 3 or 5?", "B", ["3", "5"], "mcq")  # names its options
    rows = [{"status": "valid", "question": "Is it 42? The answer is 42.", "answer": "42", "kind": "integer"},
            {"status": "valid", "question": "What is six times seven?", "answer": "42", "kind": "integer"},
            {"status": "invalid"}]
    assert monitors.answer_leak_rate(rows) == 0.5
    assert math.isnan(monitors.answer_leak_rate([{"status": "invalid"}]))


def test_duplicates_within_and_across_iterations():
    distinct = ["Which city was Marie Curie born in?", "How many countries does the Danube flow through?",
                "What does photosynthesis convert light energy into?"]
    assert monitors.duplicate_rate(distinct) == 0.0
    flood = ["Which word opens the sentence about Curie in the document?"] * 4
    assert monitors.duplicate_rate(flood) == 0.75  # every copy after the first
    assert monitors.duplicate_rate(distinct[:1], recent=["Which city was Marie Curie born in?"]) == 1.0
    assert math.isnan(monitors.duplicate_rate([]))


def test_ratio_and_zscore_against_history():
    assert monitors.ratio_to_mean(30.0, [10.0, 10.0]) == 3.0
    assert math.isnan(monitors.ratio_to_mean(30.0, []))
    assert monitors.zscore(3.0, [1.0, 2.0, 3.0, 2.0]) == pytest.approx((3 - 2) / (0.5 ** 0.5))
    assert monitors.zscore(5.0, [1.0, 1.0, 1.0]) == math.inf
    assert monitors.zscore(1.5, [1.0, 1.0, 1.0], min_std=0.5) == 1.0
    assert math.isnan(monitors.zscore(5.0, [1.0]))


def test_policy_kl_is_zero_for_the_same_policy_and_positive_otherwise():
    reference = torch.log(torch.tensor([[0.0, 0.5, 0.25], [0.0, 0.1, 0.9]]).clamp_min(1e-9))
    mask = torch.tensor([[0.0, 1, 1], [0, 1, 1]])
    assert monitors.policy_kl(reference, reference, mask) == 0.0
    assert monitors.policy_kl(reference, reference - 0.3, mask) > 0
    assert math.isnan(monitors.policy_kl(reference, reference, torch.zeros_like(mask)))


def test_eval_regression_is_the_largest_drop_below_the_best():
    history = [{"eval/gsm8k": 0.3, "eval/arc": 0.5}, {"eval/gsm8k": 0.4}]
    assert monitors.eval_regression({"eval/gsm8k": 0.35, "eval/arc": 0.55}, history) == pytest.approx(0.05)
    assert monitors.eval_regression({"eval/gsm8k": 0.5}, history) == 0.0
    assert math.isnan(monitors.eval_regression({"loss": 1.0}, history))


def test_disagreement():
    assert monitors.disagreement([True, False, False, True]) == 0.5
    assert math.isnan(monitors.disagreement([]))


def _rule(**raw):
    return policy.parse_rule({"monitor": "x", **raw}, 0)


def test_threshold_rules_with_consecutive_iterations():
    rule = _rule(below=0.1, consecutive=2, action="stop")
    assert policy.check(rule, {"x": 0.05}, [{"x": 0.5}]) is None
    firing = policy.check(rule, {"x": 0.05}, [{"x": 0.5}, {"x": 0.01}])
    assert firing.rule.action == "stop" and "for 2 iterations" in firing.detail
    assert policy.check(_rule(above=1), {"x": 2}, []) is not None
    assert policy.check(_rule(above=1), {"x": float("nan")}, []) is None


def test_zscore_and_ratio_rules_wait_for_history():
    spike = _rule(zscore=3, window=5, min_std=0.1, action="rollback")
    assert policy.check(spike, {"x": 50.0}, [{"x": 0.1}, {"x": 0.2}]) is None  # min_history 3
    history = [{"x": 0.1}, {"x": 0.2}, {"x": 0.15}]
    assert policy.check(spike, {"x": 0.2}, history) is None
    assert "std from the mean" in policy.check(spike, {"x": 50.0}, history).detail
    explosion = _rule(ratio=3, min_history=1)
    assert policy.check(explosion, {"x": 40}, [{"x": 10}]) is not None
    assert policy.check(explosion, {"x": 20}, [{"x": 10}]) is None


def test_evaluate_puts_the_most_severe_first():
    rules = policy.parse_rules([{"monitor": "x", "above": 0, "action": "log"},
                                {"monitor": "x", "above": 0, "action": "stop", "name": "hard"},
                                {"monitor": "x", "above": 0, "action": "pause", "name": "soft"}])
    assert [f.rule.action for f in policy.evaluate(rules, {"x": 1}, [])] == ["stop", "pause", "log"]


@pytest.mark.parametrize("rule, message", [
    ({"monitor": "x"}, "needs exactly one of"),
    ({"monitor": "x", "above": 1, "below": 0}, "needs exactly one of"),
    ({"monitor": "x", "above": 1, "action": "explode"}, "guard.rules[0].action"),
    ({"monitor": "x", "zscore": -1}, "guard.rules[0].zscore: must be positive"),
    ({"monitor": "x", "above": "high"}, "guard.rules[0].above: expected a number"),
    ({"monitor": "x", "above": 1, "windw": 3}, "guard.rules[0].windw: unknown rule key"),
    ({"above": 1}, "guard.rules[0].monitor"),
    ({"monitor": "x", "above": 1, "then": "later"}, "guard.rules[0].then"),
])
def test_bad_rules_name_the_key(rule, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [f"guard.rules=[{rule}]"])


def test_default_rules_parse_and_only_log():
    config = load_config()
    rules = policy.parse_rules(config.guard.rules)
    assert rules and {r.action for r in rules} == {"log"}


def test_asking_for_a_missing_dashboard_is_refused_at_load():
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match="guard.wandb: 'proj' asks for wandb, which is not installed"):
        load_config(None, ["guard.wandb=proj"])
