"""The one-line iteration summary names an iteration without a task instead of printing accuracy 0."""

from spice.telemetry import summary_line

ROW = {"iteration": 4, "valid_task_rate": 0.0, "documents_with_task": 0.0, "challenger_reward_mean": -0.1,
       "challenger_reward_std": 0.0, "rollout_tokens_per_second": 40.0, "seconds/challenger": 3.0}


def test_summary_line_without_a_task_shows_no_accuracy():
    assert "| acc - |" in summary_line({**ROW, "reasoner_accuracy": None}, 30)
    assert "| acc 0.250 |" in summary_line({**ROW, "reasoner_accuracy": 0.25}, 30)
    assert summary_line({**ROW, "reasoner_accuracy": None}, 30).startswith("iter 5/30 |")
