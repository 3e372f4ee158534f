"""Ahead-of-time compile of every fused GRPO kernel variant for sm_90 (Hopper) with the installed triton.

No GPU is needed: triton's bundled ptxas builds the cubin and its bundled cuobjdump reads the resource
usage. Each variant (bf16, fp16 and fp32 inputs, with the tiles, stages and dot precision that
`fused_grpo._launch_options` picks on CUDA, arguments 16-aligned as at the real shapes) must compile,
use Hopper's wgmma tensor-core instructions and spill nothing (stack frame 0). Slow (about a minute), so
CI deselects it; run `pytest -m slow tests/test_fused_grpo_compile.py`, with `PYTHONPATH=<a triton 3.6
install>` to check the oldest supported triton.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
torch = pytest.importorskip("torch")

# arguments that are 16-divisible at the shapes of interest (pointers, H, strides): triton specializes on it
ALIGNED = {"h_ptr", "w_ptr", "t_ptr", "m_ptr", "a_ptr", "b_ptr", "tgt_ptr", "lse_ptr", "ent_ptr", "glogp_ptr",
           "gent_ptr", "d_ptr", "c_ptr", "hidden_size", "stride_h", "stride_w", "stride_d", "stride_am", "stride_ar",
           "stride_br", "stride_cm", "n_tokens", "vocab", "M", "K", "R", "vocab_per_split"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _options(dtype: str) -> tuple[dict, dict, dict]:
    """The CUDA launch options of fused_grpo for this dtype, read without a GPU."""
    import spice.kernels.fused_grpo as fused

    hidden = torch.empty(0, 0, dtype=DTYPES[dtype], device="meta")
    return fused._launch_options(hidden)


def _compile(fn, types: list[str], options: dict) -> tuple[str, int]:
    """PTX and stack frame bytes of fn compiled for sm_90."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    constexprs = {k: v for k, v in options.items() if k not in ("num_warps", "num_stages")}
    signature = dict(zip(names, types + ["constexpr"] * (len(names) - len(types))))
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if n in ALIGNED and signature[n] != "constexpr"}
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": options["num_warps"], "num_stages": options["num_stages"]})
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    cubin = Path(f"/tmp/spice-aot-{fn.__name__}.cubin")
    cubin.write_bytes(compiled.asm["cubin"])
    usage = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True).stdout
    return compiled.asm["ptx"], int(re.search(r"STACK:(\d+)", usage).group(1))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_kernels_compile_to_wgmma_without_spills_for_sm90(dtype):
    from spice.kernels import fused_grpo_tiles as tiles

    tile_opts, gemm_opts, groups = _options(dtype)
    p, d = "*" + dtype, "*bf16" if dtype == "bf16" else "*fp32"
    vectors = ["*i64"] + ["*fp32"] * 4
    results = {
        "forward": _compile(tiles.forward_partials_kernel, [p, p, *vectors] + ["i32"] * 8 + ["fp32"], tile_opts),
        "grad_logits": _compile(tiles.grad_logits_kernel, [p, p, *vectors, d] + ["i32"] * 6 + ["fp32"],
                                {**tile_opts, "HAS_GLOGP": True, "HAS_GENT": True, "GROUP": groups["logits"]}),
        "matmul": _compile(tiles.matmul_kernel, [d, p, "*fp32"] + ["i32"] * 9,
                           {**gemm_opts, "ACCUMULATE": True, "GROUP": groups["gemm"]}),
    }
    no_wgmma = [name for name, (ptx, _) in results.items() if "wgmma" not in ptx]
    spills = {name: stack for name, (_, stack) in results.items() if stack}
    assert not no_wgmma and not spills, f"{dtype} (triton {triton.__version__}): no wgmma {no_wgmma}, stack {spills}"
