"""The guard of a run: the run driver calls it once per iteration after the records are written.

It chains the records, computes the monitor signals, applies the policy's rules (events to
events.jsonl and the terminal), writes the iteration's manifest, waits on `pause`, and answers what the
driver must do: continue, stop, or roll back to the last checkpoint that passed every rule. It touches
the policy only through the logprobs function and the checkpoints the driver hands it.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spice.config import SpiceConfig
from spice.guard import monitors, policy
from spice.guard.drift import load_probe, measure, probe_batch, reference_logprobs, save_probe
from spice.guard.provenance import code_version, config_sha256, corpus_sha256
from spice.guard.records import (
    CHAIN_KEY,
    append_rows,
    audit_key,
    chain_tail,
    current_rows,
    read_rows,
    reanchor,
)

# the signals the monitors compute each iteration; a rule may also name any numeric metrics.jsonl key
SIGNALS = ("valid_task_rate", "reasoner_accuracy", "answer_leak_rate", "duplicate_rate", "challenger_length_mean",
           "reasoner_length_mean", "challenger_reward_mean", "grad_norm", "eval_regression", "policy_kl",
           "evaluator_disagreement")
# files truncated to the checkpoint on resume and superseded by a rollback (documents.jsonl is a
# content-addressed store and events.jsonl the history: both only grow)
ITERATION_FILES = ("tasks.jsonl", "metrics.jsonl", "manifests.jsonl")
APPROVE = "APPROVE"


@dataclass
class Verdict:
    """What the driver does after an iteration: continue (none / log), pause was waited, stop, rollback."""

    action: str = "none"
    then: str = "continue"
    reasons: list[str] = field(default_factory=list)

    @property
    def stop(self) -> bool:
        return self.action == "stop"

    @property
    def rollback(self) -> bool:
        return self.action == "rollback"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def reseed(base_seed: int, rollbacks: int) -> int:
    """The run seed after `rollbacks` rollbacks: redone iterations draw new documents and samples (the
    same draws would repeat the same failure)."""
    return base_seed if rollbacks == 0 else random.Random(f"{base_seed}/rollback/{rollbacks}").randrange(2**31)


class Guard:
    """Per-run oversight state; every rank holds one, rank 0 (`main`) writes."""

    def __init__(self, config: SpiceConfig, run_dir: Path, main: bool = True, share=lambda value: value) -> None:
        """`share(value)` returns rank 0's value on every rank (the driver's broadcast; identity alone)."""
        self.config, self.run_dir, self.main, self.share = config, Path(run_dir), main, share
        self.cfg = config.guard
        self.rules = policy.parse_rules(self.cfg.rules)
        self.key = audit_key()
        self.base_seed = config.run.seed
        self.rollbacks, self.tainted, self.last_clean = 0, False, None
        self.history: list[dict] = []  # the signals of earlier current iterations
        self.metrics_history: list[dict] = []
        self.recent_questions: list[list[str]] = []
        self.seen_documents: set[str] = set()
        self.written: dict[str, tuple[list[dict], list[dict]]] = {}  # file -> (rows, links) of this iteration
        self.probe, self.reference, self.drift_on = None, None, False
        self.evaluator, self.writer, self.loggers = None, None, []
        self.corpus_hash: str | None = None

    # ------------------------------------------------------------------ start, records
    def start(self, saved: dict | None, corpus_path: Path | None = None) -> None:
        """After the driver restored (or did not find) a checkpoint: align the guard's own files with it,
        re-anchor the chains and rebuild the history the rules look back on."""
        if saved is not None:
            self.rollbacks = int(saved.get("guard_rollbacks", 0))
            self.tainted = not saved.get("guard_clean", True)
        self.config.run.seed = reseed(self.base_seed, self.rollbacks)
        if not self.main:
            return
        manifests = self.run_dir / "manifests.jsonl"
        size = saved.get("manifests_bytes", 0) if saved is not None else 0
        if manifests.exists() and manifests.stat().st_size > size:
            with open(manifests, "r+b") as handle:
                handle.truncate(size)
        reanchor(self.run_dir, key=self.key)
        if saved is not None:
            self._record_unrecorded_latest()
        self._rebuild()
        self.seen_documents = {r["id"] for r in read_rows(self.run_dir / "documents.jsonl")}
        self.last_clean = self._last_clean_name()
        if corpus_path is not None:
            self.corpus_hash = corpus_sha256(Path(corpus_path))
        self._open_sinks()
        if self.cfg.evaluator:
            from spice.embedded import resolve_model_path
            from spice.guard.evaluator import evaluator_engine

            self.evaluator = evaluator_engine(self.cfg.evaluator, resolve_model_path(self.config.model.path),
                                              self.config.model.dtype, self.base_seed)
        rows = {name: chain_tail(self.run_dir / name)[0] for name in ITERATION_FILES}
        self.event({"event": "resume" if saved is not None else "start", "rows": rows,
                    "next_iteration": saved["next_iteration"] if saved else 0, "code": code_version(),
                    "config_sha256": config_sha256(self.run_dir), "seed": self.config.run.seed})

    def _record_unrecorded_latest(self) -> None:
        """A run killed between writing a checkpoint and recording its hash: record it now, noted."""
        from spice.checkpoint import latest_checkpoint
        from spice.guard.rollback import checkpoint_events, record_checkpoint

        latest = latest_checkpoint(self.run_dir)
        if latest is not None and latest.name not in checkpoint_events(self.run_dir, abandoned_too=True):
            record_checkpoint(self.run_dir, latest, self.key, note="recorded on resume (killed before recording)")

    def _rebuild(self) -> None:
        manifests = current_rows(self.run_dir, "manifests.jsonl")
        self.history = [m.get("signals", {}) for m in manifests]
        self.recent_questions = [m.get("questions", []) for m in manifests][-self.cfg.duplicate_window:]
        self.metrics_history = [{k: v for k, v in m.items() if k != CHAIN_KEY}
                                for m in current_rows(self.run_dir, "metrics.jsonl")]

    def record(self, name: str, rows: list[dict]) -> None:
        """Append rows to a chained record file (rank 0); the guard keeps them for this iteration."""
        if self.main:
            self.written[name] = (rows, append_rows(self.run_dir, name, rows, self.key))

    def event(self, row: dict) -> None:
        if self.main:
            append_rows(self.run_dir, "events.jsonl", [{**row, "time": time.time()}], self.key)

    def _open_sinks(self) -> None:
        from spice.guard.sinks import open_sinks

        self.writer, self.loggers = open_sinks(self.cfg, self.run_dir)

    # ------------------------------------------------------------------ drift
    def prepare_drift(self, engine, tokenizer, documents: list, logprobs, weight_version: int) -> None:
        """The probe set and the initial model's logprobs of it; every rank calls it. A fresh run samples
        it now (weights still initial); a resumed run loads it from guard/probe.safetensors."""
        if not self.cfg.drift_every:
            return
        path = self.run_dir / "guard" / "probe.safetensors"
        batch = None
        if self.share(path.is_file() if self.main else None):
            self.drift_on = True
            if self.main:
                self.probe, self.reference = load_probe(path)
            return
        if self.main and weight_version == 0:
            chosen = sorted(documents, key=lambda d: d.id)[:self.cfg.drift_probes]
            batch = probe_batch(engine, tokenizer, chosen, self.cfg.drift_probe_tokens, self.base_seed)
        elif self.main:
            print(f"spice guard: {path} is missing and the weights are no longer the initial ones; policy "
                  "drift is not measured in this run", file=sys.stderr)
        self.drift_on = bool(self.share(batch is not None if self.main else None))
        reference = reference_logprobs(batch, logprobs, self.share) if self.drift_on else None
        if self.main and batch is not None:
            save_probe(path, batch, reference)
            self.probe, self.reference = batch, reference

    def measure_drift(self, logprobs, index: int) -> float | None:
        """KL from the initial model every `drift_every` iterations (all ranks call it)."""
        if not self.drift_on or (index + 1) % self.cfg.drift_every:
            return None
        return measure(self.probe if self.main else None, self.reference, logprobs, self.share)

    # ------------------------------------------------------------------ one iteration
    def signals(self, iteration, metrics: dict, drift: float | None) -> dict:
        """Every monitor's value for this iteration (NaN where there is nothing to measure)."""
        task_rows = self.written.get("tasks.jsonl", ([], []))[0]
        questions = [r["question"] for r in task_rows if r.get("status") == "valid"]
        recent = [q for group in self.recent_questions[-self.cfg.duplicate_window:] for q in group]
        values = {
            "valid_task_rate": monitors.valid_task_rate(metrics),
            "reasoner_accuracy": monitors.reasoner_accuracy(metrics),
            "answer_leak_rate": monitors.answer_leak_rate(task_rows),
            "duplicate_rate": monitors.duplicate_rate(questions, recent, self.cfg.duplicate_threshold),
            "eval_regression": monitors.eval_regression(metrics, self.metrics_history),
            "policy_kl": drift if drift is not None else monitors.NAN,
        }
        for key in ("challenger_length_mean", "reasoner_length_mean", "challenger_reward_mean", "grad_norm"):
            values[key] = float(metrics.get(key, monitors.NAN))
        values["evaluator_disagreement"] = monitors.NAN
        numeric = {k: _number(v) for k, v in metrics.items() if _number(v) is not None}
        return {**numeric, **{k: _number(v) for k, v in values.items()}}

    def _evaluate(self, iteration, task_rows: list[dict]) -> list[dict]:
        from spice.guard.evaluator import judge, sample_tasks

        rows = sample_tasks(task_rows, self.cfg.evaluator_samples, self.base_seed, iteration.index)
        documents = {d.id: d.text for d in iteration.documents}
        return judge(self.evaluator, self.evaluator.tokenizer, rows, documents, self.cfg.evaluator_max_new_tokens)

    def observe(self, iteration, metrics: dict, drift: float | None = None, stop_requested=lambda: False,
                weight_version: int = 0) -> Verdict:
        """Monitors, rules, events, the manifest; waits when a rule pauses. Rank 0 only."""
        task_rows, task_links = self.written.get("tasks.jsonl", ([], []))
        signals = self.signals(iteration, metrics, drift)
        judged = []
        if self.evaluator is not None:
            judged = self._evaluate(iteration, task_rows)
            signals["evaluator_disagreement"] = _number(monitors.disagreement([j["agrees"] for j in judged]))
        firings = policy.evaluate(self.rules, signals, self.history)
        self._write_documents(iteration.documents)
        metric_links = self.written.get("metrics.jsonl", ([], []))[1]
        questions = [r["question"] for r in task_rows if r.get("status") == "valid"]
        append_rows(self.run_dir, "manifests.jsonl", [{
            "iteration": iteration.index, "weight_version": weight_version, "seed": self.config.run.seed,
            "config_sha256": config_sha256(self.run_dir), "code": code_version(),
            "corpus": {"path": self.config.corpus.path, "sha256": self.corpus_hash},
            "documents": [{"id": d.id, "source": d.source} for d in iteration.documents],
            "tasks": {"first_row": task_links[0]["n"] if task_links else None,
                      "sha256": [self._content(r) for r in task_rows]},
            "metrics_row": metric_links[0]["n"] if metric_links else None,
            "questions": questions, "signals": signals, "evaluator": judged,
            "firings": [f.rule.name for f in firings]}], self.key)
        self.history.append(signals)
        self.metrics_history.append(metrics)
        self.recent_questions = [*self.recent_questions, questions][-self.cfg.duplicate_window:]
        self._log_sinks(iteration.index, signals)
        self.written = {}
        return self._act(iteration.index, firings, stop_requested)

    @staticmethod
    def _content(row: dict) -> str:
        from spice.guard.records import content_hash

        return content_hash(row)

    def _write_documents(self, documents: list) -> None:
        new = [d for d in {d.id: d for d in documents}.values() if d.id not in self.seen_documents]
        if new:
            append_rows(self.run_dir, "documents.jsonl", [
                {"id": d.id, "source": d.source, "text": d.text, "metadata": d.metadata} for d in new], self.key)
            self.seen_documents.update(d.id for d in new)

    def _log_sinks(self, index: int, signals: dict) -> None:
        scalars = {k: v for k, v in signals.items() if v is not None}
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, index + 1)
            self.writer.flush()
        for log in self.loggers:
            log(scalars, index + 1)

    def _act(self, index: int, firings: list[policy.Firing], stop_requested) -> Verdict:
        verdict = Verdict()
        for firing in firings:
            rule = firing.rule
            print(f"spice guard: iteration {index + 1}: rule {rule.name!r} fired ({firing.detail}) -> {rule.action}",
                  file=sys.stderr, flush=True)
            self.event({"event": "firing", "iteration": index, "rule": rule.name, "monitor": rule.monitor,
                        "value": firing.value, "action": rule.action, "detail": firing.detail})
        if not firings:
            return verdict
        top = firings[0].rule
        verdict = Verdict(top.action, top.then, [f"{f.rule.name}: {f.detail}" for f in firings])
        if verdict.action != "log":
            self.tainted = True
        if verdict.rollback and self.rollbacks >= self.cfg.max_rollbacks:
            print(f"spice guard: {self.rollbacks} rollbacks already (guard.max_rollbacks); stopping instead",
                  file=sys.stderr, flush=True)
            verdict = Verdict("stop", reasons=[*verdict.reasons, "guard.max_rollbacks reached"])
        if verdict.action == "pause":
            verdict = self._pause(index, verdict, stop_requested)
        if verdict.stop:
            self.event({"event": "stop", "iteration": index, "reasons": verdict.reasons})
        return verdict

    def _pause(self, index: int, verdict: Verdict, stop_requested) -> Verdict:
        approve, stop_file = self.run_dir / APPROVE, self.run_dir / "STOP"
        self.event({"event": "pause", "iteration": index, "reasons": verdict.reasons})
        print(f"spice guard: paused after iteration {index + 1}; continue with `spice approve {self.run_dir} "
              f"--by NAME` (or create {approve}); stop with {stop_file}", file=sys.stderr, flush=True)
        while True:
            if approve.exists():
                text = approve.read_text().strip()
                try:
                    by = json.loads(text).get("by", "unknown") if text.startswith("{") else (text or "unknown")
                except json.JSONDecodeError:
                    by = text
                approve.unlink()
                self.event({"event": "approval", "iteration": index, "by": by, "scope": "pause"})
                print(f"spice guard: approved by {by}; continuing", file=sys.stderr, flush=True)
                self.tainted = False
                return Verdict("log", reasons=verdict.reasons)
            if stop_requested() or stop_file.exists():
                return Verdict("stop", reasons=[*verdict.reasons, "stopped while paused"])
            time.sleep(self.cfg.pause_poll_seconds)

    # ------------------------------------------------------------------ checkpoints and rollback
    def needs_baseline(self) -> bool:
        """Whether a fresh run saves step_000000 (the initial weights) as a rollback target."""
        return any(rule.action == "rollback" for rule in self.rules)

    def loop_state(self) -> dict:
        """What a checkpoint's loop_state.json carries for the guard."""
        manifests = self.run_dir / "manifests.jsonl"
        return {"guard_clean": not self.tainted, "guard_rollbacks": self.rollbacks,
                "manifests_bytes": manifests.stat().st_size if manifests.exists() else 0}

    def protected(self) -> tuple[str, ...]:
        return (self.last_clean,) if self.last_clean else ()

    def saved(self, path: Path) -> None:
        """Record a checkpoint's file hashes (and whether it passed every rule) in events.jsonl."""
        from spice.guard.rollback import record_checkpoint

        if self.main and record_checkpoint(self.run_dir, path, self.key)["clean"]:
            self.last_clean = path.name

    def _last_clean_name(self) -> str | None:
        from spice.guard.rollback import clean_checkpoints

        clean = clean_checkpoints(self.run_dir)
        return clean[-1] if clean else None

    def roll_back(self, weight_version: int, reasons: list[str]) -> Path | None:
        """Rank 0: mark the rows after the last clean checkpoint superseded and point `latest` at it;
        the driver then restores it. None when no checkpoint passed every rule."""
        from spice.guard.rollback import clean_checkpoints, mark_rollback

        clean = clean_checkpoints(self.run_dir)
        if not clean:
            print("spice guard: no checkpoint passed every rule; stopping instead of rolling back",
                  file=sys.stderr, flush=True)
            self.event({"event": "stop", "reasons": [*reasons, "no clean checkpoint to roll back to"]})
            return None
        target = self.run_dir / "checkpoints" / clean[-1]
        self.rollbacks += 1
        mark_rollback(self.run_dir, target, weight_version + 1, self.rollbacks, reasons, by="guard", key=self.key)
        self.tainted = False
        self.config.run.seed = reseed(self.base_seed, self.rollbacks)
        self._rebuild()
        self.last_clean = target.name
        return target

    def after_rollback(self, rollbacks: int) -> None:
        """Other ranks follow rank 0's rollback count (the seed of the redone iterations)."""
        self.rollbacks = rollbacks
        self.config.run.seed = reseed(self.base_seed, rollbacks)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.evaluator is not None:
            self.evaluator.close()
