"""Dr. GRPO advantages and the plain-torch reference loss (the specification of the fused kernel)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp

from spice.grpo import group_advantages, grpo_loss, grpo_loss_reference, policy_loss

F64 = torch.float64


def make_inputs(n: int = 7, h: int = 5, v: int = 11, seed: int = 0, dtype: torch.dtype = F64) -> dict:
    """Small random problem; hidden and weight require grad."""
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden": torch.randn(n, h, generator=g, dtype=dtype).requires_grad_(),
        "weight": torch.randn(v, h, generator=g, dtype=dtype).requires_grad_(),
        "targets": torch.randint(0, v, (n,), generator=g),
        "advantages": torch.randn(n, generator=g, dtype=dtype),
        "mask": (torch.rand(n, generator=g) > 0.25).to(dtype),
    }


# --- advantages ---------------------------------------------------------------------------------


def test_group_advantages_subtracts_group_mean_without_std():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 0.0])
    groups = torch.tensor([7, 7, 7, 2, 2, 2])
    adv = group_advantages(rewards, groups)
    expected = torch.tensor([1 / 3, -2 / 3, 1 / 3, 0.5, 0.0, -0.5])
    torch.testing.assert_close(adv, expected)


def test_group_advantages_handles_interleaved_ids_and_singletons():
    rewards = torch.tensor([1.0, 4.0, 3.0, 2.0, 9.0])
    groups = torch.tensor([0, 1, 0, 1, 5])
    adv = group_advantages(rewards, groups, std_normalize=True)
    std = 1.0  # population std of (1, 3) and of (4, 2), as the paper's p(1-p) and spice.scoring
    expected = torch.tensor([-1 / std, 1 / std, 1 / std, -1 / std, 0.0])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=1e-5)


def test_group_advantages_use_the_same_std_as_scoring():
    from spice.scoring import score_iteration_reference

    verdicts = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.int8)
    scores = score_iteration_reference(verdicts, torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.int32),
                                       torch.arange(3 + 12), torch.ones(15, 2), std_normalize=True)
    groups = torch.arange(3).repeat_interleave(4)
    adv = group_advantages(verdicts.reshape(-1).float(), groups, std_normalize=True)
    torch.testing.assert_close(adv.reshape(3, 4), scores.reasoner_advantages, atol=1e-5, rtol=1e-5)


def test_auto_is_the_reference_even_on_cuda(monkeypatch):
    import spice.grpo as grpo

    x = make_inputs()
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(grpo, "grpo_loss_reference", lambda *a, **k: "reference")
    assert grpo.grpo_loss(**x, implementation="auto", normalizer=5.0) == "reference"


def test_group_advantages_equal_rewards_give_zero_even_with_std():
    adv = group_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long), std_normalize=True)
    assert torch.equal(adv, torch.zeros(4))


def test_group_advantages_integer_rewards_become_float():
    adv = group_advantages(torch.tensor([1, 0]), torch.tensor([0, 0]))
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5]))


def test_group_advantages_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(torch.ones(3), torch.zeros(2))


# --- log-probabilities and entropy --------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reference_logprobs_and_entropy_match_torch(temperature):
    x = make_inputs()
    _, logp, entropy = grpo_loss_reference(**x, normalizer=1.0, temperature=temperature, return_entropy=True)
    logits = x["hidden"] @ x["weight"].T / temperature
    expected = -torch.nn.functional.cross_entropy(logits, x["targets"], reduction="none")
    torch.testing.assert_close(logp, expected)
    torch.testing.assert_close(entropy, torch.distributions.Categorical(logits=logits).entropy())
    assert logp.requires_grad and entropy.requires_grad


def test_reference_computes_in_fp32_for_low_precision_inputs():
    x = make_inputs(dtype=torch.bfloat16)
    loss, logp = grpo_loss_reference(**x, normalizer=4.0)
    assert loss.dtype == torch.float32 and logp.dtype == torch.float32
    loss.backward()
    assert x["hidden"].grad.dtype == torch.bfloat16


# --- aggregation --------------------------------------------------------------------------------


def on_policy_token_losses(x: dict) -> torch.Tensor:
    """With old = current logprobs the ratio is 1 inside the clip range: the per-token loss is -A."""
    return -x["advantages"] * x["mask"]


def test_token_sum_divides_by_the_constant():
    x = make_inputs()
    loss, _ = grpo_loss_reference(**x, aggregation="token_sum", normalizer=64.0)
    torch.testing.assert_close(loss, on_policy_token_losses(x).sum() / 64.0)


def test_token_sum_requires_a_normalizer():
    with pytest.raises(ValueError, match="normalizer"):
        grpo_loss_reference(**make_inputs(), aggregation="token_sum")


def test_token_mean_divides_by_mask_count_or_normalizer():
    x = make_inputs()
    loss, _ = grpo_loss_reference(**x, aggregation="token_mean")
    torch.testing.assert_close(loss, on_policy_token_losses(x).sum() / x["mask"].sum())
    loss, _ = grpo_loss_reference(**x, aggregation="token_mean", normalizer=10.0)
    torch.testing.assert_close(loss, on_policy_token_losses(x).sum() / 10.0)


def test_seq_mean_averages_per_sequence_token_means():
    x = make_inputs(n=7)
    x["mask"] = torch.tensor([1, 1, 0, 1, 1, 1, 0], dtype=F64)
    seq = torch.tensor([4, 4, 4, 9, 9, 2, 2])
    tok = on_policy_token_losses(x)
    means = [tok[:3].sum() / 2, tok[3:5].sum() / 2, tok[5:].sum() / 1]
    loss, _ = grpo_loss_reference(**x, aggregation="seq_mean", sequence_ids=seq)
    torch.testing.assert_close(loss, sum(means) / 3)
    loss, _ = grpo_loss_reference(**x, aggregation="seq_mean", sequence_ids=seq, normalizer=8.0)
    torch.testing.assert_close(loss, sum(means) / 8)


def test_seq_mean_ignores_sequences_without_trained_tokens():
    x = make_inputs(n=4)
    x["mask"] = torch.tensor([1, 1, 0, 0], dtype=F64)
    loss, _ = grpo_loss_reference(**x, aggregation="seq_mean", sequence_ids=torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(loss, on_policy_token_losses(x)[:2].sum() / 2)


def test_seq_mean_requires_sequence_ids():
    with pytest.raises(ValueError, match="sequence_ids"):
        grpo_loss_reference(**make_inputs(), aggregation="seq_mean")


def test_unknown_aggregation_is_named():
    with pytest.raises(ValueError, match="'sum'"):
        grpo_loss_reference(**make_inputs(), aggregation="sum", normalizer=1.0)


def test_mismatched_shapes_name_the_input():
    x = make_inputs()
    x["mask"] = x["mask"][:-1]
    with pytest.raises(ValueError, match="mask"):
        grpo_loss_reference(**x, normalizer=1.0)


# --- clipping, TIS, KL (on the O(N) part, with chosen log-probabilities) --------------------------


def clip_case(advantage: float, ratio: float, clip_low: float = 0.2, clip_high: float = 0.28):
    logp = torch.tensor([math.log(ratio)], dtype=F64, requires_grad=True)
    loss = policy_loss(
        logp,
        torch.tensor([advantage], dtype=F64),
        torch.ones(1, dtype=F64),
        old_logprobs=torch.zeros(1, dtype=F64),
        clip_low=clip_low,
        clip_high=clip_high,
        normalizer=1.0,
    )
    loss.backward()
    return loss.item(), logp.grad.item()


def test_positive_advantage_is_clipped_above_1_plus_clip_high():
    loss, grad = clip_case(advantage=2.0, ratio=1.5)
    assert loss == pytest.approx(-2.0 * 1.28)
    assert grad == 0.0


def test_positive_advantage_is_not_clipped_below_1_minus_clip_low():
    loss, grad = clip_case(advantage=2.0, ratio=0.5)
    assert loss == pytest.approx(-1.0)
    assert grad == pytest.approx(-2.0 * 0.5)  # d(-r A)/d logp = -r A


def test_negative_advantage_is_clipped_below_1_minus_clip_low():
    loss, grad = clip_case(advantage=-1.0, ratio=0.5)
    assert loss == pytest.approx(0.8)
    assert grad == 0.0


def test_negative_advantage_is_not_clipped_above_1_plus_clip_high():
    loss, grad = clip_case(advantage=-1.0, ratio=1.5)
    assert loss == pytest.approx(1.5)
    assert grad == pytest.approx(1.5)


def test_clip_higher_is_asymmetric():
    inside, _ = clip_case(advantage=1.0, ratio=1.25, clip_low=0.2, clip_high=0.28)
    outside, _ = clip_case(advantage=1.0, ratio=1.25, clip_low=0.2, clip_high=0.2)
    assert inside == pytest.approx(-1.25) and outside == pytest.approx(-1.2)


def test_truncated_importance_sampling_weights_and_caps():
    logp = torch.zeros(3, dtype=F64, requires_grad=True)
    rollout = torch.tensor([0.0, math.log(2.0), -math.log(4.0)], dtype=F64)  # weights 1, 0.5, 4 -> cap 2
    adv = torch.tensor([1.0, 1.0, 1.0], dtype=F64)
    loss = policy_loss(
        logp, adv, torch.ones(3, dtype=F64), rollout_logprobs=rollout, tis_cap=2.0, normalizer=1.0
    )
    assert loss.item() == pytest.approx(-(1.0 + 0.5 + 2.0))
    loss.backward()
    torch.testing.assert_close(logp.grad, -torch.tensor([1.0, 0.5, 2.0], dtype=F64))


def test_tis_cap_without_rollout_logprobs_is_an_error():
    with pytest.raises(ValueError, match="rollout_logprobs"):
        grpo_loss_reference(**make_inputs(), tis_cap=2.0, normalizer=1.0)


def test_k3_kl_term():
    logp = torch.tensor([-1.0, -2.0], dtype=F64, requires_grad=True)
    ref = torch.tensor([-1.0, -1.0], dtype=F64)
    loss = policy_loss(
        logp, torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64), ref_logprobs=ref, kl_coef=0.5,
        normalizer=1.0,
    )
    assert loss.item() == pytest.approx(0.5 * (math.e - 1.0 - 1.0))
    loss.backward()
    torch.testing.assert_close(logp.grad, 0.5 * torch.tensor([0.0, 1.0 - math.e], dtype=F64))


def test_kl_is_ignored_with_zero_coefficient():
    x = make_inputs()
    ref = torch.zeros(7, dtype=F64)
    a, _ = grpo_loss_reference(**x, ref_logprobs=ref, normalizer=3.0)
    b, _ = grpo_loss_reference(**x, normalizer=3.0)
    torch.testing.assert_close(a, b)


# --- gradients against finite differences ---------------------------------------------------------


GRAD_CASES = {
    "token_sum": {"aggregation": "token_sum", "normalizer": 9.0},
    "token_mean_clip_higher": {"aggregation": "token_mean", "clip_low": 0.1, "clip_high": 0.3},
    "seq_mean_tis_kl_temp": {
        "aggregation": "seq_mean",
        "tis_cap": 1.5,
        "kl_coef": 0.3,
        "temperature": 0.8,
    },
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_reference_gradients_match_finite_differences(name):
    x = make_inputs(n=6, h=3, v=5, seed=3)
    g = torch.Generator().manual_seed(4)
    # old logprobs far from the clip boundaries' kinks so finite differences are smooth there
    old = torch.tensor([-1.2, -0.7, -2.5, -1.9, -0.4, -3.0], dtype=F64)
    extra = {
        "old_logprobs": old,
        "rollout_logprobs": old + 0.3 * torch.randn(6, generator=g, dtype=F64),
        "ref_logprobs": old - 0.2,
        "sequence_ids": torch.tensor([0, 0, 1, 1, 1, 2]),
    }
    options = {**extra, **GRAD_CASES[name], "return_entropy": True}

    def fn(hidden, weight):
        return grpo_loss_reference(
            hidden, weight, x["targets"], x["advantages"], x["mask"], **options
        )

    assert torch.autograd.gradcheck(fn, (x["hidden"], x["weight"]))


# --- dispatch ---------------------------------------------------------------------------------------


def test_grpo_loss_dispatches_to_reference_on_cpu():
    x = make_inputs()
    expected = grpo_loss_reference(**x, normalizer=5.0, return_entropy=True)
    for implementation in ("auto", "reference"):
        got = grpo_loss(**x, implementation=implementation, normalizer=5.0, return_entropy=True)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)


def test_grpo_loss_rejects_unknown_implementation():
    with pytest.raises(ValueError, match="'cuda'"):
        grpo_loss(**make_inputs(), implementation="cuda", normalizer=1.0)


# --- tensor (vocab) parallel reference on two gloo processes --------------------------------------


TP_OPTIONS = [
    {"aggregation": "token_sum", "normalizer": 13.0},
    {"aggregation": "token_mean", "tis_cap": 2.0, "kl_coef": 0.1, "temperature": 0.9},
    {"aggregation": "seq_mean", "clip_high": 0.28},
]


def _tp_worker(rank: int, world: int, init_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for i, options in enumerate(TP_OPTIONS):
            x = make_inputs(n=9, h=6, v=12, seed=10 + i)
            g = torch.Generator().manual_seed(20 + i)
            extra = {
                "rollout_logprobs": -torch.rand(9, generator=g, dtype=F64) * 3,
                "ref_logprobs": -torch.rand(9, generator=g, dtype=F64) * 3,
                "old_logprobs": -torch.rand(9, generator=g, dtype=F64) * 3,
                "sequence_ids": torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2]),
            }
            options = {**extra, **options, "return_entropy": True}
            loss, logp, ent = grpo_loss_reference(**x, **options)
            (loss + 0.05 * ent.sum()).backward()

            shard = 12 // world
            hidden = x["hidden"].detach().clone().requires_grad_()
            weight = x["weight"].detach()[rank * shard : (rank + 1) * shard].clone().requires_grad_()
            sharded = {**x, "hidden": hidden, "weight": weight}
            tp_loss, tp_logp, tp_ent = grpo_loss_reference(**sharded, **options, process_group=dist.group.WORLD)
            (tp_loss + 0.05 * tp_ent.sum()).backward()

            torch.testing.assert_close(tp_loss, loss)
            torch.testing.assert_close(tp_logp, logp)
            torch.testing.assert_close(tp_ent, ent)
            torch.testing.assert_close(hidden.grad, x["hidden"].grad)
            torch.testing.assert_close(weight.grad, x["weight"].grad[rank * shard : (rank + 1) * shard])
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_tensor_parallel_reference_matches_unsharded(tmp_path):
    mp.spawn(_tp_worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)
