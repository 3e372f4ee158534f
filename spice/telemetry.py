"""What a run reports: per-iteration metrics, the task audit trail, GPU readings, progress lines."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

from spice.checks import check_metrics
from spice.loop import Iteration
from spice.tasks import Task


def gpu_readings() -> dict[str, float]:
    """Memory and utilisation of each visible GPU through NVML; empty where there is none."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # NVMLError (no library, no driver) or the package missing: no GPU readings
        return {}
    readings = {}
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        readings[f"gpu{index}/memory_used_gb"] = memory.used / 1e9
        readings[f"gpu{index}/utilization"] = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    pynvml.nvmlShutdown()
    return readings


def iteration_metrics(it: Iteration, samples: int) -> dict:
    """The per-iteration row of metrics.jsonl."""
    attempts = len(it.attempts)
    valid_attempts = sum(isinstance(s.result, Task) for s in it.attempts)
    reasons = Counter(s.result.reason for s in it.attempts if not isinstance(s.result, Task))
    valid_rows = [row for row, s in enumerate(it.trained) if isinstance(s.result, Task)]
    correct_counts = [int(it.verdicts[row].sum()) for row in valid_rows]
    challenger_rewards = it.scores.challenger_rewards.tolist() if len(it.trained) else []
    challenger_lengths = [len(s.completion.token_ids) for s in it.attempts]
    reasoner_lengths = [len(c.token_ids) for group in it.answers for c in group]
    rollout_tokens = sum(challenger_lengths) + sum(reasoner_lengths)
    rollout_seconds = sum(it.seconds.get(k, 0.0) for k in ("format_selection", "challenger", "reasoner"))
    histogram = [0] * (samples + 1)
    for count in correct_counts:
        histogram[count] += 1
    return {
        "iteration": it.index,
        "documents": len(it.documents),
        "valid_task_rate": valid_attempts / attempts if attempts else 0.0,
        "documents_with_task": len(valid_rows) / len(it.documents) if it.documents else 0.0,
        "invalid_reasons": dict(sorted(reasons.items())),
        "format_choice_invalid": it.format_choice_invalid,
        # null, not 0.0, when no task was answered: "no tasks" is not "unanswerable tasks" (plots, monitors)
        "reasoner_accuracy": (sum(correct_counts) / (len(correct_counts) * samples)) if correct_counts else None,
        "challenger_reward_mean": statistics.fmean(challenger_rewards) if challenger_rewards else 0.0,
        "challenger_reward_std": statistics.pstdev(challenger_rewards) if challenger_rewards else 0.0,
        "correct_histogram": histogram,
        "challenger_length_mean": statistics.fmean(challenger_lengths) if challenger_lengths else 0.0,
        "reasoner_length_mean": statistics.fmean(reasoner_lengths) if reasoner_lengths else 0.0,
        "rollout_tokens": rollout_tokens,
        "rollout_tokens_per_second": rollout_tokens / rollout_seconds if rollout_seconds else 0.0,
        **it.train_metrics,
        **{f"weight_sync/{k}": v for k, v in it.sync_metrics.items()},
        **{f"seconds/{k}": v for k, v in it.seconds.items()},
        **check_metrics([s.check for s in it.attempts]),
        **gpu_readings(),
        "time": time.time(),
    }


def task_records(it: Iteration, weight_version: int) -> list[dict]:
    """The audit trail: one row per challenger attempt, with the reasoner's answers for kept tasks;
    `weight_version` is the version of the weights that generated the iteration (not its index)."""
    from spice.verify import extract_answer

    trained_rows = {id(s): row for row, s in enumerate(it.trained)}
    valid_rows = [row for row, s in enumerate(it.trained) if isinstance(s.result, Task)]
    answers_of = dict(zip(valid_rows, it.answers))
    records = []
    for attempt, sample in enumerate(it.attempts):
        row = trained_rows.get(id(sample))
        record = {
            "iteration": it.index, "document_id": sample.document.id, "source": sample.document.source,
            "attempt": attempt, "weight_version": weight_version, "kind": sample.kind,
            "trained": row is not None, "challenger_output": sample.completion.text,
        }
        if row is not None:
            record["challenger_reward"] = float(it.scores.challenger_rewards[row])
        if isinstance(sample.result, Task):
            task = sample.result
            record.update(status="valid", question=task.question, answer=task.answer,
                          options=list(task.options), quote=task.quote)
            if task.option_order:  # shown shuffled: the challenger wrote option option_order[i] at letter i
                record["option_order"] = list(task.option_order)
            if row in answers_of:
                rewards = it.scores.reasoner_rewards[row].tolist()
                record["reasoner"] = [
                    {"answer": extract_answer(c.text, task.kind), "reward": r,
                     "finish_reason": c.finish_reason, "weight_version": c.weight_version, "response": c.text}
                    for c, r in zip(answers_of[row], rewards)]
        else:
            record.update(status="invalid", reason=sample.result.reason, detail=sample.result.detail)
        if sample.check is not None:  # the check program, its output and verdict (spice.checks)
            record["check"] = sample.check
        if sample.versions:  # every version of a refined task (spice.refine)
            record["versions"] = sample.versions
        records.append(record)
    return records


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append rows and make them durable before returning (the checkpoint records the size after)."""
    with open(path, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def summary_line(metrics: dict, total_iterations: int) -> str:
    """The one line printed after each iteration."""
    seconds = sum(v for k, v in metrics.items() if k.startswith("seconds/"))
    accuracy = metrics["reasoner_accuracy"]
    return (f"iter {metrics['iteration'] + 1}/{total_iterations} | valid {metrics['valid_task_rate']:.2f}"
            f" | tasks {metrics['documents_with_task']:.2f} | acc {'-' if accuracy is None else f'{accuracy:.3f}'}"
            f" | r_C {metrics['challenger_reward_mean']:+.3f}±{metrics['challenger_reward_std']:.3f}"
            f" | loss {metrics.get('loss', 0.0):+.4f} | gnorm {metrics.get('grad_norm', 0.0):.3f}"
            f" | {metrics['rollout_tokens_per_second']:.1f} gen tok/s | {seconds:.1f}s")
