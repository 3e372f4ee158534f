"""The paper's rewards: the reasoner is paid for a correct answer, the challenger for a task
whose difficulty sits at the edge of the reasoner's ability (variance of its correctness near 0.25)."""

from __future__ import annotations

import math
from collections.abc import Sequence

INVALID_TASK_PENALTY = -0.1
TARGET_VARIANCE = 0.25
VARIANCE_WIDTH = 0.01  # the sigma^2 of the Gaussian: exp(-(Var - 0.25)^2 / (2 * 0.01))


def reasoner_reward(correct: bool | int) -> float:
    """1.0 for an answer equivalent to the gold answer, else 0.0."""
    return 1.0 if correct else 0.0


def challenger_reward(correct: Sequence[int | bool], valid: bool = True,
                      invalid_penalty: float = INVALID_TASK_PENALTY) -> float:
    """Gaussian of the population variance p(1-p) of the reasoner's 0/1 correctness over its K answers;
    `invalid_penalty` (-0.1) for an invalid task."""
    if not valid:
        return invalid_penalty
    if len(correct) == 0:
        raise ValueError("challenger_reward: needs at least one reasoner answer for a valid task")
    p = sum(1.0 for c in correct if c) / len(correct)
    variance = p * (1.0 - p)
    return math.exp(-((variance - TARGET_VARIANCE) ** 2) / (2.0 * VARIANCE_WIDTH))
