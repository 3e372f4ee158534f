"""Corpus readers, bad-line accounting, stable ids, token-bounded segmentation and seeded sampling."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spice.corpus import (
    MAX_WARNINGS,
    Corpus,
    CorpusError,
    Document,
    document_id,
    load_corpus,
    make_document,
    segment_documents,
    segment_text,
)
from spice.testing import TOKENIZER_DIR


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


BAD_JSONL = [
    b'{"text": "The Nile is about 6650 km long.", "title": "Nile", "year": 2001}',  # 1 ok
    b'{"text": "unterminated',  # 2 invalid_json
    b'["text", "a list"]',  # 3 not_object
    b'"just a string"',  # 4 not_object
    b'{"title": "no text field"}',  # 5 missing_text
    b'{"text": null}',  # 6 missing_text
    b'{"text": ""}',  # 7 empty_text
    b'{"text": "   \\n\\t "}',  # 8 empty_text (whitespace only)
    b'{"text": 42}',  # 9 non_string_text
    b'{"text": ["a", "b"]}',  # 10 non_string_text
    b'{"text": "caf\xe9 au lait"}',  # 11 non_utf8 (raw latin-1 byte)
    b"\xff\xfe\x00garbage",  # 12 non_utf8
    b"",  # 13 blank_line
    b'{"text": "Mount Everest is 8849 m high."}',  # 14 ok
    b'{"text": "The Nile is about 6650 km long."}',  # 15 duplicate of line 1
    b'{"text": "Caf\xc3\xa9 is spelled with an acute accent."}',  # 16 ok (valid UTF-8)
]


def test_jsonl_skips_and_counts_every_kind_of_bad_line(tmp_path, caplog):
    path = tmp_path / "docs.jsonl"
    write_lines(path, BAD_JSONL)
    with caplog.at_level(logging.WARNING, logger="spice.corpus"):
        corpus = load_corpus(path)
    assert [d.text for d in corpus] == [
        "The Nile is about 6650 km long.", "Mount Everest is 8849 m high.", "Café is spelled with an acute accent.",
    ]
    assert corpus.skipped == {
        "invalid_json": 1, "not_object": 2, "missing_text": 2, "empty_text": 2, "non_string_text": 2,
        "non_utf8": 2, "blank_line": 1, "duplicate": 1,
    }
    assert [d.source for d in corpus] == [f"{path}:1", f"{path}:14", f"{path}:16"]
    assert corpus[0].metadata == {"title": "Nile", "year": 2001}
    messages = [r.getMessage() for r in caplog.records]
    for line, reason in [(2, "invalid_json"), (3, "not_object"), (5, "missing_text"), (7, "empty_text"),
                         (9, "non_string_text"), (11, "non_utf8"), (12, "non_utf8")]:
        assert any(f"{path}:{line}:" in m and reason in m for m in messages), (line, reason)
    assert any("skipped 13 records" in m for m in messages)


def test_warnings_are_capped_then_summarised(tmp_path, caplog):
    path = tmp_path / "many_bad.jsonl"
    write_lines(path, [b"not json"] * 100 + [b'{"text": "one good line"}'])
    with caplog.at_level(logging.WARNING, logger="spice.corpus"):
        corpus = load_corpus(path)
    assert len(corpus) == 1 and corpus.skipped == {"invalid_json": 100}
    per_line = [r for r in caplog.records if "skipped (invalid_json)" in r.getMessage()]
    assert len(per_line) == MAX_WARNINGS
    assert any("skipped 100 records (invalid_json=100)" in r.getMessage() for r in caplog.records)


def test_text_field_limit_and_gzip(tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(10):
            f.write(json.dumps({"body": f"document number {i}", "text": "not this"}) + "\n")
    corpus = load_corpus(path, text_field="body", limit=4)
    assert [d.text for d in corpus] == [f"document number {i}" for i in range(4)]
    assert corpus[0].metadata == {"text": "not this"}
    with pytest.raises(CorpusError, match="'missing'"):
        load_corpus(path, text_field="missing")


def test_parquet(tmp_path):
    path = tmp_path / "docs.parquet"
    table = pa.table({
        "text": ["Water boils at 100 C at sea level.", None, "", "Iron has atomic number 26."],
        "title": ["Water", "x", "y", "Iron"],
    })
    pq.write_table(table, path, row_group_size=2)
    corpus = load_corpus(path)
    assert [d.text for d in corpus] == ["Water boils at 100 C at sea level.", "Iron has atomic number 26."]
    assert [d.source for d in corpus] == [f"{path}#0", f"{path}#3"]
    assert corpus[1].metadata == {"title": "Iron"}
    assert corpus.skipped == {"missing_text": 1, "empty_text": 1}
    with pytest.raises(CorpusError, match=r"no column 'body' \(columns: text, title\)"):
        load_corpus(path, text_field="body")


def test_text_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("Second file.\n", encoding="utf-8")
    (tmp_path / "a.md").write_text("# Title\n\nFirst file.", encoding="utf-8")
    (tmp_path / "sub" / "c.TXT").write_text("Nested file.", encoding="utf-8")
    (tmp_path / "ignored.py").write_text("print('not a document')", encoding="utf-8")
    (tmp_path / "empty.txt").write_text(" \n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    corpus = load_corpus(tmp_path)
    assert [d.text for d in corpus] == ["# Title\n\nFirst file.", "Second file.\n", "Nested file."]
    assert [d.source for d in corpus] == [str(tmp_path / "a.md"), str(tmp_path / "b.txt"),
                                          str(tmp_path / "sub" / "c.TXT")]
    assert corpus[0].metadata == {"title": "a"}
    assert corpus.skipped == {"empty_text": 1, "non_utf8": 1}
    single = load_corpus(tmp_path / "b.txt")
    assert len(single) == 1 and single[0].id == corpus[1].id


def test_ids_are_stable_content_hashes(tmp_path):
    text = "Photosynthesis converts light into chemical energy."
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.txt").write_text(text, encoding="utf-8")
    first, second = load_corpus(tmp_path / "a.jsonl"), load_corpus(tmp_path / "a.jsonl")
    from_folder = load_corpus(tmp_path / "dir")
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    assert first[0].id == second[0].id == from_folder[0].id == document_id(text) == expected
    assert document_id(text + " ") != expected
    assert first.get(expected) == first[0]
    with pytest.raises(KeyError, match="'0000000000000000'"):
        first.get("0000000000000000")


def test_empty_corpus_and_bad_paths_are_clear_errors(tmp_path):
    only_bad = tmp_path / "bad.jsonl"
    write_lines(only_bad, [b"{", b'{"text": ""}'])
    with pytest.raises(CorpusError, match=r"bad\.jsonl.*no usable documents.*empty_text=1, invalid_json=1"):
        load_corpus(only_bad)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CorpusError, match="empty_dir"):
        load_corpus(tmp_path / "empty_dir")
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_corpus(tmp_path / "nowhere.jsonl")
    (tmp_path / "data.csv").write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"data\.csv: unknown corpus format"):
        load_corpus(tmp_path / "data.csv")


LONG_TEXT = "\n\n".join(
    " ".join(f"Sentence {p}.{s} says that the river carries {p * 7 + s} tonnes of silt each year." for s in range(6))
    for p in range(12)
) + "\n\n" + " ".join(f"w{i}" for i in range(700)) + "\n\nA closing paragraph."


@pytest.mark.parametrize("max_tokens", [24, 40, 64, 200, 1000])
def test_segmentation_respects_the_token_bound(tokenizer, max_tokens):
    doc = make_document(LONG_TEXT, "long.jsonl:1", {"title": "silt"})
    short = make_document("A short document.", "long.jsonl:2")
    segments = segment_documents([doc, short], tokenizer, max_tokens)
    assert segments[-1] == short and segments[-1].source == "long.jsonl:2"
    pieces = segments[:-1]
    assert len(pieces) > 1
    for k, piece in enumerate(pieces, start=1):
        assert n_tokens(tokenizer, piece.text) <= max_tokens
        assert piece.text in LONG_TEXT and piece.text == piece.text.strip()
        assert piece.id == document_id(piece.text)
        assert piece.source == f"long.jsonl:1 [{k}/{len(pieces)}]"
        assert piece.metadata == {"title": "silt", "parent_id": doc.id, "segment": k, "segments": len(pieces)}
    assert len({p.id for p in pieces}) == len(pieces)
    # Nothing is lost: the pieces cover every word of the document in order.
    assert " ".join(p.text for p in pieces).split() == LONG_TEXT.split()


def test_segmentation_prefers_paragraph_then_sentence_boundaries(tokenizer):
    paragraphs = LONG_TEXT.split("\n\n")[:12]
    text = "\n\n".join(paragraphs)
    longest = max(n_tokens(tokenizer, p) for p in paragraphs)
    for piece in segment_text(text, tokenizer, longest + 5):
        assert all(p in paragraphs for p in piece.split("\n\n"))
    for piece in segment_text(text, tokenizer, 40):
        assert piece.endswith("year.") and piece.startswith("Sentence")


def test_segmentation_hard_splits_at_word_boundaries(tokenizer):
    text = " ".join(f"token{i}" for i in range(400))
    pieces = segment_text(text, tokenizer, 50)
    assert all(n_tokens(tokenizer, p) <= 50 for p in pieces)
    assert " ".join(pieces) == text


def test_repeated_segments_are_kept_once(tokenizer):
    paragraph = "The same paragraph appears in two documents and twice in one of them."
    first = make_document("\n\n".join([paragraph, "Unique one.", paragraph]), "a:1")
    second = make_document("\n\n".join(["Unique two.", paragraph]), "a:2")
    texts = [d.text for d in segment_documents([first, second], tokenizer, 15)]
    assert texts == [paragraph, "Unique one.", "Unique two."]


def test_segmentation_leaves_short_documents_alone_and_rejects_bad_bounds(tokenizer):
    doc = make_document("Short.", "x.txt")
    assert segment_documents([doc], tokenizer, 512) == [doc]
    with pytest.raises(ValueError, match="max_tokens"):
        segment_documents([doc], tokenizer, 0)


def test_corpus_segmented_keeps_skips(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    write_lines(path, [json.dumps({"text": LONG_TEXT}).encode(), b"oops"])
    corpus = load_corpus(path).segmented(tokenizer, 64)
    assert len(corpus) > 5 and corpus.skipped == {"invalid_json": 1}
    assert all(n_tokens(tokenizer, d.text) <= 64 for d in corpus)
    assert corpus.get(corpus[3].id) == corpus[3]
    replaced = load_corpus(path)
    replaced.documents = segment_documents(replaced.documents, tokenizer, 64)
    assert replaced.get(corpus[3].id) == corpus[3]


def make_corpus(n: int) -> Corpus:
    return Corpus([make_document(f"document {i}", f"mem:{i}") for i in range(n)])


def test_sampling_is_a_pure_function_of_seed_and_iteration():
    a, b = make_corpus(50), make_corpus(50)
    b.sample(7, seed=1, iteration=0)  # drawing other samples first must not change later draws
    assert [d.id for d in a.sample(10, seed=3, iteration=5)] == [d.id for d in b.sample(10, seed=3, iteration=5)]
    assert a.sample(10, 3, 5) != a.sample(10, 3, 6)
    assert a.sample(10, 3, 5) != a.sample(10, 4, 5)
    drawn = a.sample(50, 0, 0)
    assert len({d.id for d in drawn}) == 50  # without replacement while the corpus lasts
    more = a.sample(120, 0, 0)
    assert Counter(d.id for d in more).most_common(1)[0][1] == 3 and len({d.id for d in more}) == 50
    assert a.sample(0, 0, 0) == []
    with pytest.raises(ValueError, match="seed=-1"):
        a.sample(1, -1, 0)


def test_sampling_is_roughly_uniform():
    corpus = make_corpus(10)
    counts = Counter(d.text for it in range(2000) for d in corpus.sample(3, seed=11, iteration=it))
    assert len(counts) == 10
    assert all(500 <= c <= 700 for c in counts.values()), counts  # expected 600 each


def test_document_equality_ignores_metadata():
    assert Document("a", "t", "s", {"x": 1}) == Document("a", "t", "s", {"x": 2})
