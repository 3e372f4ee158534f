"""Finding the model folder to evaluate: a Hugging Face folder, "embedded", a checkpoint of a run
(`step_*/model`) or a run folder (its latest checkpoint), with a tokenizer beside the weights."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import yaml

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "chat_template.jinja", "generation_config.json")


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


def _run_dir_of(path: Path) -> Path | None:
    for folder in (path, *path.parents):
        if (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir():
            return folder
    return None


def _tokenizer_of_run(run_dir: Path) -> Path | None:
    """The tokenizer of the model a run started from (its config.yaml names it)."""
    from spice.embedded import resolve_model_path

    data = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    base = (data.get("model") or {}).get("path")
    if not base:
        return None
    folder = resolve_model_path(base)
    return folder if _has_tokenizer(folder) else None


def _link_tokenizer(model_dir: Path, tokenizer_dir: Path) -> Path:
    """A temporary folder holding links to the weights of `model_dir` and the tokenizer files."""
    merged = Path(tempfile.mkdtemp(prefix="spice-eval-model-"))
    atexit.register(shutil.rmtree, merged, ignore_errors=True)
    for file in model_dir.iterdir():
        (merged / file.name).symlink_to(file.resolve())
    for name in TOKENIZER_FILES:
        source = tokenizer_dir / name
        if source.is_file() and not (merged / name).exists():
            (merged / name).symlink_to(source.resolve())
    return merged


def resolve_eval_model(path: str) -> Path:
    """The Hugging Face folder (weights and tokenizer) that `path` designates; FileNotFoundError
    naming `path` when it designates none."""
    from spice.embedded import resolve_model_path

    candidate = Path(path).expanduser()
    if path != "embedded" and candidate.is_dir() and not (candidate / "config.json").is_file():
        if (candidate / "model" / "config.json").is_file():
            candidate = candidate / "model"  # a checkpoint folder step_*/
        elif (candidate / "checkpoints" / "latest").is_file():
            latest = (candidate / "checkpoints" / "latest").read_text().strip()
            candidate = candidate / "checkpoints" / latest / "model"  # a run folder
        path = str(candidate)
    model_dir = resolve_model_path(path)
    if _has_tokenizer(model_dir):
        return model_dir
    run_dir = _run_dir_of(model_dir)
    tokenizer_dir = _tokenizer_of_run(run_dir) if run_dir is not None else None
    if tokenizer_dir is None:
        raise FileNotFoundError(f"model {path!r} has no tokenizer (tokenizer_config.json) and no run "
                                f"config.yaml names the model it started from")
    return _link_tokenizer(model_dir, tokenizer_dir)
