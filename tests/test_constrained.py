"""Schema-constrained decoding with xgrammar under `model.generate` (spice.rollout.constrained): with a
tiny random model, which samples almost uniformly among whatever the mask leaves, every reply is a
schema-valid JSON object, in batches of left-padded prompts with several samples each."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

pytest.importorskip("xgrammar")

from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList  # noqa: E402

from spice.corpus import Document  # noqa: E402
from spice.rollout.constrained import json_schema_logits_processor  # noqa: E402
from spice.schemas import SEMANTIC_REASONS, format_selection_schema, schema_json, task_schema  # noqa: E402
from spice.tasks import (  # noqa: E402
    ANSWER_KINDS,
    Invalid,
    Task,
    challenger_messages,
    parse_format_choice,
    parse_task,
)
from spice.testing import tiny_model_dir  # noqa: E402

DOCS = [
    Document(id="d0", source="test", text="The Nile is about 6650 km long."),
    Document(id="d1", source="test", text=(
        "Marie Curie won the Nobel Prize in Physics in 1903 and the Nobel Prize in Chemistry in 1911. "
        "She was born in Warsaw in 1867; polonium, which she discovered, was named after Poland.")),
]
# Compact schemas bound a reply to well under 1,000 characters; tokens carry at least one byte and
# the random model's average far more, so replies end long before this budget. A reply that hits it
# anyway is reported (not completed) and fails the test rather than being skipped.
MAX_NEW_TOKENS = 700
SAMPLES = 8  # per prompt: 2 prompts x 8 samples = 16 rows per generate call, each its own random stream


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from threads on a shared 2-core machine
    path = tiny_model_dir(tmp_path_factory.mktemp("tiny"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    yield model, tokenizer
    torch.set_num_threads(threads)


def generate(lm, messages: list[list[dict]], schema: dict, seed: int, max_new_tokens: int = MAX_NEW_TOKENS,
             **sampling):
    """Sample SAMPLES replies per prompt under `schema`; return [(text, ended_with_eos)] and the processor."""
    model, tokenizer = lm
    texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert (batch.attention_mask[:, 0] == 0).any()  # the prompts differ in length: left padding is used
    processor = json_schema_logits_processor(tokenizer, schema_json(schema), model.config.vocab_size)
    torch.manual_seed(seed)
    out = model.generate(**batch, do_sample=True, max_new_tokens=max_new_tokens, num_return_sequences=SAMPLES,
                         logits_processor=LogitsProcessorList([processor]), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, **sampling)
    replies = []
    for row in out[:, batch.input_ids.shape[1]:].tolist():
        ended = tokenizer.eos_token_id in row
        replies.append((tokenizer.decode(row[: row.index(tokenizer.eos_token_id)] if ended else row), ended))
    return replies, processor


def check_replies(replies, processor, schema):
    assert len(replies) == 2 * SAMPLES
    for (text, ended), completed in zip(replies, processor.completed):
        assert ended and completed, f"reply hit max_new_tokens: {text[-200:]!r}"
        jsonschema.validate(json.loads(text), schema)  # strict JSON: no raw control characters


@pytest.mark.parametrize("kind", ANSWER_KINDS)
def test_compact_task_replies_always_match_the_schema(lm, kind):
    schema = task_schema(kind, "compact")
    messages = [challenger_messages(doc, kind, "compact") for doc in DOCS]
    replies, processor = generate(lm, messages, schema, seed=ANSWER_KINDS.index(kind))
    check_replies(replies, processor, schema)
    for index, (text, _) in enumerate(replies):
        result = parse_task(text, DOCS[index // SAMPLES], kind)
        assert isinstance(result, Task) or result.reason in SEMANTIC_REASONS, result


def test_format_selection_replies_always_parse(lm):
    schema = format_selection_schema()
    messages = [[{"role": "user", "content": f"Pick a format for: {doc.text}"}] for doc in DOCS]
    for seed in range(3):
        replies, processor = generate(lm, messages, schema, seed, max_new_tokens=40)
        check_replies(replies, processor, schema)
        assert all(isinstance(parse_format_choice(text), tuple) for text, _ in replies)


@pytest.mark.slow  # about a minute on 2 busy cores: the paper's bounds make random replies ~700 tokens
def test_paper_mcq_replies_match_the_schema_with_top_p(lm):
    schema = task_schema("mcq", "paper")
    messages = [challenger_messages(doc, "mcq", "paper") for doc in DOCS]
    replies, processor = generate(lm, messages, schema, seed=0, max_new_tokens=1500, temperature=0.8, top_p=0.95)
    check_replies(replies, processor, schema)


def test_truncated_reply_is_reported_and_invalid(lm):
    schema = task_schema("integer", "compact")
    messages = [challenger_messages(doc, "integer", "compact") for doc in DOCS]
    replies, processor = generate(lm, messages, schema, seed=0, max_new_tokens=12)
    assert not any(processor.completed) and not any(ended for _, ended in replies)
    for text, _ in replies:
        assert text.startswith('{"') and '"}' not in text
        result = parse_task(text, DOCS[0], "integer")
        assert isinstance(result, Invalid) and result.reason == "truncated"


def test_finished_rows_may_only_stop_and_batch_size_is_fixed(lm):
    model, tokenizer = lm
    processor = json_schema_logits_processor(tokenizer, schema_json(format_selection_schema()),
                                             model.config.vocab_size)
    ids = torch.tensor([[tokenizer.pad_token_id, 5], [7, 8]])
    scores = processor(ids, torch.zeros(2, model.config.vocab_size))
    assert torch.isfinite(scores[0]).sum() < 10  # only the opening of the object
    for token in tokenizer.encode('{"format": "mcq"}', add_special_tokens=False) + [tokenizer.eos_token_id]:
        ids = torch.cat([ids, torch.tensor([[token], [token]])], dim=1)
        scores = processor(ids, torch.zeros(2, model.config.vocab_size))
    assert processor.completed == [True, True]
    assert torch.isfinite(scores).nonzero()[:, 1].tolist() == [tokenizer.eos_token_id] * 2
    with pytest.raises(RuntimeError, match="started on 2 rows"):
        processor(ids[:1], torch.zeros(1, model.config.vocab_size))
    bad = json_schema_logits_processor(tokenizer, schema_json(format_selection_schema()), model.config.vocab_size)
    bad(ids[:, :1], torch.zeros(2, model.config.vocab_size))
    with pytest.raises(RuntimeError, match="forbids"):
        bad(torch.tensor([[5, 9], [5, 9]]), torch.zeros(2, model.config.vocab_size))


def test_grammars_are_compiled_once(lm):
    model, tokenizer = lm
    text = schema_json(task_schema("float", "compact"))
    first = json_schema_logits_processor(tokenizer, text, model.config.vocab_size)
    second = json_schema_logits_processor(tokenizer, text, model.config.vocab_size)
    assert first is not second and first.grammar is second.grammar
    with pytest.raises(ValueError, match="cannot compile"):
        json_schema_logits_processor(tokenizer, '{"type": "strin"}', model.config.vocab_size)


def test_no_control_bytes_or_utf16_surrogates(lm):
    model, tokenizer = lm
    processor = json_schema_logits_processor(tokenizer, schema_json(task_schema("string", "compact")),
                                             model.config.vocab_size)
    pieces = processor.grammar.tokenizer_info.decoded_vocab
    single = {piece[0]: token for token, piece in enumerate(pieces) if len(piece) == 1}
    ids = torch.tensor([[5]])
    processor(ids, torch.zeros(1, model.config.vocab_size))
    for token in tokenizer.encode('{"answer_type": "string", "quote": "a', add_special_tokens=False):
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        scores = processor(ids, torch.zeros(1, model.config.vocab_size))
    assert torch.isfinite(scores[0, single[ord("b")]]) and not torch.isfinite(scores[0, single[0x09]])
    surrogate = [t for t, piece in enumerate(pieces) if b"\xed\xa0" in piece or b"\xed\xbf" in piece]
    assert not torch.isfinite(scores[0, surrogate]).any()
    assert torch.isfinite(scores[0, single[0xED]])  # a lead byte of valid characters (U+D000-U+D7FF)
    scores = processor(torch.cat([ids, torch.tensor([[single[0xED]]])], dim=1), torch.zeros(1, model.config.vocab_size))
    assert torch.isfinite(scores[0, single[0x80]]) and torch.isfinite(scores[0, single[0x9F]])
    assert not torch.isfinite(scores[0, single[0xA0]]) and not torch.isfinite(scores[0, single[0xBF]])


def test_compiled_grammars_are_cached_and_bounded(monkeypatch, lm):
    from spice.rollout import constrained
    tokenizer = lm[1]
    monkeypatch.setattr(constrained, "MAX_CACHED_GRAMMARS", 2)
    schemas = [json.dumps({"type": "object", "properties": {"q": {"enum": [f"choice {i}"]}}, "required": ["q"],
                           "additionalProperties": False}) for i in range(3)]
    first, vocab = constrained.compiled_json_schema(tokenizer, schemas[0], len(tokenizer))
    assert constrained.compiled_json_schema(tokenizer, schemas[0], len(tokenizer))[0] is first  # a hit
    for schema in schemas[1:]:
        constrained.compiled_json_schema(tokenizer, schema, len(tokenizer))
    assert list(vocab.grammars) == schemas[1:]  # the least recently used one left
