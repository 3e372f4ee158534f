"""Documents for the challenger: readers, segmentation by tokens, seeded sampling."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spice.errors import InputNotFound, UserError

logger = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".txt", ".md")
MAX_WARNINGS = 20  # bad lines reported one by one per file; the rest only in the summary


@dataclass(frozen=True)
class Document:
    """A segment of a real document; `id` is a hash of its text, so it is stable across runs."""

    id: str
    text: str
    source: str  # file (and line or row) it came from
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class CorpusError(UserError, ValueError):
    """A corpus that cannot be used at all: no usable documents, unknown format, missing text column."""


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that segmentation needs (a callable tokenizer is also
    called on lists of texts, to count tokens in one batch)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def document_id(text: str) -> str:
    """Stable id of a text: the first 16 hex digits of its sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_document(text: str, source: str, metadata: dict[str, Any] | None = None) -> Document:
    """Build a Document whose id is the hash of its text."""
    return Document(id=document_id(text), text=text, source=source, metadata=metadata or {})


class Corpus:
    """An ordered list of documents (load_corpus drops repeated texts) with seeded sampling that a
    resumed run replays exactly."""

    def __init__(self, documents: Iterable[Document], skipped: dict[str, int] | None = None,
                 path: str | Path | None = None):
        self.documents = list(documents)
        self.skipped: dict[str, int] = dict(skipped or {})
        self.path = None if path is None else Path(path)

    @property
    def documents(self) -> list[Document]:
        return self._documents

    @documents.setter
    def documents(self, documents: list[Document]) -> None:
        """Replacing the list (e.g. by its segments) also rebuilds the id index that `get` uses."""
        self._documents = list(documents)
        self._by_id = {doc.id: i for i, doc in enumerate(self._documents)}

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def __getitem__(self, index: int) -> Document:
        return self.documents[index]

    def get(self, doc_id: str) -> Document:
        """The document with this id (the id recorded in tasks.jsonl)."""
        try:
            return self.documents[self._by_id[doc_id]]
        except KeyError:
            raise KeyError(f"document id {doc_id!r} is not in the corpus {self.path or ''}".rstrip()) from None

    def sample(self, n: int, seed: int, iteration: int) -> list[Document]:
        """Draw `n` documents uniformly without replacement (with repeats only once the corpus is
        exhausted); a pure function of (seed, iteration), so a resumed run draws the same documents."""
        if n < 0 or seed < 0 or iteration < 0:
            raise ValueError(f"sample needs n, seed, iteration >= 0, got n={n}, seed={seed}, iteration={iteration}")
        if not self.documents:
            raise CorpusError(f"cannot sample from an empty corpus {self.path or ''}".rstrip())
        rng = np.random.default_rng(np.random.SeedSequence([seed, iteration]))
        indices: list[int] = []
        while len(indices) < n:
            indices.extend(rng.permutation(len(self.documents))[: n - len(indices)].tolist())
        return [self.documents[i] for i in indices]

    def segmented(self, tokenizer: Tokenizer, max_tokens: int) -> Corpus:
        """A new corpus whose documents are cut into pieces of at most `max_tokens` tokens."""
        return Corpus(segment_documents(self.documents, tokenizer, max_tokens), self.skipped, self.path)


class _Skips:
    """Counts skipped records by reason and logs the first few with their location."""

    def __init__(self, path: Path):
        self.path = path
        self.counts: Counter[str] = Counter()
        self.reported = 0

    def skip(self, reason: str, where: str, detail: str = "", warn: bool = True) -> None:
        self.counts[reason] += 1
        if warn and self.reported < MAX_WARNINGS:
            self.reported += 1
            logger.warning("%s: skipped (%s)%s", where, reason, f": {detail}" if detail else "")

    def summarise(self) -> None:
        total = sum(self.counts.values())
        if total:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            logger.warning("%s: skipped %d records (%s)", self.path, total, reasons)


def _text_of(record: Any, text_field: str) -> tuple[str | None, str]:
    """Return (text, "") for a usable record, else (None, reason)."""
    if not isinstance(record, dict):
        return None, "not_object"
    if text_field not in record or record[text_field] is None:
        return None, "missing_text"
    text = record[text_field]
    if not isinstance(text, str):
        return None, "non_string_text"
    if not text.strip():
        return None, "empty_text"
    return text, ""


def _record_document(record: Any, text_field: str, where: str, skips: _Skips, label: str) -> Document | None:
    """A record's document (its other fields as metadata), or None after counting why it is skipped."""
    text, reason = _text_of(record, text_field)
    if text is None:
        skips.skip(reason, where, f"{label} {text_field!r}")
        return None
    return make_document(text, where, {k: v for k, v in record.items() if k != text_field})


def _read_jsonl(path: Path, text_field: str, skips: _Skips) -> Iterator[Document]:
    """Stream a jsonl (optionally gzipped) file line by line as bytes, decoding each line strictly."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            if not raw.strip():
                skips.skip("blank_line", where, warn=False)
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                skips.skip("non_utf8", where, f"byte {e.start}")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                skips.skip("invalid_json", where, e.msg)
                continue
            document = _record_document(record, text_field, where, skips, "field")
            if document is not None:
                yield document


def _read_parquet(path: Path, text_field: str, skips: _Skips) -> Iterator[Document]:
    """Stream a parquet file in record batches; the text column must exist."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise CorpusError(f"{path}: no column {text_field!r} (columns: {', '.join(names)})")
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            where = f"{path}#{row}"
            row += 1
            document = _record_document(record, text_field, where, skips, "column")
            if document is not None:
                yield document


def _read_text_file(path: Path, skips: _Skips, source: str) -> Iterator[Document]:
    """One document per .txt/.md file, its title the file name without suffix."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        skips.skip("non_utf8", source, f"byte {e.start}")
        return
    if not text.strip():
        skips.skip("empty_text", source)
        return
    yield make_document(text, source, {"title": path.stem})


def _read_folder(path: Path, skips: _Skips) -> Iterator[Document]:
    """Every .txt/.md file under the folder, in sorted order so ids and order are reproducible."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    for file in files:
        yield from _read_text_file(file, skips, str(file))


def iter_documents(path: str | Path, text_field: str = "text", skips: _Skips | None = None) -> Iterator[Document]:
    """Stream documents from a jsonl / parquet file, a .txt/.md file or a folder of them."""
    path = Path(path).expanduser()
    skips = skips if skips is not None else _Skips(path)
    name = path.name.lower()
    if not path.exists():
        raise InputNotFound(f"corpus path {str(path)!r} does not exist")
    if path.is_dir():
        return _read_folder(path, skips)
    if name.endswith(JSONL_SUFFIXES):
        return _read_jsonl(path, text_field, skips)
    if name.endswith(PARQUET_SUFFIXES):
        return _read_parquet(path, text_field, skips)
    if name.endswith(TEXT_SUFFIXES):
        return _read_text_file(path, skips, str(path))
    raise CorpusError(
        f"{path}: unknown corpus format (expected {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES)} "
        "or a folder of .txt/.md files)"
    )


def load_corpus(path: str | Path, text_field: str = "text", limit: int | None = None) -> Corpus:
    """Read a corpus, skipping and counting bad records and duplicate texts; at most `limit` documents."""
    path = Path(path).expanduser()
    skips = _Skips(path)
    documents: list[Document] = []
    seen: set[str] = set()
    if limit is None or limit > 0:
        for doc in iter_documents(path, text_field, skips):
            if doc.id in seen:
                skips.skip("duplicate", doc.source, warn=False)
                continue
            seen.add(doc.id)
            documents.append(doc)
            if limit is not None and len(documents) >= limit:
                break
    skips.summarise()
    if not documents:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(skips.counts.items())) or "nothing to read"
        raise CorpusError(f"corpus {str(path)!r} has no usable documents (text field {text_field!r}; {detail})")
    return Corpus(documents, dict(skips.counts), path)


# Segmentation ------------------------------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+|\n\s*")


def _count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _counts(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    """Token counts of many texts, in one batched call when the tokenizer is a callable HF tokenizer."""
    if not texts:
        return []
    if callable(tokenizer):
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [_count(tokenizer, text) for text in texts]


def _spans(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    """Non-blank pieces of text[start:end] between separator matches, stripped, as absolute spans."""
    spans, cursor = [], start
    for match in separator.finditer(text, start, end):
        spans.append((cursor, match.start()))
        cursor = match.end()
    spans.append((cursor, end))
    out = []
    for a, b in spans:
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            a += len(piece) - len(piece.lstrip())
            out.append((a, a + len(stripped)))
    return out


def _hard_split(tokenizer: Tokenizer, text: str, start: int, end: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut text[start:end] into the longest prefixes of at most `max_tokens` tokens, preferring to cut
    at whitespace (a piece is never shorter than one character, even one that alone exceeds the bound)."""
    pieces = []
    while start < end:
        if _count(tokenizer, text[start:end]) <= max_tokens:
            pieces.append((start, end))
            break
        lo, hi = 1, end - start  # the longest fitting prefix length lies in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _count(tokenizer, text[start:start + mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid
        cut = start + lo
        space = text.rfind(" ", start + lo // 2, cut)
        if space > start and _count(tokenizer, text[start:space].rstrip()) <= max_tokens:
            cut = space
        stop = len(text[start:cut].rstrip()) + start
        if stop > start:
            pieces.append((start, stop))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    return pieces


def _units(tokenizer: Tokenizer, text: str, max_tokens: int) -> list[tuple[int, int, int]]:
    """Spans (start, end, tokens) each within `max_tokens`: paragraphs, else sentences, else hard cuts."""
    units = []
    paragraphs = _spans(text, 0, len(text), _PARAGRAPH_BREAK)
    for (pa, pb), n in zip(paragraphs, _counts(tokenizer, [text[a:b] for a, b in paragraphs])):
        if n <= max_tokens:
            units.append((pa, pb, n))
            continue
        sentences = _spans(text, pa, pb, _SENTENCE_BREAK)
        for (sa, sb), m in zip(sentences, _counts(tokenizer, [text[a:b] for a, b in sentences])):
            if m <= max_tokens:
                units.append((sa, sb, m))
            else:
                units.extend((a, b, _count(tokenizer, text[a:b]))
                             for a, b in _hard_split(tokenizer, text, sa, sb, max_tokens))
    return units


def _pack(tokenizer: Tokenizer, text: str, units: list[tuple[int, int, int]], max_tokens: int) -> list[str]:
    """Greedily join consecutive units (keeping the original text between them) into segments whose
    exact token count is at most `max_tokens`."""
    groups: list[tuple[int, int]] = []  # [i, j) ranges of units, packed by estimated counts
    i = 0
    while i < len(units):
        j, estimate = i + 1, units[i][2]
        while j < len(units) and estimate + units[j][2] + 1 <= max_tokens:
            estimate += units[j][2] + 1
            j += 1
        groups.append((i, j))
        i = j
    exact = _counts(tokenizer, [text[units[i][0]:units[j - 1][1]] for i, j in groups])
    segments: list[str] = []
    for (i, j), n in zip(groups, exact):
        if n <= max_tokens:
            segments.append(text[units[i][0]:units[j - 1][1]])
            continue
        while i < j:  # rare: joining changed the tokenization; shrink from the end, exactly
            k = j
            while k - i > 1 and _count(tokenizer, text[units[i][0]:units[k - 1][1]]) > max_tokens:
                k -= 1
            segments.append(text[units[i][0]:units[k - 1][1]])
            i = k
    return segments


def segment_text(text: str, tokenizer: Tokenizer, max_tokens: int, tokens: int | None = None) -> list[str]:
    """Cut a text into pieces of at most `max_tokens` tokens at paragraph, then sentence, then word
    boundaries; each piece is a verbatim substring, so quotes from it are quotes from the document.
    `tokens` is the text's token count when the caller already knows it."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if (tokens if tokens is not None else _count(tokenizer, text)) <= max_tokens:
        return [text]
    return _pack(tokenizer, text, _units(tokenizer, text, max_tokens), max_tokens)


def segment_documents(documents: Iterable[Document], tokenizer: Tokenizer, max_tokens: int,
                      batch_size: int = 256) -> list[Document]:
    """Split documents longer than `max_tokens` tokens into segments, each its own Document with its own
    id and a source naming the piece ("file:3 [2/5]"); short documents are kept unchanged, and a
    segment whose text already occurred (a repeated paragraph) is kept once."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    out: list[Document] = []
    seen: set[str] = set()
    documents = iter(documents)
    while batch := list(itertools.islice(documents, batch_size)):
        for doc, tokens in zip(batch, _counts(tokenizer, [doc.text for doc in batch])):
            pieces = segment_text(doc.text, tokenizer, max_tokens, tokens)
            if len(pieces) == 1 and pieces[0] == doc.text:
                candidates = [doc]
            else:
                candidates = [
                    make_document(piece, f"{doc.source} [{k}/{len(pieces)}]",
                                  {**doc.metadata, "parent_id": doc.id, "segment": k, "segments": len(pieces)})
                    for k, piece in enumerate(pieces, start=1)
                ]
            for candidate in candidates:
                if candidate.id not in seen:
                    seen.add(candidate.id)
                    out.append(candidate)
    return out
