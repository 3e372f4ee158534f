"""How wide a micro-batch must be for Megatron's sequence parallelism and Transformer Engine's FP8 GEMMs.

Under sequence parallelism each TP rank holds width / TP tokens of every row, and Transformer Engine
checks its FP8 alignment on that local shard before the all-gather (`assert_dim_for_fp8_exec` in
`layernorm_linear.py`). The alignment depends on the recipe: 16 for delayed and tensorwise scaling
(megatron-core 0.13-0.16 `fp8_utils.get_fp8_align_size`), 32 for MXFP8 (same function), 128 for
blockwise scaling (TE's 1 x 128 / 128 x 128 blocks: `fp8_block_scaling_compute_partial_amax` accepts
only block_len 128)."""

from __future__ import annotations

from spice.config import MegatronConfig

FP8_ALIGNMENT = {"delayed": 16, "tensorwise": 16, "mxfp8": 32, "blockwise": 128}


def sequence_multiple(mcfg: MegatronConfig) -> int:
    """The micro-batch width's required multiple: the recipe's FP8 alignment on each rank's shard
    (1 without FP8), times TP when the sequence is split over the TP ranks."""
    align = FP8_ALIGNMENT[mcfg.fp8_recipe] if mcfg.fp8 is not None else 1
    shards = mcfg.tensor_model_parallel_size if mcfg.sequence_parallel else 1
    return align * shards


def padded_width(width: int, mcfg: MegatronConfig) -> int:
    """`width` rounded up to `sequence_multiple`."""
    multiple = sequence_multiple(mcfg)
    return -(-width // multiple) * multiple
