"""Weight sync through the filesystem: save HF safetensors, then `/update_weights_from_disk`.

The simple fallback that works with any layout where servers can read the trainer's disk. SGLang
reloads the safetensors files found in `model_path` (https://docs.sglang.io/basic_usage/native_api.html).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from spice.rollout.weight_sync.base import buckets, post_all

# Files besides the weights that make a folder a loadable HF model (copied from the base model).
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt")


def save_safetensors(named_tensors: Iterable[tuple[str, torch.Tensor]], directory: Path, *,
                     model_dir: str | Path | None = None, shard_bytes: int = 4 << 30) -> int:
    """Write tensors as HF safetensors shards plus index into `directory`; return bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = []
    total = 0
    for bucket in buckets(named_tensors, shard_bytes):
        shard = {}
        for name, tensor in bucket:
            shard[name] = tensor.detach().to("cpu").contiguous()
            total += tensor.numel() * tensor.element_size()
        shards.append(shard)
    weight_map = {}
    for index, shard in enumerate(shards):
        filename = (f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors" if len(shards) > 1
                    else "model.safetensors")
        save_file(shard, str(directory / filename), metadata={"format": "pt"})
        weight_map.update({name: filename for name in shard})
    if len(shards) > 1:
        index_file = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=1))
    if model_dir is not None:
        for name in MODEL_FILES:
            source = Path(model_dir) / name
            if source.is_file():
                shutil.copy2(source, directory / name)
    return total


class DiskWeightSync:
    """Save version `v` to `<directory>/v<v>` and ask every server to load it; keeps only the latest
    folder, which is also what a restarted server is resynchronised from."""

    name = "disk"

    def __init__(self, directory: str | Path, *, model_dir: str | Path | None = None,
                 api_key: str | None = None, timeout: float = 600.0) -> None:
        self.directory = Path(directory)
        self.model_dir = model_dir
        self.api_key = api_key
        self.timeout = timeout
        self.latest: tuple[int, Path] | None = None

    def save(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> int:
        """Write version `version` to disk (replacing older versions); return bytes written."""
        target = self.directory / f"v{version}"
        if target.exists():
            shutil.rmtree(target)
        written = save_safetensors(named_tensors, target, model_dir=self.model_dir)
        previous, self.latest = self.latest, (version, target)
        if previous is not None and previous[1] != target:
            shutil.rmtree(previous[1], ignore_errors=True)
        return written

    def load(self, urls: list[str], skip: Callable[[str], bool] = lambda url: False) -> None:
        """Ask the servers to load the latest saved version."""
        if self.latest is None:
            return
        version, path = self.latest
        payload = {"model_path": str(path.resolve()), "weight_version": str(version)}
        post_all(urls, "/update_weights_from_disk", payload, api_key=self.api_key, timeout=self.timeout,
                 skip=skip)

    def push(self, urls: list[str], named_tensors: Iterable[tuple[str, torch.Tensor]], version: int,
             skip: Callable[[str], bool] = lambda url: False) -> int:
        written = self.save(named_tensors, version)
        self.load(urls, skip)
        return written

    def reset(self) -> None:
        """Nothing per server: the folder stays valid across restarts."""

    def close(self) -> None:
        if self.latest is not None:
            shutil.rmtree(self.latest[1], ignore_errors=True)
            self.latest = None
