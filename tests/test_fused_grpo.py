"""The fused Triton GRPO loss against its plain-torch reference (spice.grpo.grpo_loss_reference).

On CPU the kernel runs in triton's interpreter, which must be switched on before triton compiles the
kernels; to keep that switch from leaking into other tests, the interpreter cases run in one child
process (this file run as a script) that writes the errors it measured, and the tests assert on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spice.grpo import grpo_loss_reference

F64 = torch.float64
OUTPUTS = ("loss", "logprobs", "entropy", "grad_hidden", "grad_weight")

# name -> shape, dtype and loss options; "entropy_coef" adds entropy.sum() to the objective.
CASES: dict[str, dict] = {
    "token_sum_on_policy": {"n": 37, "h": 24, "v": 70, "options": {"normalizer": 50.0}},
    "token_mean_clip_higher_off_policy": {
        "n": 29, "h": 40, "v": 83, "old": True,
        "options": {"aggregation": "token_mean", "clip_low": 0.1, "clip_high": 0.28},
    },
    "seq_mean": {"n": 33, "h": 24, "v": 64, "old": True, "options": {"aggregation": "seq_mean"}},
    "seq_mean_normalizer": {"n": 20, "h": 16, "v": 50, "options": {"aggregation": "seq_mean", "normalizer": 9.0}},
    "tis_kl_temperature": {
        "n": 31, "h": 24, "v": 70, "old": True,
        "options": {"tis_cap": 1.5, "kl_coef": 0.2, "temperature": 0.7, "normalizer": 31.0},
    },
    "entropy_gradient": {"n": 25, "h": 24, "v": 90, "entropy_coef": 0.05, "options": {"normalizer": 25.0}},
    "all_masked": {"n": 18, "h": 16, "v": 40, "mask": "none", "options": {"aggregation": "token_mean"}},
    "full_mask_one_token": {"n": 1, "h": 16, "v": 33, "mask": "all", "options": {"normalizer": 1.0}},
    "weight_grad_only": {"n": 21, "h": 24, "v": 70, "hidden_grad": False, "options": {"normalizer": 8.0}},
    "bf16": {"n": 26, "h": 32, "v": 70, "dtype": "bfloat16", "entropy_coef": 0.05, "options": {"normalizer": 26.0}},
}
TP_CASES = {
    "tp_token_sum": {"n": 23, "h": 24, "v": 70, "options": {"normalizer": 30.0}},
    "tp_seq_mean_tis_kl_entropy": {
        "n": 27, "h": 24, "v": 64, "old": True, "entropy_coef": 0.05,
        "options": {"aggregation": "seq_mean", "tis_cap": 2.0, "kl_coef": 0.1, "temperature": 0.9},
    },
}


def make_case(spec: dict, seed: int) -> tuple[dict, dict]:
    """Inputs (in the case's dtype) and loss options for one case."""
    g = torch.Generator().manual_seed(seed)
    n, h, v = spec["n"], spec["h"], spec["v"]
    dtype = getattr(torch, spec.get("dtype", "float32"))
    mask = (torch.rand(n, generator=g) > 0.3).float()
    if spec.get("mask") == "none":
        mask = torch.zeros(n)
    elif spec.get("mask") == "all":
        mask = torch.ones(n)
    inputs = {
        "hidden": torch.randn(n, h, generator=g).to(dtype),
        "weight": (torch.randn(v, h, generator=g) * 0.4).to(dtype),
        "targets": torch.randint(0, v, (n,), generator=g),
        "advantages": torch.randn(n, generator=g),
        "mask": mask,
    }
    extra = {
        "rollout_logprobs": -3.0 - torch.rand(n, generator=g),
        "ref_logprobs": -3.0 - torch.rand(n, generator=g),
        "sequence_ids": torch.arange(n) // 5,
    }
    if spec.get("old"):
        extra["old_logprobs"] = -3.5 + 0.5 * torch.randn(n, generator=g)
    return inputs, {**extra, **spec["options"]}


def run_both(fn_fused, spec: dict, seed: int, process_group=None, rank: int = 0, world: int = 1) -> dict:
    """Relative errors (norm of difference / norm of float64 reference) of every output."""
    inputs, options = make_case(spec, seed)
    coef = spec.get("entropy_coef", 0.0)
    results = {}
    for name in ("fused", "reference"):
        hidden = inputs["hidden"].clone()
        weight = inputs["weight"].clone()
        if name == "reference":
            hidden, weight = hidden.to(F64), weight.to(F64)
        elif process_group is not None:
            shard = weight.shape[0] // world
            weight = weight[rank * shard : (rank + 1) * shard].clone()
        hidden.requires_grad_(spec.get("hidden_grad", True))
        weight.requires_grad_()
        fn = fn_fused if name == "fused" else grpo_loss_reference
        group = process_group if name == "fused" else None
        loss, logp, ent = fn(
            hidden, weight, inputs["targets"], inputs["advantages"], inputs["mask"],
            return_entropy=True, process_group=group, **options,
        )
        (loss + coef * ent.sum()).backward()
        results[name] = {
            "loss": loss.detach(), "logprobs": logp.detach(), "entropy": ent.detach(),
            "grad_hidden": hidden.grad if hidden.grad is not None else torch.zeros(0),
            "grad_weight": weight.grad,
        }
    if process_group is not None:
        shard = inputs["weight"].shape[0] // world
        results["reference"]["grad_weight"] = results["reference"]["grad_weight"][rank * shard : (rank + 1) * shard]
    errors = {}
    for key in OUTPUTS:
        a, b = results["fused"][key].to(F64), results["reference"][key].to(F64)
        if a.shape != b.shape:
            errors[key] = float("inf")
            continue
        scale = max(b.norm().item(), 1e-12)
        diff = (a - b).norm().item()
        errors[key] = diff / scale if b.norm().item() > 0 else diff
    return errors


def _tp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from spice.kernels import fused_grpo_loss

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        errors = {
            name: run_both(fused_grpo_loss, spec, seed=100 + i, process_group=dist.group.WORLD, rank=rank, world=world)
            for i, (name, spec) in enumerate(TP_CASES.items())
        }
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(errors))


def _child_main(mode: str, out_dir: str) -> None:
    """Run in the child with TRITON_INTERPRET=1: write the measured errors as JSON under out_dir."""
    import spice.kernels.fused_grpo as fused

    fused.BACKWARD_CHUNK_BYTES = 8 * 100 * 4  # several backward chunks even at these small shapes
    if mode == "cases":
        errors = {name: run_both(fused.fused_grpo_loss, spec, seed=i) for i, (name, spec) in enumerate(CASES.items())}
        Path(out_dir, "cases.json").write_text(json.dumps(errors))
    else:
        import torch.multiprocessing as mp

        mp.spawn(_tp_worker, args=(2, str(Path(out_dir, "init")), out_dir), nprocs=2, join=True)


def _run_child(mode: str, out_dir: Path) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, mode, str(out_dir)],
        env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, f"interpreter child ({mode}) failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def interpreter_errors(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("fused_cases")
    _run_child("cases", out)
    return json.loads((out / "cases.json").read_text())


def tolerance(spec: dict) -> float:
    return 1e-2 if spec.get("dtype") == "bfloat16" else 1e-5


@pytest.mark.parametrize("name", list(CASES))
def test_interpreter_kernel_matches_reference(interpreter_errors, name):
    errors = interpreter_errors[name]
    tol = tolerance(CASES[name])
    bad = {key: err for key, err in errors.items() if not err <= tol}
    assert not bad, f"{name}: relative errors above {tol}: {bad}"


@pytest.mark.distributed
def test_tensor_parallel_kernel_matches_unsharded_reference(tmp_path):
    _run_child("tp", tmp_path)
    for rank in (0, 1):
        errors = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, per_output in errors.items():
            bad = {key: err for key, err in per_output.items() if not err <= 1e-5}
            assert not bad, f"rank {rank} {name}: relative errors above 1e-5: {bad}"


def test_cpu_tensors_without_interpreter_are_a_clear_error():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("0", ""):
        pytest.skip("this process runs triton's interpreter")
    from spice.kernels import fused_grpo_loss

    inputs, options = make_case(CASES["token_sum_on_policy"], seed=0)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        fused_grpo_loss(**inputs, **options)


def test_fused_rejects_the_same_bad_inputs_as_the_reference():
    from spice.kernels import fused_grpo_loss

    inputs, options = make_case(CASES["token_sum_on_policy"], seed=0)
    inputs["targets"] = inputs["targets"][:-2]
    with pytest.raises(ValueError, match="targets"):
        fused_grpo_loss(**inputs, **options)


GPU_CASES = {
    "token_sum": {"n": 1000, "h": 512, "v": 5003, "options": {"normalizer": 2048.0}},
    "seq_mean_tis_kl_entropy": {
        "n": 777, "h": 384, "v": 4099, "old": True, "entropy_coef": 0.01,
        "options": {"aggregation": "seq_mean", "tis_cap": 2.0, "kl_coef": 0.05, "temperature": 0.8},
    },
}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("bfloat16", 1e-2)])
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_compiled_kernel_matches_float64_reference(name, dtype, tol):
    from spice.kernels import fused_grpo_loss

    spec = {**GPU_CASES[name], "dtype": dtype}

    def on_cuda(hidden, weight, targets, advantages, mask, **options):
        moved = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in options.items()}
        return fused_grpo_loss(
            hidden.cuda(), weight.cuda(), targets.cuda(), advantages.cuda(), mask.cuda(), **moved
        )

    errors = run_both(_CudaLeaf(on_cuda), spec, seed=7)
    bad = {key: err for key, err in errors.items() if not err <= tol}
    assert not bad, f"{name} {dtype}: relative errors above {tol}: {bad}"


class _CudaLeaf:
    """Calls the kernel on CUDA copies of CPU leaves, so gradients flow back to the CPU tensors."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, hidden, weight, *args, **kwargs):
        return tuple(out.cpu() for out in self.fn(hidden, weight, *args, **kwargs))


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
