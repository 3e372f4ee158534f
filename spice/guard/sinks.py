"""Where metrics and signals go besides metrics.jsonl: TensorBoard event files in RUN_DIR/tensorboard,
and W&B or MLflow only when asked for (guard.wandb / guard.mlflow) and installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from spice.config import ConfigError, GuardConfig

Logger = Callable[[dict, int], None]


def _require(module: str, key: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{key}: asks for {module}, which is not installed (pip install {module})")


def open_sinks(cfg: GuardConfig, run_dir: Path) -> tuple[object | None, list[Logger]]:
    """A TensorBoard SummaryWriter (or None) and the loggers asked for."""
    writer = None
    if cfg.tensorboard:
        _require("tensorboard", "guard.tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    loggers: list[Logger] = []
    if cfg.wandb:
        _require("wandb", "guard.wandb")
        import wandb

        wandb_run = wandb.init(project=cfg.wandb, dir=str(run_dir), name=run_dir.name, resume="allow")
        loggers.append(lambda scalars, step: wandb_run.log(scalars, step=step))
    if cfg.mlflow:
        _require("mlflow", "guard.mlflow")
        import mlflow

        mlflow.set_experiment(cfg.mlflow)
        mlflow.start_run(run_name=run_dir.name)
        loggers.append(lambda scalars, step: mlflow.log_metrics(scalars, step=step))
    return writer, loggers
