import torch

from spice.chat import chat_prompt_ids
from spice.rollout.base import RolloutEngine, SamplingParams
from spice.rollout.hf import HFRolloutEngine


def _prompts(tokenizer):
    return [chat_prompt_ids(tokenizer, [{"role": "user", "content": text}])
            for text in ("What is 2+2?", "Name a prime number larger than ten, please.")]


def test_generates_n_samples_per_prompt_with_logprobs(tiny_model):
    engine = HFRolloutEngine(tiny_model, batch_size=4)
    assert isinstance(engine, RolloutEngine)
    prompts = _prompts(engine.tokenizer)
    out = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=3))
    assert [len(group) for group in out] == [3, 3]
    for index, group in enumerate(out):
        for completion in group:
            assert completion.prompt_index == index
            assert 0 < len(completion.token_ids) <= 6
            assert len(completion.logprobs) == len(completion.token_ids)
            assert all(lp <= 0 for lp in completion.logprobs)
            assert completion.finish_reason in ("stop", "length")
            assert completion.weight_version == 0


def test_seeded_sampling_is_reproducible_and_batch_independent(tiny_model):
    engine = HFRolloutEngine(tiny_model, batch_size=8)
    prompts = _prompts(engine.tokenizer)
    sampling = SamplingParams(n=2, temperature=1.0, max_new_tokens=5, seed=11)
    first = [c.token_ids for group in engine.generate(prompts, sampling) for c in group]
    second = [c.token_ids for group in engine.generate(prompts, sampling) for c in group]
    assert first == second
    other = [c.token_ids for group in engine.generate(prompts, SamplingParams(
        n=2, temperature=1.0, max_new_tokens=5, seed=12)) for c in group]
    assert other != first


def test_logprobs_match_a_full_forward_pass(tiny_model):
    engine = HFRolloutEngine(tiny_model, batch_size=2)
    prompts = _prompts(engine.tokenizer)
    out = engine.generate(prompts, SamplingParams(n=1, temperature=1.0, max_new_tokens=5, seed=0))
    for prompt, (completion,) in zip(prompts, out):
        ids = torch.tensor([prompt + completion.token_ids])
        with torch.no_grad():
            logits = engine.model(ids).logits[0, len(prompt) - 1:-1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_greedy_is_deterministic_and_update_weights_changes_outputs(tiny_model):
    engine = HFRolloutEngine(tiny_model, batch_size=2)
    prompts = _prompts(engine.tokenizer)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=6)
    before = [g[0].token_ids for g in engine.generate(prompts, greedy)]
    assert before == [g[0].token_ids for g in engine.generate(prompts, greedy)]
    torch.manual_seed(0)
    new = [(name, torch.randn_like(t)) for name, t in engine.model.state_dict().items()]
    metrics = engine.update_weights(new, version=7)
    assert metrics["gigabytes"] > 0 and metrics["seconds"] >= 0
    out = engine.generate(prompts, greedy)
    assert all(g[0].weight_version == 7 for g in out)
    assert [g[0].token_ids for g in out] != before


def test_update_weights_rejects_unknown_names_and_shapes(tiny_model):
    engine = HFRolloutEngine(tiny_model)
    import pytest

    with pytest.raises(KeyError, match="no tensor named 'nope'"):
        engine.update_weights([("nope", torch.zeros(1))], 1)
    name, tensor = next(iter(engine.model.state_dict().items()))
    with pytest.raises(ValueError, match=name):
        engine.update_weights([(name, torch.zeros(3, 3, 3))], 1)
