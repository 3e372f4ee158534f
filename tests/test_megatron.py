"""Megatron backend pieces that need no process group: HF <-> Megatron sharding, config mapping,
layout checks, clear errors. The multi-process comparisons live in test_megatron_distributed.py."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("megatron.core")

from spice.config import MegatronConfig  # noqa: E402
from spice.train.megatron import weights  # noqa: E402
from spice.train.megatron.model import (  # noqa: E402
    _rope_kwargs,
    read_hf_arch,
    te_available,
    transformer_config,
)
from spice.train.megatron.parallel import check_world_size  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _arch(tmp_path, **overrides):
    config = {"model_type": "qwen3", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
              "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 6,
              "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": False, **overrides}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return read_hf_arch(tmp_path)


def _random_layer(arch, layer=0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(weights.hf_shape(arch, name), generator=generator)
            for name in weights.hf_layer_names(arch, layer)}


LOCAL_NAMES = ["input_layernorm.weight", "self_attention.linear_qkv.weight", "self_attention.linear_proj.weight",
               "self_attention.q_layernorm.weight", "self_attention.k_layernorm.weight",
               "pre_mlp_layernorm.weight", "mlp.linear_fc1.weight", "mlp.linear_fc2.weight"]


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_layer_round_trip_is_bit_exact(tmp_path, tp, bias):
    arch = _arch(tmp_path, attention_bias=bias)
    hf = _random_layer(arch, layer=1)
    names = LOCAL_NAMES + (["self_attention.linear_qkv.bias"] if bias else [])
    shards = [weights.layer_to_megatron(hf, arch, 1, names, tp, rank) for rank in range(tp)]
    back = weights.layer_to_hf({n: [s[n] for s in shards] for n in names}, arch, 1)
    assert sorted(back) == sorted(hf)
    for name, tensor in hf.items():
        assert torch.equal(back[name], tensor), name


def test_te_norm_names_map_to_the_same_hf_tensors(tmp_path):
    arch = _arch(tmp_path)
    hf = _random_layer(arch)
    te = weights.layer_to_megatron(hf, arch, 0, ["self_attention.linear_qkv.layer_norm_weight",
                                                 "mlp.linear_fc1.layer_norm_weight"], 1, 0)
    assert torch.equal(te["self_attention.linear_qkv.layer_norm_weight"], hf["model.layers.0.input_layernorm.weight"])
    assert torch.equal(te["mlp.linear_fc1.layer_norm_weight"], hf["model.layers.0.post_attention_layernorm.weight"])


def test_qkv_shard_holds_its_query_group(tmp_path):
    """TP rank r holds query heads of groups [r*G/TP, (r+1)*G/TP), each followed by its k and v head."""
    arch = _arch(tmp_path)
    hf = _random_layer(arch)
    d, per_group = arch.head_dim, arch.num_heads // arch.num_kv_heads
    qkv = weights.layer_to_megatron(hf, arch, 0, ["self_attention.linear_qkv.weight"], 2, 1)[
        "self_attention.linear_qkv.weight"]
    q, k, v = (hf[f"model.layers.0.self_attn.{x}_proj.weight"] for x in "qkv")
    expected = torch.cat([q[per_group * d:2 * per_group * d], k[d:2 * d], v[d:2 * d]])
    assert torch.equal(qkv, expected)


def test_gate_and_up_are_concatenated_per_rank(tmp_path):
    arch = _arch(tmp_path)
    hf = _random_layer(arch)
    fc1 = weights.layer_to_megatron(hf, arch, 0, ["mlp.linear_fc1.weight"], 2, 0)["mlp.linear_fc1.weight"]
    half = arch.intermediate_size // 2
    assert torch.equal(fc1[:half], hf["model.layers.0.mlp.gate_proj.weight"][:half])
    assert torch.equal(fc1[half:], hf["model.layers.0.mlp.up_proj.weight"][:half])


def test_vocab_shards_and_errors(tmp_path):
    table = torch.randn(96, 4)
    parts = [weights.vocab_to_megatron(table, 4, r) for r in range(4)]
    assert torch.equal(weights.vocab_to_hf(parts), table)
    with pytest.raises(ValueError, match="vocab_size=96 does not split into tensor_model_parallel_size=5"):
        weights.vocab_to_megatron(table, 5, 0)


def test_kv_heads_must_divide_by_tp(tmp_path):
    arch = _arch(tmp_path)
    with pytest.raises(ValueError, match="num_key_value_heads=2 does not split into tensor_model_parallel_size=4"):
        weights.layer_to_megatron(_random_layer(arch), arch, 0, LOCAL_NAMES, 4, 0)


def test_hf_names_cover_a_transformers_model(tmp_path):
    from spice.testing import tiny_model_dir

    for qk_norm in (False, True):
        folder = tiny_model_dir(tmp_path / f"m{qk_norm}", qk_norm=qk_norm)
        from safetensors.torch import load_file

        saved = load_file(str(folder / "model.safetensors"))
        arch = read_hf_arch(folder)
        assert sorted(weights.hf_names(arch)) == sorted(saved)
        for name, tensor in saved.items():
            assert weights.hf_shape(arch, name) == tuple(tensor.shape), name


def test_read_hf_arch(tmp_path):
    arch = _arch(tmp_path)
    assert (arch.qk_norm, arch.num_kv_heads, arch.head_dim, arch.rope_theta) == (True, 2, 6, 1e6)
    llama = _arch(tmp_path, model_type="llama", head_dim=None, rope_theta=None,
                  rope_parameters={"rope_type": "default", "rope_theta": 5e5})
    assert (llama.qk_norm, llama.head_dim, llama.rope_theta) == (False, 4, 5e5)
    with pytest.raises(ValueError, match="model_type 'gpt2' is not one of"):
        _arch(tmp_path, model_type="gpt2")


def test_rope_scaling_mapping(tmp_path):
    llama3 = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
    assert _rope_kwargs(_arch(tmp_path, rope_scaling=llama3)) == {"rope_scaling": True, "rope_scaling_factor": 32.0}
    assert _rope_kwargs(_arch(tmp_path, rope_scaling={"type": "linear", "factor": 2.0})) == {
        "seq_len_interpolation_factor": 2.0}
    with pytest.raises(ValueError, match="yarn"):
        _rope_kwargs(_arch(tmp_path, rope_scaling={"rope_type": "yarn", "factor": 4.0}))


def test_transformer_config_mirrors_the_hf_config(tmp_path):
    arch = _arch(tmp_path)
    mcfg = MegatronConfig(bf16=False, tensor_model_parallel_size=2, extra={"hidden_dropout": 0.1})
    config = transformer_config(arch, mcfg, on_cuda=False, use_te=False)
    assert (config.num_query_groups, config.kv_channels, config.ffn_hidden_size) == (2, 6, 48)
    assert config.qk_layernorm and config.gated_linear_unit and config.normalization == "RMSNorm"
    assert config.layernorm_epsilon == 1e-6 and config.tensor_model_parallel_size == 2
    assert config.hidden_dropout == 0.1  # `extra` passes TransformerConfig fields through


def test_clear_errors_for_options_that_need_transformer_engine(tmp_path):
    if te_available():
        pytest.skip("Transformer Engine is installed")
    arch = _arch(tmp_path)
    with pytest.raises(RuntimeError, match="fp8='e4m3' needs Transformer Engine"):
        transformer_config(arch, MegatronConfig(fp8="e4m3"), on_cuda=False, use_te=False)
    with pytest.raises(RuntimeError, match="sequence_parallel needs Transformer Engine"):
        transformer_config(arch, MegatronConfig(sequence_parallel=True, tensor_model_parallel_size=2),
                           on_cuda=False, use_te=False)
    with pytest.raises(ValueError, match="extra.no_such_field is not a megatron TransformerConfig field"):
        transformer_config(arch, MegatronConfig(extra={"no_such_field": 1}), on_cuda=False, use_te=False)


def test_world_size_must_factor_into_tp_pp_dp():
    assert check_world_size(8, 2, 2) == 2
    with pytest.raises(ValueError, match="world size 6 does not factor into tensor_model_parallel_size=4 x "
                                         "pipeline_model_parallel_size=1"):
        check_world_size(6, 4, 1)


def test_config_fields_exist_in_megatron():
    """Every MegatronConfig field except the spice-level ones is a TransformerConfig field."""
    from megatron.core.transformer import TransformerConfig

    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    own = {"use_distributed_optimizer", "transformer_impl", "extra"}
    assert {f.name for f in dataclasses.fields(MegatronConfig)} - own <= known


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tp1_matches_hf(tmp_path):
    """On one GPU (TP=1, fp32): logprobs, loss, gradients against transformers; bit-exact export."""
    from spice.testing import tiny_model_dir

    models = [tiny_model_dir(tmp_path / "llama"), tiny_model_dir(tmp_path / "qwen3", qk_norm=True)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "tests" / "megatron_worker.py"), "--out", str(tmp_path / "out"),
                    "--layouts", "1x1", "--models", *map(str, models)], check=True, env=env, cwd=ROOT, timeout=600)
    for result in json.loads((tmp_path / "out" / "results.json").read_text()):
        assert result["loss_error"] < 1e-4 and result["logprob_error"] < 1e-4 and result["grad_error"] < 1e-3
        assert result["roundtrip_exact"], result
