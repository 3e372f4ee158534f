"""Fused scoring: the compiled CPU twin equals the plain-Python reference bit for bit; the CUDA kernel
equals the CPU twin bit for bit (GPU only); the reward values follow the paper."""

from __future__ import annotations

import pytest
import torch

from spice import scoring
from spice.scoring import score_iteration, score_iteration_reference

needs_C = pytest.mark.skipif(scoring._C is None, reason="spice._C is not built")


def random_inputs(seed: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    t = int(torch.randint(1, 24, (1,), generator=g))
    k = int(torch.randint(1, 17, (1,), generator=g))
    s = int(torch.randint(0, 40, (1,), generator=g))
    n = int(torch.randint(0, 50, (1,), generator=g))
    verdicts = torch.randint(0, 2, (t, k), generator=g, dtype=torch.int8)
    valid = torch.rand(t, generator=g) > 0.25
    groups = torch.randint(0, 3, (t,), generator=g, dtype=torch.int32)
    source = torch.randint(-1, t + t * k, (s,), generator=g)
    mask = (torch.rand(s, n, generator=g) > 0.3).float() * torch.rand(s, n, generator=g)
    return tuple(x.to(device) for x in (verdicts, valid, groups, source, mask))


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype == torch.float32 and a.shape == b.shape and torch.equal(
        a.cpu().view(torch.int32), b.cpu().view(torch.int32))


@needs_C
@pytest.mark.parametrize("std_normalize", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_cpu_twin_equals_reference_bitwise(seed, std_normalize):
    inputs = random_inputs(seed)
    for got, want in zip(score_iteration(*inputs, std_normalize=std_normalize),
                         score_iteration_reference(*inputs, std_normalize=std_normalize)):
        assert bitwise_equal(got, want)


@needs_C
@pytest.mark.parametrize("std_normalize", [False, True])
def test_cpu_twin_equals_reference_with_scattered_groups_and_G_512(std_normalize):
    g = torch.Generator().manual_seed(5)
    t, k = 60, 512
    verdicts = torch.randint(0, 2, (t, k), generator=g, dtype=torch.int8)
    valid = torch.rand(t, generator=g) > 0.2
    groups = torch.tensor([[-7, 1000, 3, 2**30][i % 4] for i in torch.randperm(t, generator=g).tolist()])
    groups = groups.to(torch.int32)
    source = torch.randint(-1, t + t * k, (50,), generator=g)
    mask = torch.rand(50, 33, generator=g)
    inputs = (verdicts, valid, groups, source, mask)
    for got, want in zip(score_iteration(*inputs, std_normalize=std_normalize),
                         score_iteration_reference(*inputs, std_normalize=std_normalize)):
        assert bitwise_equal(got, want)


def test_paper_table_for_eight_samples():
    table = scoring.challenger_table(8)
    expected = [0.044, 0.372, 0.823, 0.988, 1.0, 0.988, 0.823, 0.372, 0.044]
    assert [round(float(x), 3) for x in table] == expected


@needs_C
def test_rewards_and_advantages_on_a_small_case():
    verdicts = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.int8)
    valid = torch.tensor([True, True, False])
    groups = torch.zeros(3, dtype=torch.int32)
    source = torch.tensor([0, 3, 7, -1])  # challenger 0, reasoner (0, 0), reasoner (1, 0), none
    mask = torch.tensor([[1.0, 1.0, 0.0]] * 4)
    out = score_iteration(verdicts, valid, groups, source, mask)
    assert torch.equal(out.reasoner_rewards, torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]))
    c = out.challenger_rewards
    assert c[0] == pytest.approx(1.0) and c[1] == pytest.approx(0.0439, abs=1e-4) and c[2] == pytest.approx(-0.1)
    assert torch.allclose(out.challenger_advantages, c - c.mean())
    assert torch.equal(out.reasoner_advantages[0], torch.tensor([0.5, 0.5, -0.5, -0.5]))
    assert torch.equal(out.reasoner_advantages[1], torch.zeros(4))
    assert torch.equal(out.reasoner_advantages[2], torch.zeros(4))  # invalid task: no reasoner signal
    assert torch.equal(out.token_advantages[0], out.challenger_advantages[0] * mask[0])
    assert torch.equal(out.token_advantages[1], torch.tensor([0.5, 0.5, 0.0]))
    assert torch.equal(out.token_advantages[2], torch.zeros(3))
    assert torch.equal(out.token_advantages[3], torch.zeros(3))


@needs_C
def test_challenger_groups_have_separate_baselines():
    verdicts = torch.tensor([[1, 0], [1, 1], [1, 0], [0, 0]], dtype=torch.int8)
    valid = torch.ones(4, dtype=torch.bool)
    out = score_iteration(verdicts, valid, torch.tensor([0, 0, 1, 1], dtype=torch.int32),
                          torch.empty(0, dtype=torch.int64), torch.empty(0, 0))
    c, a = out.challenger_rewards, out.challenger_advantages
    assert torch.allclose(a[:2], c[:2] - c[:2].mean()) and torch.allclose(a[2:], c[2:] - c[2:].mean())


@needs_C
def test_errors_name_the_input():
    verdicts, valid, groups, source, mask = random_inputs(0)
    with pytest.raises(ValueError, match="task_valid"):
        score_iteration(verdicts, valid[:-1], groups, source, mask)
    bad = source.clone()
    bad[:1] = 10**6
    if bad.numel():
        with pytest.raises(ValueError, match="sequence_source"):
            score_iteration(verdicts, valid, groups, bad, mask)
    with pytest.raises(ValueError, match="verdicts"):
        score_iteration(verdicts[0], valid, groups, source, mask)
    with pytest.raises(ValueError, match="group size G=513"):
        score_iteration(torch.zeros(2, 513, dtype=torch.int8), torch.ones(2, dtype=torch.bool),
                        torch.zeros(2, dtype=torch.int32), torch.empty(0, dtype=torch.int64), torch.empty(0, 0))


def large_inputs(t: int, k: int, seed: int, groups: int = 3):
    """T tasks of G answers with several challenger groups, a few rows per task and 64 tokens a row."""
    g = torch.Generator().manual_seed(seed)
    verdicts = torch.randint(0, 2, (t, k), generator=g, dtype=torch.int8)
    valid = torch.rand(t, generator=g) > 0.1
    group = torch.randint(0, groups, (t,), generator=g, dtype=torch.int32)
    rows = min(4 * t, 20000)
    source = torch.randint(-1, t + t * k, (rows,), generator=g)
    return verdicts, valid, group, source, torch.rand(rows, 64, generator=g)


@needs_C
def test_cpu_twin_is_linear_in_tasks():
    """T = 12286 (above the old GPU limit) and 50 000 finish at once: no O(T^2) challenger baselines."""
    for t in (12286, 50000):
        out = score_iteration(*large_inputs(t, 8, seed=t))
        assert out.challenger_advantages.shape == (t,) and torch.isfinite(out.token_advantages).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("std_normalize", [False, True])
def test_cuda_kernel_equals_cpu_twin_bitwise(std_normalize):
    assert scoring._C.built_with_cuda()
    for seed in range(50):
        cpu = random_inputs(seed)
        for got, want in zip(score_iteration(*(x.cuda() for x in cpu), std_normalize=std_normalize),
                             score_iteration(*cpu, std_normalize=std_normalize)):
            assert got.is_cuda and bitwise_equal(got, want), seed
    verdicts = torch.randint(0, 2, (128, 8), dtype=torch.int8)
    source = torch.randint(-1, 128 + 128 * 8, (1152,))
    mask = torch.rand(1152, 2048)
    args = (verdicts, torch.rand(128) > 0.1, torch.zeros(128, dtype=torch.int32), source, mask)
    for got, want in zip(score_iteration(*(x.cuda() for x in args)), score_iteration(*args)):
        assert bitwise_equal(got, want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("t,k", [(12284, 8), (12285, 8), (12286, 8), (40000, 8), (300, 512), (12286, 512)])
@pytest.mark.parametrize("std_normalize", [False, True])
def test_cuda_kernel_at_and_beyond_the_old_task_limit(t, k, std_normalize):
    """The old kernel kept T counts in shared memory and failed to launch from T = 12285; G = 512 is the cap."""
    cpu = large_inputs(t, k, seed=t + k, groups=7)
    torch.cuda.synchronize()
    for got, want in zip(score_iteration(*(x.cuda() for x in cpu), std_normalize=std_normalize),
                         score_iteration(*cpu, std_normalize=std_normalize)):
        assert got.is_cuda and bitwise_equal(got, want), (t, k)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_kernel_launches_on_the_inputs_gpu():
    cpu = random_inputs(3)
    with torch.cuda.device(0):
        got = score_iteration(*(x.to("cuda:1") for x in cpu))
    for a, b in zip(got, score_iteration(*cpu)):
        assert a.device == torch.device("cuda:1") and bitwise_equal(a, b)
