"""Synthetic training batches for backend tests."""

import torch

from spice.train.base import Batch


def random_batch(vocab_size: int, rows: int = 6, width: int = 20, seed: int = 0) -> Batch:
    """Sequences with a prompt part and a completion part of varying lengths, random advantages."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (rows, width), generator=generator)
    attention = torch.zeros(rows, width, dtype=torch.long)
    loss_mask = torch.zeros(rows, width)
    for row in range(rows):
        prompt = 4 + row % 3
        end = width - (row % 4)
        attention[row, :end] = 1
        loss_mask[row, prompt:end] = 1
    advantages = torch.randn(rows, 1, generator=generator).expand(rows, width) * loss_mask
    rollout = -torch.rand(rows, width, generator=generator) * 5 * loss_mask
    roles = ["challenger" if row % 2 else "reasoner" for row in range(rows)]
    return Batch(input_ids, attention, loss_mask, advantages.contiguous(), rollout, roles)
