"""Constrained decoding never lets a string hold bytes that are not UTF-8, whatever xgrammar admits:
0.2.8 and 0.2.9 accept UTF-16 surrogates (ED A0-BF), 0.2.7 (what sglang 0.5.21-0.5.23 pin) also
overlong (E0 80-9F, F0 80-8F) and beyond-U+10FFFF (F4 90-BF) sequences. Run with either installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import xgrammar as xgr
from transformers import AutoTokenizer

from spice.rollout.constrained import json_schema_logits_processor

TOKENIZER = Path(__file__).resolve().parents[1] / "spice" / "assets" / "smollm2-tokenizer"
SCHEMA = json.dumps({"type": "object", "properties": {"a": {"type": "string", "maxLength": 8}}, "required": ["a"]})


@pytest.fixture(scope="module")
def vocab():
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    size = len(tokenizer)
    pieces = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=size).decoded_vocab
    return tokenizer, size, pieces, {piece: i for i, piece in reversed(list(enumerate(pieces)))}


def _scores_inside_string(vocab, *tail: bytes) -> torch.Tensor:
    """The processor's mask after `{"a":"` (a space after the colon if the grammar wants one) and `tail`."""
    tokenizer, size, _, ids = vocab
    processor = json_schema_logits_processor(tokenizer, SCHEMA, size)
    sequence = [tokenizer.eos_token_id]  # the prompt: the processor starts on it and reads what follows
    scores = processor(torch.tensor([sequence]), torch.zeros(1, size))
    for piece in [b"{", b'"', b"a", b'"', b":", b'"', *tail]:
        if piece == b'"' and not torch.isfinite(scores[0, ids[piece]]) and torch.isfinite(scores[0, ids[b" "]]):
            sequence.append(ids[b" "])
            scores = processor(torch.tensor([sequence]), torch.zeros(1, size))
        assert torch.isfinite(scores[0, ids[piece]]), f"{piece!r} is not allowed"
        sequence.append(ids[piece])
        scores = processor(torch.tensor([sequence]), torch.zeros(1, size))
    return scores[0]


@pytest.mark.parametrize("lead, bad, good", [(0xED, (0xA0, 0xBF), (0x80, 0x9F)), (0xE0, (0x80, 0x9F), (0xA0, 0xBF)),
                                             (0xF0, (0x80, 0x8F), (0x90, 0xBF)), (0xF4, (0x90, 0xBF), (0x80, 0x8F))])
def test_no_invalid_second_byte_after_a_lead_byte(vocab, lead, bad, good):
    _, _, pieces, _ = vocab
    scores = _scores_inside_string(vocab, bytes([lead]))
    starts = torch.tensor([piece[0] if piece else -1 for piece in pieces[:scores.numel()]])
    banned = (starts >= bad[0]) & (starts <= bad[1])
    allowed = (starts >= good[0]) & (starts <= good[1])
    assert banned.any() and not torch.isfinite(scores[banned]).any()
    assert torch.isfinite(scores[allowed]).any()  # a real character can still be written


def test_no_token_holds_an_invalid_pair(vocab):
    _, size, pieces, _ = vocab
    scores = _scores_inside_string(vocab)
    invalid = [i for i, piece in enumerate(pieces[:size]) if any(
        bytes([lead, second]) in piece for lead, low, high in ((0xED, 0xA0, 0xBF), (0xE0, 0x80, 0x9F),
                                                             (0xF0, 0x80, 0x8F), (0xF4, 0x90, 0xBF))
        for second in range(low, high + 1))]
    assert not torch.isfinite(scores[invalid]).any()
