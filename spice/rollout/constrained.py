"""Schema-constrained decoding for the in-process transformers engine, on xgrammar's GrammarMatcher.

`json_schema_logits_processor` returns a fresh `transformers.LogitsProcessor` for one `generate` call.
It masks every row of the batch (n samples of several prompts, left-padded or not: only the last
token of each row is read) to the tokens the schema allows next. Grammars compile once per
(tokenizer, vocab size, stop tokens, schema) and are cached.

Two choices differ from xgrammar's stock `contrib.hf.LogitsProcessor`:
- JSON is written compactly (no free whitespace between tokens), so a model cannot spend its token
  budget on blank space, and tokens holding raw control characters are banned: xgrammar's
  maxLength strings admit them, and strict JSON readers reject them inside strings.
- UTF-16 surrogates encoded as UTF-8 (bytes ED A0-BF ..) are banned, within a token and across two:
  xgrammar 0.2.8 accepts them in strings, they are not UTF-8, and they decode to three U+FFFD each,
  which also breaks maxLength.
- A row whose grammar has ended may emit only a stop token, whatever `generate`'s own EOS setting;
  a row that hits `max_new_tokens` first stays incomplete, which `completed` reports, and the
  parser then calls the reply "truncated"."""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass

import torch
import transformers
import xgrammar as xgr


@dataclass
class _Vocabulary:
    """What compiling and masking need for one tokenizer at one vocab size."""

    info: xgr.TokenizerInfo
    compiler: xgr.GrammarCompiler
    clean: torch.Tensor  # int32 bitmask row: tokens without bytes below 0x20 or surrogate sequences
    not_after_ed: torch.Tensor  # int32 bitmask row: tokens that may follow a byte ED (no A0-BF first)
    ends_ed: torch.Tensor  # bool [vocab_size]: the token's bytes end with ED (a lead byte)
    grammars: dict[str, xgr.CompiledGrammar]


_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")
_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _to_bitmask(allowed: torch.Tensor) -> torch.Tensor:
    """A bool [vocab] mask as one row of xgrammar's int32 bitmask (bit j of word i is token 32 i + j)."""
    words = torch.zeros(-(-allowed.numel() // 32) * 32, dtype=torch.int64)
    words[: allowed.numel()] = allowed.to(torch.int64)
    words = (words.view(-1, 32) << torch.arange(32)).sum(dim=1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _vocabulary(tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...]) -> _Vocabulary:
    """The cached tokenizer info and compiler for this tokenizer, vocab size and stop tokens."""
    per_tokenizer = _VOCABULARIES.setdefault(tokenizer, {})
    key = (vocab_size, stop_token_ids)
    if key not in per_tokenizer:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=list(stop_token_ids))
        clean = torch.ones(vocab_size, dtype=torch.bool)
        not_after_ed = torch.ones(vocab_size, dtype=torch.bool)
        ends_ed = torch.zeros(vocab_size, dtype=torch.bool)
        for token_id, piece in enumerate(info.decoded_vocab[:vocab_size]):
            clean[token_id] = not (any(byte < 0x20 for byte in piece) or _SURROGATE.search(piece))
            not_after_ed[token_id] = not (piece and 0xA0 <= piece[0] <= 0xBF)
            ends_ed[token_id] = piece.endswith(b"\xed")
        clean[list(stop_token_ids)] = True
        per_tokenizer[key] = _Vocabulary(info, xgr.GrammarCompiler(info), _to_bitmask(clean),
                                         _to_bitmask(not_after_ed), ends_ed, {})
    return per_tokenizer[key]


def compiled_json_schema(tokenizer, schema_json: str, vocab_size: int,
                         stop_token_ids: list[int] | None = None) -> tuple[xgr.CompiledGrammar, _Vocabulary]:
    """The compiled grammar of `schema_json` (cached) and the token masks of this tokenizer."""
    stops = tuple(stop_token_ids) if stop_token_ids else (tokenizer.eos_token_id,)
    if stops == (None,):
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos_token_id: pass stop_token_ids")
    with _LOCK:
        vocab = _vocabulary(tokenizer, vocab_size, stops)
        if schema_json not in vocab.grammars:
            try:
                vocab.grammars[schema_json] = vocab.compiler.compile_json_schema(
                    schema_json, any_whitespace=False, strict_mode=True)
            except RuntimeError as exc:
                raise ValueError(f"xgrammar cannot compile the JSON schema {schema_json[:200]!r}: {exc}") from exc
        return vocab.grammars[schema_json], vocab


class JsonSchemaLogitsProcessor(transformers.LogitsProcessor):
    """Masks each row's logits to its grammar's next tokens; use one instance per `generate` call."""

    def __init__(self, grammar: xgr.CompiledGrammar, vocabulary: _Vocabulary) -> None:
        self.grammar = grammar
        self.stop_token_ids = list(grammar.tokenizer_info.stop_token_ids)
        self.vocab_size = grammar.tokenizer_info.vocab_size
        self.vocabulary = vocabulary
        self.matchers: list[xgr.GrammarMatcher] = []
        self.bitmask: torch.Tensor | None = None
        self.stop_only: torch.Tensor | None = None
        self.steps = 0

    @property
    def completed(self) -> list[bool]:
        """Per row: whether its grammar reached the end (the reply is a whole schema-valid object)."""
        return [m.is_completed() or m.is_terminated() for m in self.matchers]

    def _start(self, batch_size: int) -> None:
        self.matchers = [xgr.GrammarMatcher(self.grammar) for _ in range(batch_size)]
        self.bitmask = xgr.allocate_token_bitmask(batch_size, self.vocab_size)
        stops = torch.zeros(self.vocab_size, dtype=torch.bool)
        stops[self.stop_token_ids] = True
        self.stop_only = _to_bitmask(stops)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Advance every unfinished row by its last sampled token, then mask the next-token logits."""
        after_ed = torch.zeros(input_ids.shape[0], 1, dtype=torch.bool)
        if not self.matchers:
            self._start(input_ids.shape[0])
        elif input_ids.shape[0] != len(self.matchers):
            raise RuntimeError(f"this processor was started on {len(self.matchers)} rows and now sees "
                               f"{input_ids.shape[0]}: create a new one for every generate() call")
        else:
            after_ed = self.vocabulary.ends_ed[input_ids[:, -1].cpu()].unsqueeze(1)
            last = input_ids[:, -1].tolist()
            for row, (matcher, token_id) in enumerate(zip(self.matchers, last)):
                if not matcher.is_terminated() and not matcher.accept_token(token_id):
                    raise RuntimeError(f"row {row}: sampled token {token_id} that the grammar forbids "
                                       f"(step {self.steps}); another logits processor may undo the mask")
        for row, matcher in enumerate(self.matchers):
            if matcher.is_terminated():
                self.bitmask[row] = self.stop_only
            else:
                matcher.fill_next_token_bitmask(self.bitmask, row)
        clean = self.bitmask & self.vocabulary.clean
        clean = torch.where(after_ed, clean & self.vocabulary.not_after_ed, clean)
        keep = (clean != 0).any(dim=1, keepdim=True)  # never ban a row's last allowed tokens
        self.bitmask.copy_(torch.where(keep, clean, self.bitmask))
        self.steps += 1
        if scores.device.type in ("cpu", "cuda"):
            xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device, non_blocking=True))
            return scores
        masked = scores.to("cpu")
        xgr.apply_token_bitmask_inplace(masked, self.bitmask)
        return masked.to(scores.device)


def json_schema_logits_processor(tokenizer, schema_json: str, vocab_size: int,
                                 stop_token_ids: list[int] | None = None) -> JsonSchemaLogitsProcessor:
    """A fresh processor constraining every row of one `generate` call to `schema_json`. `vocab_size`
    is the model's (its lm_head rows, possibly more than the tokenizer's); `stop_token_ids` default
    to the tokenizer's EOS and must be among `generate`'s EOS ids."""
    grammar, vocabulary = compiled_json_schema(tokenizer, schema_json, vocab_size, stop_token_ids)
    return JsonSchemaLogitsProcessor(grammar, vocabulary)
