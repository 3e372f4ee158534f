import math

import pytest

from spice.rewards import challenger_reward, reasoner_reward

# ../shared/SPICE.md: K = 8 -> 0 or 8 correct 0.044, 1 or 7 0.372, 2 or 6 0.823, 3 or 5 0.988, 4 1.0
PAPER_TABLE = {0: 0.044, 1: 0.372, 2: 0.823, 3: 0.988, 4: 1.0, 5: 0.988, 6: 0.823, 7: 0.372, 8: 0.044}


@pytest.mark.parametrize("correct", range(9))
def test_challenger_reward_matches_paper_table_for_k8(correct):
    samples = [1] * correct + [0] * (8 - correct)
    assert challenger_reward(samples) == pytest.approx(PAPER_TABLE[correct], abs=5e-4)


def test_challenger_reward_exact_formula():
    p = 3 / 8
    expected = math.exp(-((p * (1 - p) - 0.25) ** 2) / (2 * 0.01))
    assert challenger_reward([True, False, True, False, False, True, False, False]) == expected


def test_invalid_task_penalty_and_custom_penalty():
    assert challenger_reward([1, 0], valid=False) == -0.1
    assert challenger_reward([], valid=False, invalid_penalty=-0.5) == -0.5


def test_valid_task_needs_answers():
    with pytest.raises(ValueError, match="at least one"):
        challenger_reward([])


def test_reasoner_reward():
    assert reasoner_reward(True) == 1.0
    assert reasoner_reward(0) == 0.0
