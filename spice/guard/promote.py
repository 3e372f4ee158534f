"""`spice promote RUN_DIR --step N`: export a checkpoint's Hugging Face folder to a releases folder, only
when the run passes `spice audit`, a recorded approval names this checkpoint's content hash, and the
configured evaluation thresholds (guard.promote_min_delta) pass against the base model. Otherwise one
line says why, exit 2."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from spice.config import SpiceConfig, load_config
from spice.guard.approve import checkpoint_name
from spice.guard.audit import audit
from spice.guard.provenance import checkpoint_files, code_version, config_sha256, digest_of
from spice.guard.records import append_rows, audit_key, read_rows


class Refused(Exception):
    """Promotion refused; the message is the one line printed."""


def approval_of(run_dir: Path, name: str, digest: str) -> dict | None:
    """The latest approval for promotion of checkpoint `name` with content hash `digest`."""
    found = None
    for event in read_rows(run_dir / "events.jsonl"):
        if (event.get("event") == "approval" and event.get("scope") == "promotion"
                and event.get("checkpoint") == name and event.get("checkpoint_sha256") == digest):
            found = event
    return found


def scores(config: SpiceConfig, model: Path, output: Path) -> dict:
    """Benchmark scores of `model` under the run's eval settings, evaluated now (a score file left in
    the folder is never trusted); the full result goes to `output`."""
    from transformers.utils import logging

    from spice.eval.runner import evaluate
    from spice.rollout.hf import HFRolloutEngine

    logging.disable_progress_bar()  # the refusal or success stays the one line on the terminal
    engine = HFRolloutEngine(model, dtype=config.model.dtype, seed=config.run.seed)
    try:
        result = evaluate(engine, engine.tokenizer, config.eval.benchmarks, limit=config.eval.limit,
                          samples=config.eval.samples, temperature=config.eval.temperature,
                          max_new_tokens=config.eval.max_new_tokens, prompt_style=config.challenger.prompt_style,
                          seed=config.run.seed, log=None, output=output)
    finally:
        engine.close()
    return {**{name: s for name, s in result["scores"].items() if s is not None}, "mean": result["mean"]}


def check_thresholds(found: dict, base: dict, thresholds: dict[str, float]) -> list[str]:
    """Each threshold `name: d` requires score - base score >= d; returns what falls short."""
    failures = []
    for name, least in thresholds.items():
        key = name.removeprefix("eval/")
        got, ref = found.get(key), base.get(key)
        if got is None or ref is None:
            failures.append(f"{key}: no score (benchmarks: {', '.join(k for k in found if k != 'mean')})")
        elif got - ref < least:
            failures.append(f"{key} {got:.3f} vs base {ref:.3f} (delta {got - ref:+.3f} < required {least:+.3f})")
    return failures


def promote(run_dir: Path, name: str, releases: Path) -> Path:
    """The gate and the export; raises Refused with the reason."""
    key = audit_key()
    result = audit(run_dir, key)
    if not result.ok:
        raise Refused(f"the run does not pass `spice audit`: {result.problem}")
    path = run_dir / "checkpoints" / name
    if not (path / "model" / "config.json").is_file():
        raise Refused(f"{path} is not a checkpoint with a model/ folder")
    digest = digest_of(checkpoint_files(path))
    approval = approval_of(run_dir, name, digest)
    if approval is None:
        raise Refused(f"no recorded approval of {name} (sha256 {digest[:16]}); record one with "
                      f"`spice approve {run_dir} --step {name} --by NAME`")
    config = load_config(run_dir / "config.yaml")
    from spice.embedded import resolve_model_path

    base = scores(config, resolve_model_path(config.model.path), run_dir / "eval" / "promote_base.json")
    found = scores(config, path / "model", run_dir / "eval" / f"promote_{name}.json")
    failures = check_thresholds(found, base, config.guard.promote_min_delta)
    if failures:
        raise Refused(f"{name} is below the promotion thresholds (guard.promote_min_delta): {'; '.join(failures)}")
    target = releases / f"{run_dir.resolve().name}-{name}"
    if target.exists():
        raise Refused(f"{target} already exists")
    shutil.copytree(path / "model", target)
    provenance = {"run_dir": str(run_dir.resolve()), "checkpoint": name, "checkpoint_sha256": digest,
                  "approval": approval, "scores": found, "base_scores": base,
                  "thresholds": config.guard.promote_min_delta, "code": code_version(),
                  "config_sha256": config_sha256(run_dir), "audit": result.summary(), "time": time.time()}
    (target / "provenance.json").write_text(json.dumps(provenance, indent=1))
    append_rows(run_dir, "events.jsonl", [{"event": "promoted", "checkpoint": name, "checkpoint_sha256": digest,
                                           "to": str(target), "scores": found, "time": time.time()}], key)
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--step", required=True, help="the checkpoint to promote (N or step_N)")
    parser.add_argument("--to", help="releases folder (default RUN_DIR/releases)")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    try:
        name = checkpoint_name(args.step)
        target = promote(run_dir, name, Path(args.to) if args.to else run_dir / "releases")
    except (Refused, ValueError) as error:
        print(f"spice promote: refused: {error}", file=sys.stderr)
        return 2
    print(f"spice promote: {name} exported to {target}")
    return 0
