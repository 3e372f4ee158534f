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

from spice.rollout.weight_sync.base import post_all

# Files besides the weights that make a folder a loadable HF model (copied from the base model).
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt")


class ShardWriter:
    """Writes tensors as they arrive into HF safetensors shards of at most `shard_bytes` (a larger
    tensor goes alone), holding one shard on the host at a time; `finish` names the shards and
    writes the index. Lets a streamed model be saved without ever being held whole."""

    def __init__(self, directory: Path, *, model_dir: str | Path | None = None, shard_bytes: int = 4 << 30) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.model_dir = model_dir
        self.shard_bytes = shard_bytes
        self.shard: dict[str, torch.Tensor] = {}
        self.size = 0
        self.total = 0
        self.written: list[tuple[Path, list[str]]] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.shard and self.size + nbytes > self.shard_bytes:
            self._flush()
        self.shard[name] = tensor.detach().to("cpu").contiguous()
        self.size += nbytes
        self.total += nbytes

    def _flush(self) -> None:
        path = self.directory / f"shard-{len(self.written):05d}.partial"
        save_file(self.shard, str(path), metadata={"format": "pt"})
        self.written.append((path, list(self.shard)))
        self.shard, self.size = {}, 0

    def finish(self) -> int:
        """Write the last shard, give the shards their HF names and the index; return bytes written."""
        if self.shard:
            self._flush()
        weight_map = {}
        for index, (path, names) in enumerate(self.written):
            filename = (f"model-{index + 1:05d}-of-{len(self.written):05d}.safetensors" if len(self.written) > 1
                        else "model.safetensors")
            path.rename(self.directory / filename)
            weight_map.update({name: filename for name in names})
        if len(self.written) > 1:
            index_file = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=1))
        if self.model_dir is not None:
            for name in MODEL_FILES:
                source = Path(self.model_dir) / name
                if source.is_file():
                    shutil.copy2(source, self.directory / name)
        return self.total


def save_safetensors(named_tensors: Iterable[tuple[str, torch.Tensor]], directory: Path, *,
                     model_dir: str | Path | None = None, shard_bytes: int = 4 << 30) -> int:
    """Write tensors as HF safetensors shards plus index into `directory`; return bytes written."""
    writer = ShardWriter(directory, model_dir=model_dir, shard_bytes=shard_bytes)
    for name, tensor in named_tensors:
        writer.add(name, tensor)
    return writer.finish()


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
