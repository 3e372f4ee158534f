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


def _teacher_forced(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """An independent forward of prompt+completion: log_softmax at temperature 1 of each sampled token."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def test_logprobs_are_the_unmasked_policy_for_free_and_constrained_rows(tiny_model):
    """One call mixing a free and a schema-constrained prompt: every row's logprobs are the policy's
    (unmasked, temperature 1), and the constrained rows follow their schema."""
    import json

    from transformers import AutoModelForCausalLM

    from spice.schemas import format_selection_schema, schema_json

    engine = HFRolloutEngine(tiny_model, batch_size=8)
    prompts = _prompts(engine.tokenizer)
    schema = schema_json(format_selection_schema())
    sampling = [SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=5),
                SamplingParams(n=3, temperature=1.3, max_new_tokens=40, json_schema=schema, seed=6)]
    out = engine.generate(prompts, sampling)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    for prompt, group in zip(prompts, out):
        for completion in group:
            expected = _teacher_forced(reference, prompt, completion.token_ids)
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-5, rtol=1e-5)
    for completion in out[1]:
        assert completion.finish_reason == "stop" and json.loads(completion.text)["format"]
    masked = sum(lp for c in out[1] for lp in c.logprobs)
    assert masked < -5  # a random model gives the grammar's forced tokens low policy probability


def test_regex_rows_follow_their_pattern_with_unmasked_logprobs(tiny_model):
    """`reasoner.constrained_answer`'s regex: every reply is a short reasoning then one boxed letter (or a
    boxed free-form answer), and its logprobs are still the unmasked policy's."""
    import re

    from transformers import AutoModelForCausalLM

    from spice.schemas import answer_regex

    engine = HFRolloutEngine(tiny_model, batch_size=8)
    prompts = _prompts(engine.tokenizer)
    patterns = [answer_regex("mcq", 24), answer_regex("expression", 24)]
    out = engine.generate(prompts, [SamplingParams(n=3, max_new_tokens=64, regex=r, seed=3) for r in patterns])
    reference = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    for prompt, pattern, group in zip(prompts, patterns, out):
        for completion in group:
            assert completion.finish_reason == "stop", completion.text
            assert re.fullmatch(pattern, completion.text), completion.text
            expected = _teacher_forced(reference, prompt, completion.token_ids)
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-5, rtol=1e-5)
    assert all(re.search(r"\\boxed\{[A-D]\}$", c.text) for c in out[0])


def test_sampling_params_refuse_two_grammars():
    import pytest

    with pytest.raises(ValueError, match="exclusive"):
        SamplingParams(json_schema="{}", regex="a")


def test_finished_rows_leave_the_batch_without_changing_results(tiny_model):
    """Rows whose budget ends stop costing compute; decoding each row alone gives the same tokens."""
    engine = HFRolloutEngine(tiny_model, batch_size=8)
    prompts = _prompts(engine.tokenizer)
    sampling = [SamplingParams(n=2, max_new_tokens=2, seed=1), SamplingParams(n=2, max_new_tokens=9, seed=2)]
    widths: list[int] = []
    hook = engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    batched = engine.generate(prompts, sampling)
    hook.remove()
    assert widths[0] == 2  # one prefill per distinct prompt
    assert widths[1] == 4 and set(widths[2:]) == {2}  # the first prompt's rows left after 2 tokens
    alone = HFRolloutEngine(tiny_model, batch_size=1).generate(prompts, sampling)
    for left, right in zip(batched, alone):
        for a, b in zip(left, right):
            assert a.token_ids == b.token_ids
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=1e-5)
    assert [len(c.token_ids) for g in batched for c in g if c.finish_reason == "length"] in ([2, 2, 9, 9], [2, 2])
