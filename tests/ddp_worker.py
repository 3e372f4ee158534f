"""Run by tests/test_torch_backend.py under torchrun: one TorchBackend step on a fixed global batch,
then rank 0 saves the updated weights for comparison across world sizes."""

import sys

import torch
from safetensors.torch import save_file

from spice.config import load_config
from spice.train.torch_backend import TorchBackend
from tests.batches import random_batch


def main(model_dir: str, out: str) -> None:
    config = load_config(None, ["optim.lr=1e-2", "optim.micro_batch_size=2", "loss.normalizer=16"])
    backend = TorchBackend(config, model_dir)
    metrics = backend.step(random_batch(backend.model.config.vocab_size, rows=6, seed=0))
    if backend.rank == 0:
        state = {name: t.contiguous().clone() for name, t in backend.named_weights()}
        state["loss"] = torch.tensor([metrics["loss"]])
        save_file(state, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
