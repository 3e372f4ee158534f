"""Micro-batch widths for sequence parallelism and FP8: the recipe's alignment holds on every TP rank's
shard, for the shipped example configs and for every recipe; and the megatron options spice cannot
honour are refused by name."""

from pathlib import Path

import pytest

from spice.config import ConfigError, MegatronConfig, load_config
from spice.train.megatron.padding import FP8_ALIGNMENT, padded_width, sequence_multiple

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _shards_aligned(mcfg: MegatronConfig) -> bool:
    align = FP8_ALIGNMENT[mcfg.fp8_recipe] if mcfg.fp8 else 1
    shards = mcfg.tensor_model_parallel_size if mcfg.sequence_parallel else 1
    return all(padded_width(w, mcfg) >= w and (padded_width(w, mcfg) // shards) % align == 0
               and padded_width(w, mcfg) % shards == 0 for w in range(1, 700))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_configs_pad_to_an_aligned_shard(path):
    mcfg = load_config(path).train.megatron
    assert _shards_aligned(mcfg)


def test_the_multinode_example_pads_to_tp_times_sixteen():
    mcfg = load_config(ROOT / "examples" / "megatron_multinode.yaml").train.megatron
    assert (mcfg.tensor_model_parallel_size, mcfg.sequence_parallel, mcfg.fp8) == (4, True, "hybrid")
    # width 48 (the old lcm(TP, 16)) leaves 12 tokens per rank, which TE refuses; 64 leaves 16
    assert sequence_multiple(mcfg) == 64 and padded_width(48, mcfg) == 64


@pytest.mark.parametrize("recipe, align", [("delayed", 16), ("tensorwise", 16), ("mxfp8", 32), ("blockwise", 128)])
@pytest.mark.parametrize("tp, sp", [(1, False), (2, True), (4, True), (8, True), (4, False)])
def test_every_recipe_and_tp(recipe, align, tp, sp):
    mcfg = MegatronConfig(tensor_model_parallel_size=tp, sequence_parallel=sp, fp8="e4m3", fp8_recipe=recipe)
    assert sequence_multiple(mcfg) == align * (tp if sp else 1) and _shards_aligned(mcfg)
    assert sequence_multiple(MegatronConfig(tensor_model_parallel_size=tp, sequence_parallel=sp)) == (tp if sp else 1)


@pytest.mark.parametrize("override, needle", [
    ("train.megatron.fp8=e5m2", "train.megatron.fp8: 'e5m2' is not one of e4m3, hybrid"),
    ("train.megatron.fp8_recipe=current", "train.megatron.fp8_recipe: 'current' is not one of"),
    ("train.megatron.recompute_granularity=layer", "train.megatron.recompute_granularity"),
    ("train.megatron.extra={fp8_param: true}", "train.megatron.extra.fp8_param"),
    ("train.megatron.extra={sequence_parallel: true}", "set it as train.megatron.sequence_parallel"),
    ("train.distributed_timeout_minutes=0", "train.distributed_timeout_minutes"),
    ("train.control_timeout_hours=-1", "train.control_timeout_hours"),
])
def test_unsupported_megatron_options_are_refused_by_name(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("{", r"\{")):
        load_config(None, [override])


def test_sliding_window_models_are_refused(tmp_path):
    import json

    from spice.train.megatron.model import read_hf_arch

    config = {"model_type": "mistral", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32768}
    (tmp_path / "config.json").write_text(json.dumps({**config, "sliding_window": 4096}))
    with pytest.raises(ValueError, match="sliding_window 4096"):
        read_hf_arch(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "sliding_window": None}))
    assert read_hf_arch(tmp_path).model_type == "mistral"
    qwen = {**config, "model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}
    (tmp_path / "config.json").write_text(json.dumps(qwen))
    assert read_hf_arch(tmp_path).model_type == "qwen2"  # the window is off


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_megatron_options_are_transformer_config_fields(path):
    pytest.importorskip("megatron.core")
    from spice.train.megatron.model import HFArch, transformer_config

    arch = HFArch("qwen3", 1024, 256, 512, 4, 8, 4, 32, 1e-6, 1e6, None, 4096, False, True, False, 0.02)
    mcfg = load_config(path).train.megatron
    built = transformer_config(arch, mcfg, on_cuda=False, use_te=True)
    if mcfg.fp8 == "hybrid" and mcfg.fp8_recipe == "delayed":  # delayed scaling over many steps
        assert (built.fp8_amax_history_len, built.fp8_amax_compute_algo) == (1024, "max")
    if mcfg.recompute_granularity == "selective":  # core_attn is unneeded with TE's fused attention
        assert "core_attn" not in built.recompute_modules
