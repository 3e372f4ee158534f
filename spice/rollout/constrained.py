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
  which also breaks maxLength. xgrammar 0.2.7 (what sglang 0.5.21-0.5.23 pin) also accepts overlong
  (E0 80-9F, F0 80-8F) and beyond-U+10FFFF (F4 90-BF) sequences; they are banned the same way.
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
    not_after_ed: torch.Tensor  # int32 bitmask [1 + len(_LEADS), words]: tokens that may follow each lead byte
    ends_ed: torch.Tensor  # long [vocab_size]: 1 + index in _LEADS of the lead byte a token ends with, else 0
    grammars: dict[str | tuple[str, str], xgr.CompiledGrammar]  # json schema text, or ("regex", pattern)


# Lead bytes whose next byte xgrammar may accept outside UTF-8, with the second bytes that are not UTF-8.
_LEADS = {0xED: (0xA0, 0xBF), 0xE0: (0x80, 0x9F), 0xF0: (0x80, 0x8F), 0xF4: (0x90, 0xBF)}
_SURROGATE = re.compile(b"|".join(re.escape(bytes([lead])) + b"[" + re.escape(bytes([low])) + b"-"
                                  + re.escape(bytes([high])) + b"]" for lead, (low, high) in _LEADS.items()))
_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _to_bitmask(allowed: torch.Tensor) -> torch.Tensor:
    """A bool [vocab] mask as one row of xgrammar's int32 bitmask (bit j of word i is token 32 i + j)."""
    words = torch.zeros(-(-allowed.numel() // 32) * 32, dtype=torch.int64)
    words[: allowed.numel()] = allowed.to(torch.int64)
    words = (words.view(-1, 32) << torch.arange(32)).sum(dim=1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


MAX_CACHED_GRAMMARS = 256  # compiled grammars kept per tokenizer


def _vocabulary(tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...]) -> _Vocabulary:
    """The cached tokenizer info and compiler for this tokenizer, vocab size and stop tokens."""
    per_tokenizer = _VOCABULARIES.setdefault(tokenizer, {})
    key = (vocab_size, stop_token_ids)
    if key not in per_tokenizer:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=list(stop_token_ids))
        clean = torch.ones(vocab_size, dtype=torch.bool)
        not_after_ed = torch.ones(1 + len(_LEADS), vocab_size, dtype=torch.bool)
        ends_ed = torch.zeros(vocab_size, dtype=torch.long)
        for token_id, piece in enumerate(info.decoded_vocab[:vocab_size]):
            clean[token_id] = not (any(byte < 0x20 for byte in piece) or _SURROGATE.search(piece))
            for index, (lead, (low, high)) in enumerate(_LEADS.items(), start=1):
                not_after_ed[index, token_id] = not (piece and low <= piece[0] <= high)
                if piece.endswith(bytes([lead])):
                    ends_ed[token_id] = index
        clean[list(stop_token_ids)] = True
        per_tokenizer[key] = _Vocabulary(info, xgr.GrammarCompiler(info), _to_bitmask(clean),
                                         torch.stack([_to_bitmask(row) for row in not_after_ed]), ends_ed, {})
    return per_tokenizer[key]


def compiled_json_schema(tokenizer, schema_json: str, vocab_size: int,
                         stop_token_ids: list[int] | None = None) -> tuple[xgr.CompiledGrammar, _Vocabulary]:
    """The compiled grammar of `schema_json` (cached) and the token masks of this tokenizer."""
    return compiled_grammar(tokenizer, "json_schema", schema_json, vocab_size, stop_token_ids)


def compiled_grammar(tokenizer, kind: str, source: str, vocab_size: int,
                     stop_token_ids: list[int] | None = None) -> tuple[xgr.CompiledGrammar, _Vocabulary]:
    """The compiled grammar of a `json_schema` (a JSON string) or a `regex` (xgrammar's regex dialect,
    what SGLang's xgrammar backend compiles for its `regex` sampling parameter), cached per tokenizer,
    with the token masks of this tokenizer."""
    if kind not in ("json_schema", "regex"):
        raise ValueError(f"grammar kind {kind!r}: expected json_schema or regex")
    stops = tuple(stop_token_ids) if stop_token_ids else (tokenizer.eos_token_id,)
    if stops == (None,):
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos_token_id: pass stop_token_ids")
    with _LOCK:
        vocab = _vocabulary(tokenizer, vocab_size, stops)
        key = source if kind == "json_schema" else ("regex", source)
        grammar = vocab.grammars.pop(key, None)  # re-inserted last: least recently used first out
        if grammar is None:
            try:
                grammar = (vocab.compiler.compile_json_schema(source, any_whitespace=False, strict_mode=True)
                           if kind == "json_schema" else vocab.compiler.compile_regex(source))
            except RuntimeError as exc:
                what = "JSON schema" if kind == "json_schema" else "regex"
                raise ValueError(f"xgrammar cannot compile the {what} {source[:200]!r}: {exc}") from exc
        vocab.grammars[key] = grammar
        while len(vocab.grammars) > MAX_CACHED_GRAMMARS:  # per-document schemas (quote enums) would grow it
            del vocab.grammars[next(iter(vocab.grammars))]
        return grammar, vocab


class RowGrammars:
    """One xgrammar matcher per row (None: that row is free); masks a [rows, vocab] logits tensor to
    each constrained row's next allowed tokens. Rows may leave (`select`) as they finish."""

    def __init__(self, grammars: list[xgr.CompiledGrammar | None], vocabulary: _Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.matchers = [None if g is None else xgr.GrammarMatcher(g) for g in grammars]
        self.rows = [row for row, m in enumerate(self.matchers) if m is not None]
        first = next((g for g in grammars if g is not None), None)
        self.vocab_size = first.tokenizer_info.vocab_size if first is not None else 0
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), self.vocab_size) if first is not None else None
        stops = torch.zeros(self.vocab_size, dtype=torch.bool)
        if first is not None:
            stops[list(first.tokenizer_info.stop_token_ids)] = True
        self.stop_only = _to_bitmask(stops)
        self.after_ed = torch.zeros(len(grammars), 1, dtype=torch.long)
        self.steps = 0

    @property
    def completed(self) -> list[bool]:
        """Per row: whether its grammar reached the end (a free row: always)."""
        return [m is None or m.is_completed() or m.is_terminated() for m in self.matchers]

    def advance(self, tokens: list[int]) -> None:
        """Feed every constrained row the token it just sampled."""
        self.after_ed = self.vocabulary.ends_ed[torch.tensor(tokens, dtype=torch.long)].unsqueeze(1)
        for row in self.rows:
            matcher = self.matchers[row]
            if not matcher.is_terminated() and not matcher.accept_token(tokens[row]):
                raise RuntimeError(f"row {row}: sampled token {tokens[row]} that the grammar forbids "
                                   f"(step {self.steps}); another logits processor may undo the mask")

    def select(self, keep: list[int]) -> None:
        """Keep only the rows `keep` (in that order), e.g. after others reached EOS."""
        self.matchers = [self.matchers[row] for row in keep]
        self.rows = [row for row, m in enumerate(self.matchers) if m is not None]
        self.after_ed = self.after_ed[keep]
        if self.bitmask is not None:
            self.bitmask = self.bitmask[keep].contiguous()

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """Set to -inf, in place, every token a constrained row may not emit next; returns `scores`."""
        if not self.rows:
            return scores
        for row in self.rows:
            matcher = self.matchers[row]
            if matcher.is_terminated():
                self.bitmask[row] = self.stop_only
            else:
                matcher.fill_next_token_bitmask(self.bitmask, row)
        clean = self.bitmask & self.vocabulary.clean
        clean = clean & self.vocabulary.not_after_ed[self.after_ed[:, 0]]
        keep = (clean != 0).any(dim=1, keepdim=True)  # never ban a row's last allowed tokens
        self.bitmask.copy_(torch.where(keep, clean, self.bitmask))
        self.steps += 1
        if scores.device.type in ("cpu", "cuda"):
            xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device, non_blocking=True),
                                            indices=self.rows)
            return scores
        masked = scores.to("cpu")
        xgr.apply_token_bitmask_inplace(masked, self.bitmask, indices=self.rows)
        scores.copy_(masked.to(scores.device))
        return scores


class JsonSchemaLogitsProcessor(transformers.LogitsProcessor):
    """Masks each row's logits to its grammar's next tokens under `model.generate`; use one instance
    per `generate` call. It masks `scores` in place: transformers then reports masked logits."""

    def __init__(self, grammar: xgr.CompiledGrammar, vocabulary: _Vocabulary) -> None:
        self.grammar = grammar
        self.vocabulary = vocabulary
        self.rows: RowGrammars | None = None

    @property
    def completed(self) -> list[bool]:
        """Per row: whether its grammar reached the end (the reply is a whole schema-valid object)."""
        return [] if self.rows is None else self.rows.completed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Advance every unfinished row by its last sampled token, then mask the next-token logits."""
        if self.rows is None:
            self.rows = RowGrammars([self.grammar] * input_ids.shape[0], self.vocabulary)
        elif input_ids.shape[0] != len(self.rows.matchers):
            raise RuntimeError(f"this processor was started on {len(self.rows.matchers)} rows and now sees "
                               f"{input_ids.shape[0]}: create a new one for every generate() call")
        else:
            self.rows.advance(input_ids[:, -1].tolist())
        return self.rows.mask(scores)


def json_schema_logits_processor(tokenizer, schema_json: str, vocab_size: int,
                                 stop_token_ids: list[int] | None = None) -> JsonSchemaLogitsProcessor:
    """A fresh processor constraining every row of one `generate` call to `schema_json`. `vocab_size`
    is the model's (its lm_head rows, possibly more than the tokenizer's); `stop_token_ids` default
    to the tokenizer's EOS and must be among `generate`'s EOS ids."""
    grammar, vocabulary = compiled_json_schema(tokenizer, schema_json, vocab_size, stop_token_ids)
    return JsonSchemaLogitsProcessor(grammar, vocabulary)
