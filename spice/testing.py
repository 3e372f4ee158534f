"""Tiny randomly initialised models for tests: the SmolLM2 architecture and its real tokenizer,
small enough that a forward pass takes milliseconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import torch

TOKENIZER_DIR = Path(__file__).parent / "assets" / "smollm2-tokenizer"


def tiny_model_dir(path: str | Path, *, seed: int = 0, hidden_size: int = 32, layers: int = 2,
                   heads: int = 4, kv_heads: int = 2, qk_norm: bool = False) -> Path:
    """Write a tiny Llama (or, with `qk_norm`, Qwen3) model with the SmolLM2 tokenizer as a local
    Hugging Face folder (safetensors) at `path` and return it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    common = dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if qk_norm:
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=hidden_size // heads, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
