"""Rollout engines: generate completions for both roles from one set of weights."""

from spice.rollout.base import Completion, RolloutEngine, SamplingParams

__all__ = ["Completion", "RolloutEngine", "SamplingParams"]
