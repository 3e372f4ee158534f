"""Hugging Face <-> Megatron-Core weight conversion for Llama / Qwen2 / Qwen3 decoders.

Pure tensor functions (no process groups) so that sharding is testable in one process:
`layer_to_megatron` cuts one HF layer into this tensor-parallel rank's Megatron tensors (QKV fused
per query group, gate/up concatenated per rank, row/column splits), and `layer_to_hf` joins the
shards of all ranks back into HF tensors. Both are exact (only slicing and concatenation), so a
round trip reproduces every bit. The vocabulary is split into equal contiguous row blocks, one per
rank (the layout `spice.grpo`'s vocab-parallel loss expects); it must divide by the TP size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from spice.train.megatron.model import HFArch

# Megatron names of one layer; the norms have two spellings (local spec / Transformer Engine's fused
# norm + linear). The layer-local HF name follows.
LAYER_NAMES = {
    "self_attention.linear_qkv.weight": "self_attn.qkv.weight",
    "self_attention.linear_qkv.bias": "self_attn.qkv.bias",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",
    "mlp.linear_fc1.weight": "mlp.gate_up.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}


def hf_layer_names(arch: HFArch, layer: int) -> list[str]:
    """The HF tensor names of decoder layer `layer` (0-based), in a fixed order."""
    p = f"model.layers.{layer}."
    names = [p + "input_layernorm.weight"]
    names += [p + f"self_attn.{x}_proj.weight" for x in "qkv"]
    if arch.qkv_bias:
        names += [p + f"self_attn.{x}_proj.bias" for x in "qkv"]
    names.append(p + "self_attn.o_proj.weight")
    if arch.qk_norm:
        names += [p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"]
    names.append(p + "post_attention_layernorm.weight")
    names += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
    return names


def hf_names(arch: HFArch) -> list[str]:
    """All HF tensor names of the model, embedding first and head last."""
    names = ["model.embed_tokens.weight"]
    for layer in range(arch.num_layers):
        names += hf_layer_names(arch, layer)
    names.append("model.norm.weight")
    if not arch.tie_word_embeddings:
        names.append("lm_head.weight")
    return names


def _split(t: torch.Tensor, tp_size: int, tp_rank: int, dim: int) -> torch.Tensor:
    if t.shape[dim] % tp_size:
        raise ValueError(f"dimension {dim} of a {tuple(t.shape)} tensor does not split into {tp_size} TP shards")
    return t.chunk(tp_size, dim=dim)[tp_rank].clone()


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, arch: HFArch) -> torch.Tensor:
    """HF q/k/v projections [heads*d, ...] to Megatron's fused layout: per query group, its query
    heads then its key head then its value head."""
    groups, d = arch.num_kv_heads, arch.head_dim
    per_group = arch.num_heads // groups
    rest = q.shape[1:]
    q = q.reshape(groups, per_group * d, *rest)
    k = k.reshape(groups, d, *rest)
    v = v.reshape(groups, d, *rest)
    return torch.cat([q, k, v], dim=1).reshape(groups * (per_group + 2) * d, *rest)


def unfuse_qkv(qkv: torch.Tensor, arch: HFArch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `fuse_qkv` on a full (all ranks concatenated) fused tensor."""
    groups, d = arch.num_kv_heads, arch.head_dim
    per_group = arch.num_heads // groups
    rest = qkv.shape[1:]
    grouped = qkv.reshape(groups, (per_group + 2) * d, *rest)
    q, k, v = grouped.split([per_group * d, d, d], dim=1)
    return (q.reshape(groups * per_group * d, *rest).clone(), k.reshape(groups * d, *rest).clone(),
            v.reshape(groups * d, *rest).clone())


def layer_to_megatron(hf: Mapping[str, torch.Tensor], arch: HFArch, layer: int, megatron_names: Sequence[str],
                      tp_size: int, tp_rank: int) -> dict[str, torch.Tensor]:
    """This TP rank's tensors for the Megatron layer-local names `megatron_names` of HF layer `layer`."""
    if arch.num_kv_heads % tp_size:
        raise ValueError(f"num_key_value_heads={arch.num_kv_heads} does not split into "
                         f"tensor_model_parallel_size={tp_size}")
    p = f"model.layers.{layer}."
    out = {}
    for name in megatron_names:
        kind = LAYER_NAMES.get(name)
        if kind is None:
            raise KeyError(f"no Hugging Face tensor for megatron parameter decoder.layers.*.{name}")
        if kind in ("self_attn.qkv.weight", "self_attn.qkv.bias"):
            suffix = kind.rsplit(".", 1)[1]
            fused = fuse_qkv(*(hf[p + f"self_attn.{x}_proj.{suffix}"] for x in "qkv"), arch)
            out[name] = _split(fused, tp_size, tp_rank, 0)
        elif kind == "mlp.gate_up.weight":
            gate = _split(hf[p + "mlp.gate_proj.weight"], tp_size, tp_rank, 0)
            up = _split(hf[p + "mlp.up_proj.weight"], tp_size, tp_rank, 0)
            out[name] = torch.cat([gate, up], dim=0)
        elif kind in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            out[name] = _split(hf[p + kind], tp_size, tp_rank, 1)
        else:
            out[name] = hf[p + kind].clone()
    return out


def layer_to_hf(shards: Mapping[str, Sequence[torch.Tensor]], arch: HFArch, layer: int) -> dict[str, torch.Tensor]:
    """HF tensors of layer `layer` from each Megatron layer-local name's shards (one per TP rank)."""
    p = f"model.layers.{layer}."
    out = {}
    for name, parts in shards.items():
        kind = LAYER_NAMES.get(name)
        if kind is None:
            raise KeyError(f"no Hugging Face tensor for megatron parameter decoder.layers.*.{name}")
        if kind in ("self_attn.qkv.weight", "self_attn.qkv.bias"):
            suffix = kind.rsplit(".", 1)[1]
            q, k, v = unfuse_qkv(torch.cat(list(parts), dim=0), arch)
            out.update({p + f"self_attn.q_proj.{suffix}": q, p + f"self_attn.k_proj.{suffix}": k,
                        p + f"self_attn.v_proj.{suffix}": v})
        elif kind == "mlp.gate_up.weight":
            halves = [part.chunk(2, dim=0) for part in parts]
            out[p + "mlp.gate_proj.weight"] = torch.cat([h[0] for h in halves], dim=0)
            out[p + "mlp.up_proj.weight"] = torch.cat([h[1] for h in halves], dim=0)
        elif kind in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            out[p + kind] = torch.cat(list(parts), dim=1)
        else:
            out[p + kind] = parts[0].clone()
    return out


def vocab_to_megatron(weight: torch.Tensor, tp_size: int, tp_rank: int) -> torch.Tensor:
    """This rank's contiguous block of rows of an embedding / output weight."""
    if weight.shape[0] % tp_size:
        raise ValueError(f"vocab_size={weight.shape[0]} does not split into tensor_model_parallel_size={tp_size} "
                         "equal shards (pad the tokenizer's vocabulary or pick a TP size that divides it)")
    return _split(weight, tp_size, tp_rank, 0)


def vocab_to_hf(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """The HF embedding / output weight from its TP shards."""
    return torch.cat(list(parts), dim=0)


def hf_shape(arch: HFArch, name: str) -> tuple[int, ...]:
    """The shape of HF tensor `name` (needed by ranks that receive it without holding it)."""
    h, d = arch.hidden_size, arch.head_dim
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return (arch.vocab_size, h)
    leaf = name.split(".", 3)[-1] if name.startswith("model.layers.") else name
    shapes = {
        "model.norm.weight": (h,), "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (arch.num_heads * d, h), "self_attn.k_proj.weight": (arch.num_kv_heads * d, h),
        "self_attn.v_proj.weight": (arch.num_kv_heads * d, h), "self_attn.q_proj.bias": (arch.num_heads * d,),
        "self_attn.k_proj.bias": (arch.num_kv_heads * d,), "self_attn.v_proj.bias": (arch.num_kv_heads * d,),
        "self_attn.o_proj.weight": (h, arch.num_heads * d), "self_attn.q_norm.weight": (d,),
        "self_attn.k_norm.weight": (d,), "mlp.gate_proj.weight": (arch.intermediate_size, h),
        "mlp.up_proj.weight": (arch.intermediate_size, h), "mlp.down_proj.weight": (h, arch.intermediate_size),
    }
    if leaf not in shapes:
        raise KeyError(f"unknown Hugging Face tensor {name}")
    return shapes[leaf]
