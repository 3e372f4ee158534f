"""Which folder `spice eval --model` evaluates: HF folders, checkpoints and run folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from spice.eval.models import resolve_eval_model
from spice.testing import tiny_model_dir


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("base") / "model")


def _run_dir(root: Path, base: Path) -> Path:
    """A run folder as training leaves it: config.yaml naming the base model, checkpoints whose
    model/ holds weights only."""
    (root / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"model": {"path": str(base)}}))
    for step in ("step_000001", "step_000002"):
        model = root / "checkpoints" / step / "model"
        model.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(base / name, model / name)
    (root / "checkpoints" / "latest").write_text("step_000002")
    return root


def test_a_hugging_face_folder_is_itself(base: Path) -> None:
    assert resolve_eval_model(str(base)) == base


def test_checkpoint_and_run_folders_get_the_base_tokenizer(base: Path, tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run", base)
    for path, step in ((run, "step_000002"), (run / "checkpoints" / "step_000001", "step_000001"),
                       (run / "checkpoints" / "step_000001" / "model", "step_000001")):
        folder = resolve_eval_model(str(path))
        assert (folder / "tokenizer_config.json").resolve() == (base / "tokenizer_config.json").resolve()
        weights = (folder / "model.safetensors").resolve()
        assert weights == (run / "checkpoints" / step / "model" / "model.safetensors").resolve()


def test_missing_model_or_tokenizer_is_a_clear_error(base: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_eval_model(str(tmp_path / "absent"))
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    shutil.copy(base / "config.json", orphan / "config.json")
    with pytest.raises(FileNotFoundError, match="has no tokenizer"):
        resolve_eval_model(str(orphan))
