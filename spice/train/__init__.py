"""Training backends: compute log-probabilities and take policy steps on a `Batch`."""

from spice.train.base import Batch, TrainBackend

__all__ = ["Batch", "TrainBackend"]
