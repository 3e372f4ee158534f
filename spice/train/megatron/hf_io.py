"""Hugging Face checkpoints in and out of a TP/PP-sharded megatron GPTModel.

Loading: every rank reads only the tensors its stage and TP shard need from the safetensors files.
Export: a collective over all ranks; per bucket, the owning pipeline stage gathers its TP shards into
full HF tensors and broadcasts them over the pipeline group, so every rank sees every tensor.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from spice.train.megatron import weights
from spice.train.megatron.model import HFArch
from spice.train.megatron.parallel import Layout

ValueOf = Callable[[torch.nn.Parameter], torch.Tensor]
_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
HF_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt")


class HFTensors:
    """Lazy access to the tensors of a local HF folder (single file or sharded with an index)."""

    def __init__(self, model_dir: str | Path) -> None:
        from safetensors import safe_open

        self.dir = Path(model_dir)
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = [p.name for p in sorted(self.dir.glob("*.safetensors"))]
        if not files:
            raise FileNotFoundError(f"{self.dir}: no *.safetensors files (convert the checkpoint to safetensors)")
        self._handles = [safe_open(str(self.dir / f), framework="pt", device="cpu") for f in files]
        self._where = {name: h for h in self._handles for name in h.keys()}

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise KeyError(f"{self.dir}: checkpoint has no tensor {name}")
        return self._where[name].get_tensor(name)


def local_layers(model: torch.nn.Module) -> dict[int, int]:
    """Global 0-based layer -> index in this stage's `decoder.layers`."""
    return {int(layer.layer_number) - 1: i for i, layer in enumerate(model.decoder.layers)}


def load_hf_into(model: torch.nn.Module, arch: HFArch, model_dir: str | Path, layout: Layout) -> None:
    """Copy this rank's shard of the HF checkpoint at `model_dir` into `model`'s parameters."""
    hf = HFTensors(model_dir)
    tp, rank = layout.tp_size, layout.tp_rank
    to_global = {i: g for g, i in local_layers(model).items()}
    by_layer: dict[int, dict[str, torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        match = _LAYER.match(name)
        if match:
            by_layer.setdefault(int(match.group(1)), {})[match.group(2)] = param
            continue
        if name == "embedding.word_embeddings.weight":
            value = weights.vocab_to_megatron(hf["model.embed_tokens.weight"], tp, rank)
        elif name == "output_layer.weight":
            source = "model.embed_tokens.weight" if arch.tie_word_embeddings else "lm_head.weight"
            value = weights.vocab_to_megatron(hf[source], tp, rank)
        elif name == "decoder.final_layernorm.weight":
            value = hf["model.norm.weight"]
        else:
            raise KeyError(f"no Hugging Face tensor for megatron parameter {name}")
        _copy(param, value, name)
    for index, params in by_layer.items():
        values = weights.layer_to_megatron(hf, arch, to_global[index], list(params), tp, rank)
        for local, param in params.items():
            _copy(param, values[local], f"decoder.layers.{index}.{local}")


def _copy(param: torch.Tensor, value: torch.Tensor, name: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"megatron parameter {name} has shape {tuple(param.shape)}, the HF checkpoint gives "
                         f"{tuple(value.shape)}")
    with torch.no_grad():
        param.copy_(value)


def _units(arch: HFArch, owner_of_layer: dict[int, int], pp_size: int) -> list[tuple[int, str, int]]:
    """(owning stage, kind, layer) for every export unit, in HF order."""
    units = [(0, "embed", -1)]
    units += [(owner_of_layer[layer], "layer", layer) for layer in range(arch.num_layers)]
    units.append((pp_size - 1, "norm", -1))
    if not arch.tie_word_embeddings:
        units.append((pp_size - 1, "head", -1))
    return units


def _unit_names(arch: HFArch, kind: str, layer: int) -> list[str]:
    return {"embed": ["model.embed_tokens.weight"], "norm": ["model.norm.weight"],
            "head": ["lm_head.weight"]}.get(kind) or weights.hf_layer_names(arch, layer)


def param_value(param: torch.nn.Parameter) -> torch.Tensor:
    """What export reads by default: the parameter itself."""
    return param.detach()


def param_grad(param: torch.nn.Parameter) -> torch.Tensor:
    """The gradient megatron's DDP accumulated (`main_grad`) or autograd's `.grad`; zeros if none. A test
    helper (the distributed tests compare gradients with it): under the distributed optimizer
    `main_grad` is reduced only in this rank's shard, and it is never clipped (clipping acts on the
    optimizer's fp32 copies), so it is not the update that was applied."""
    grad = getattr(param, "main_grad", None)
    if grad is None:
        grad = param.grad
    return torch.zeros_like(param) if grad is None else grad.detach()


def _gather_tp(param: torch.nn.Parameter, group: object, tp_size: int, value: ValueOf) -> list[torch.Tensor]:
    tensor = value(param)
    if tp_size == 1 or not getattr(param, "tensor_model_parallel", False):
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(tp_size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def _unit_tensors(model: torch.nn.Module, arch: HFArch, kind: str, layer: int, layout: Layout,
                  value: ValueOf) -> dict[str, torch.Tensor]:
    """Full HF tensors of one unit on its owning stage (a collective over the TP group)."""
    from megatron.core import parallel_state as ps

    group = ps.get_tensor_model_parallel_group()
    if kind == "embed":
        parts = _gather_tp(model.embedding.word_embeddings.weight, group, layout.tp_size, value)
        return {"model.embed_tokens.weight": weights.vocab_to_hf(parts)}
    if kind == "head":
        parts = _gather_tp(model.output_layer.weight, group, layout.tp_size, value)
        return {"lm_head.weight": weights.vocab_to_hf(parts)}
    if kind == "norm":
        return {"model.norm.weight": value(model.decoder.final_layernorm.weight).clone()}
    module = model.decoder.layers[local_layers(model)[layer]]
    shards = {name: _gather_tp(param, group, layout.tp_size, value) for name, param in module.named_parameters()}
    return weights.layer_to_hf(shards, arch, layer)


def iter_hf_buckets(model: torch.nn.Module, arch: HFArch, layout: Layout, dtype: torch.dtype,
                    bucket_bytes: int, value: ValueOf = param_value) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Yield lists of (HF name, full tensor) of at most ~`bucket_bytes` each, on every rank; `value`
    picks what is exported of each parameter (the weight, or `param_grad`).

    A collective: all ranks must iterate to the end in step."""
    from megatron.core import parallel_state as ps

    owners: list[list[int]] = [[] for _ in range(layout.pp_size)]
    mine = sorted(local_layers(model))
    if layout.pp_size > 1:
        dist.all_gather_object(owners, mine, group=ps.get_pipeline_model_parallel_group())
    else:
        owners = [mine]
    owner_of_layer = {layer: stage for stage, layers in enumerate(owners) for layer in layers}
    size = torch.empty((), dtype=dtype).element_size()
    buckets: list[list[Any]] = []  # [owning stage, units, bytes]
    for stage, kind, layer in _units(arch, owner_of_layer, layout.pp_size):
        nbytes = sum(torch.Size(weights.hf_shape(arch, n)).numel() for n in _unit_names(arch, kind, layer)) * size
        if buckets and buckets[-1][0] == stage and buckets[-1][2] + nbytes <= bucket_bytes:
            buckets[-1][1].append((kind, layer))
            buckets[-1][2] += nbytes
        else:
            buckets.append([stage, [(kind, layer)], nbytes])
    pp_group = ps.get_pipeline_model_parallel_group() if layout.pp_size > 1 else None
    for stage, units, _ in buckets:
        names = [n for kind, layer in units for n in _unit_names(arch, kind, layer)]
        if stage == layout.pp_rank:
            tensors: dict[str, torch.Tensor] = {}
            for kind, layer in units:
                tensors.update(_unit_tensors(model, arch, kind, layer, layout, value))
            items = [(n, tensors[n].to(dtype)) for n in names]
        else:
            items = [(n, torch.empty(weights.hf_shape(arch, n), dtype=dtype, device=_device(model))) for n in names]
        if pp_group is not None:
            flat = torch.cat([t.reshape(-1) for _, t in items])
            dist.broadcast(flat, src=dist.get_global_rank(pp_group, stage), group=pp_group)
            offsets = 0
            received = []
            for n, t in items:
                received.append((n, flat[offsets:offsets + t.numel()].view(t.shape)))
                offsets += t.numel()
            items = received
        yield items


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def save_hf(buckets: Iterator[list[tuple[str, torch.Tensor]]], path: str | Path, model_dir: str | Path,
            write: bool) -> None:
    """Write the buckets as sharded safetensors with an index, plus config and tokenizer files from
    `model_dir`; only the rank with `write` touches the disk, all ranks must iterate."""
    from safetensors.torch import save_file

    path = Path(path)
    if write:
        path.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    files = []
    for number, bucket in enumerate(buckets):
        if not write:
            continue
        name = f"model-{number + 1:05d}.safetensors"
        save_file({n: t.detach().cpu().contiguous() for n, t in bucket}, str(path / name), metadata={"format": "pt"})
        files.append(name)
        for n, t in bucket:
            weight_map[n] = name
            total += t.numel() * t.element_size()
    if not write:
        return
    renamed = {}
    for number, name in enumerate(files):
        final = f"model-{number + 1:05d}-of-{len(files):05d}.safetensors"
        (path / name).rename(path / final)
        renamed[name] = final
    index = {"metadata": {"total_size": total}, "weight_map": {n: renamed[f] for n, f in weight_map.items()}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    for side in HF_SIDE_FILES:
        if (Path(model_dir) / side).is_file() and Path(model_dir).resolve() != path.resolve():
            shutil.copy2(Path(model_dir) / side, path / side)
