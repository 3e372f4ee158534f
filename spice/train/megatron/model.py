"""A megatron-core GPTModel built from a Hugging Face config (Llama, Qwen2/2.5, Qwen3 families).

The model returns the final hidden states (after the last RMSNorm) instead of logits, so the GRPO
loss can score tokens against the vocab-parallel output weight without materialising the full
[tokens, vocab] logits.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from spice.config import MegatronConfig

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


@dataclass(frozen=True)
class HFArch:
    """The architecture facts of a Hugging Face decoder that the Megatron model must reproduce."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    qk_norm: bool
    qkv_bias: bool
    initializer_range: float


def read_hf_arch(model_dir: str | Path) -> HFArch:
    """Read `config.json` of a local Hugging Face folder; unsupported architectures are errors."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: model.path must be a Hugging Face folder")
    cfg = json.loads(path.read_text())
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{path}: model_type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act {cfg['hidden_act']!r} is not silu (SwiGLU)")
    window = cfg.get("sliding_window")
    windowed = model_type == "mistral" or cfg.get("use_sliding_window", False)  # qwen2/3 gate it by a flag
    if window is not None and windowed and window < cfg.get("max_position_embeddings", 4096):
        raise ValueError(f"{path}: sliding_window {window} (sliding-window attention) is not supported by the "
                         "megatron backend, which would attend over the full context and so differ from the "
                         "policy SGLang and transformers sample past that many tokens")
    rope = cfg.get("rope_parameters") or {}
    rope_theta = cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0
    rope_scaling = cfg.get("rope_scaling")
    if rope_scaling is None and rope.get("rope_type", "default") != "default":
        rope_scaling = rope
    heads = cfg["num_attention_heads"]
    return HFArch(
        model_type=model_type,
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope_theta),
        rope_scaling=rope_scaling,
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qk_norm=model_type == "qwen3",
        qkv_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
        initializer_range=cfg.get("initializer_range", 0.02),
    )


def te_available() -> bool:
    """True when Transformer Engine imports (it needs a CUDA build of torch)."""
    if importlib.util.find_spec("transformer_engine") is None:
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:
        return False
    return True


def use_transformer_engine(mcfg: MegatronConfig) -> bool:
    """Resolve `transformer_impl`: auto picks Transformer Engine when it imports."""
    if mcfg.transformer_impl == "local":
        return False
    if mcfg.transformer_impl == "transformer_engine" and not te_available():
        raise RuntimeError("train.megatron.transformer_impl=transformer_engine but transformer_engine does not "
                           "import (install transformer-engine[pytorch] on a CUDA machine)")
    return te_available()


def params_dtype(mcfg: MegatronConfig) -> torch.dtype:
    return torch.bfloat16 if mcfg.bf16 else torch.float32


def transformer_config(arch: HFArch, mcfg: MegatronConfig, *, on_cuda: bool, use_te: bool) -> Any:
    """A TransformerConfig reproducing `arch`, with the parallel, precision and recompute options of
    `mcfg` under Megatron's own names; `mcfg.extra` is passed through last."""
    from megatron.core.transformer import TransformerConfig

    if mcfg.fp8 is not None and not use_te:
        raise RuntimeError(f"train.megatron.fp8={mcfg.fp8!r} needs Transformer Engine, which does not import here "
                           "(install transformer-engine[pytorch] on an H100 machine, or set fp8 to null)")
    if mcfg.sequence_parallel and not use_te:
        raise RuntimeError("train.megatron.sequence_parallel needs Transformer Engine's norms "
                           "(the local layer spec refuses it)")
    if mcfg.sequence_parallel and mcfg.tensor_model_parallel_size == 1:
        raise RuntimeError("train.megatron.sequence_parallel needs tensor_model_parallel_size > 1")
    dtype = params_dtype(mcfg)
    kwargs: dict[str, Any] = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.intermediate_size,
        num_attention_heads=arch.num_heads,
        num_query_groups=arch.num_kv_heads,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.qkv_bias,
        qk_layernorm=arch.qk_norm,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        init_method_std=arch.initializer_range,
        tensor_model_parallel_size=mcfg.tensor_model_parallel_size,
        pipeline_model_parallel_size=mcfg.pipeline_model_parallel_size,
        sequence_parallel=mcfg.sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=mcfg.bf16,
        calculate_per_token_loss=True,
        use_cpu_initialization=not on_cuda,
        perform_initialization=True,  # also marks TP-sharded params (tensor_model_parallel), which export reads
        gradient_accumulation_fusion=False,
        bias_activation_fusion=on_cuda and use_te,
        masked_softmax_fusion=on_cuda and use_te,
        bias_dropout_fusion=on_cuda,
        apply_rope_fusion=on_cuda and use_te,
        persist_layer_norm=False,
        recompute_granularity=mcfg.recompute_granularity,
        recompute_method=mcfg.recompute_method,
        recompute_num_layers=mcfg.recompute_num_layers,
        deallocate_pipeline_outputs=on_cuda,
    )
    if mcfg.fp8 is not None:
        kwargs.update(fp8=mcfg.fp8, fp8_recipe=mcfg.fp8_recipe)
    extra = dict(mcfg.extra)
    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ValueError(f"train.megatron.extra.{unknown[0]} is not a megatron TransformerConfig field")
    kwargs.update(extra)
    return TransformerConfig(**kwargs)


def layer_spec(arch: HFArch, use_te: bool) -> Any:
    """Transformer Engine's fused layer spec when available, megatron's local spec otherwise."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    if use_te:
        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=arch.qk_norm)
    return get_gpt_layer_local_spec(qk_layernorm=arch.qk_norm, normalization="RMSNorm")


def _rope_kwargs(arch: HFArch) -> dict[str, Any]:
    scaling = arch.rope_scaling
    if not scaling:
        return {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "llama3":
        if (scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0),
                scaling.get("original_max_position_embeddings", 8192)) != (1.0, 4.0, 8192):
            raise ValueError(f"rope_scaling {scaling}: megatron's llama3 scaling fixes low/high freq factors "
                             "1 and 4 and original length 8192")
        return {"rope_scaling": True, "rope_scaling_factor": float(scaling["factor"])}
    if kind == "linear":
        return {"seq_len_interpolation_factor": float(scaling["factor"])}
    raise ValueError(f"rope_scaling type {kind!r} is not supported by the megatron backend (default, linear, llama3)")


def build_model(arch: HFArch, config: Any, spec: Any, vocab_size: int, *, pre_process: bool,
                post_process: bool) -> torch.nn.Module:
    """The policy GPTModel for this pipeline stage."""
    from megatron.core.models.gpt import GPTModel

    class PolicyGPTModel(GPTModel):
        """GPTModel that stops after the final norm: returns hidden states [T, B, H] on the last stage."""

        def _postprocess(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return hidden_states

        def output_weight(self) -> torch.Tensor:
            """This rank's vocab shard of the output projection (the embedding when tied)."""
            if self.share_embeddings_and_output_weights:
                return self.shared_embedding_or_output_weight()
            return self.output_layer.weight

    return PolicyGPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=vocab_size,
        max_sequence_length=arch.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=arch.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=int(arch.rope_theta) if float(arch.rope_theta).is_integer() else arch.rope_theta,
        **_rope_kwargs(arch),
    )
