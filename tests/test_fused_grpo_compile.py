"""Ahead-of-time compile of every fused GRPO kernel variant for sm_90 (Hopper) with the installed triton.

No GPU is needed: triton's bundled ptxas builds the cubin. The test checks that each variant (bf16,
fp16 and fp32 inputs, with their dot precisions) compiles and uses Hopper's wgmma tensor-core
instructions. Slow (about a minute), so CI deselects it; run `pytest -m slow tests/test_fused_grpo_compile.py`,
with `PYTHONPATH=<a triton 3.6 install>` to check the oldest supported triton.
"""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

VARIANTS = [("bf16", "tf32", 3), ("fp16", "tf32", 3), ("fp32", "tf32x3", 2)]


def _compile(fn, types: list[str], constexprs: dict, stages: int) -> str:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    signature = dict(zip(names, types + ["constexpr"] * (len(names) - len(types))))
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "num_stages": stages})
    return compiled.asm["ptx"]


@pytest.mark.slow
@pytest.mark.parametrize("dtype,precision,stages", VARIANTS)
def test_kernels_compile_to_wgmma_for_sm90(dtype, precision, stages):
    from spice.kernels import fused_grpo_tiles as tiles

    p, d = "*" + dtype, "*bf16" if dtype == "bf16" else "*fp32"
    common = {"UPCAST": False, "DOT_PRECISION": precision}
    logits = {"BLOCK_N": 128, "BLOCK_V": 128, "BLOCK_K": 64, **common}
    vectors = ["*i64"] + ["*fp32"] * 4
    ptx = {
        "forward": _compile(tiles.forward_partials_kernel, [p, p, *vectors] + ["i32"] * 8 + ["fp32"], logits, stages),
        "grad_logits": _compile(tiles.grad_logits_kernel, [p, p, *vectors, d] + ["i32"] * 6 + ["fp32"],
                                {**logits, "HAS_GLOGP": True, "HAS_GENT": True, "GROUP": 16}, stages),
        "matmul": _compile(tiles.matmul_kernel, [d, p, "*fp32"] + ["i32"] * 9,
                           {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "ACCUMULATE": True, "GROUP": 8, **common},
                           stages),
    }
    missing = [name for name, text in ptx.items() if "wgmma" not in text]
    assert not missing, f"{dtype}: no wgmma in {missing} (triton {triton.__version__})"
