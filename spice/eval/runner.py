"""Evaluate a model served by any `RolloutEngine` on benchmarks with the paper's protocol: zero-shot,
the reasoner's prompt, greedy by default or the mean over K samples at a temperature."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from spice.config import EvalConfig
from spice.eval.benchmarks import Benchmark, Item, load_benchmark, subset
from spice.eval.scoring import item_prompt, judge
from spice.rollout.base import Completion, RolloutEngine, SamplingParams, per_prompt, sample_seed


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _resolve(benchmarks: Sequence[str | Benchmark]) -> list[Benchmark]:
    resolved = [b if isinstance(b, Benchmark) else load_benchmark(b) for b in benchmarks]
    names = [b.name for b in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"benchmark {duplicates[0]!r} is given twice")
    return resolved


def _records(tokenizer, benchmark: Benchmark, items: list[Item], prompts: list[list[int]],
             groups: list[list[Completion]]) -> list[dict[str, Any]]:
    """Judge every answer of one benchmark; one record per item."""
    pairs = [(c.text, item) for item, group in zip(items, groups) for c in group]
    verdicts = iter(judge(pairs))
    records = []
    for item, prompt, group in zip(items, prompts, groups):
        answers = []
        for completion in group:
            verdict = next(verdicts)
            answers.append({"response": completion.text, "extracted": verdict.extracted,
                            "correct": verdict.correct, "finish_reason": completion.finish_reason,
                            "tokens": len(completion.token_ids)})
        records.append({
            "id": item.id, "question": item.question, "choices": list(item.choices), "gold": item.answer,
            "kind": item.kind, "prompt": tokenizer.decode(prompt),
            "score": statistics.fmean(a["correct"] for a in answers) if answers else 0.0,
            "samples": answers,
        })
    return records


def evaluate(engine: RolloutEngine, tokenizer, benchmarks: Sequence[str | Benchmark],
             limit: int | None = None, samples: int = 1, temperature: float = 0.0,
             max_new_tokens: int = 512, *, top_p: float = 1.0,
             prompt_style: str = "paper", seed: int = 0,
             log: Callable[[str], None] | None = _stderr, output: str | Path | None = None) -> dict[str, Any]:
    """Score `engine` on each benchmark (name, `name=path.jsonl` or a loaded `Benchmark`).

    Each benchmark uses `limit` items (a fixed-seed subset, all when None); each item is answered
    `samples` times and scores the mean of its verdicts. Every item of every benchmark goes to the engine
    in one request (the engine batches), then a line per benchmark. Returns the settings,
    per-benchmark scores, their mean and per-item records; writes them as JSON to `output`."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if samples > 1 and temperature <= 0:
        raise ValueError(f"samples={samples} needs a temperature above 0 (greedy answers are all the same)")
    loaded = _resolve(benchmarks)
    sampling = SamplingParams(n=samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                              seed=seed if temperature > 0 else None)
    chosen: list[tuple[Benchmark, list[Item], list[list[int]]]] = []
    prompts, params = [], []
    for benchmark in loaded:
        if log is not None:
            for problem in benchmark.skipped:
                log(f"[eval] skipped {problem}")
        items = subset(benchmark.items, limit, seed)
        chosen.append((benchmark, items, [item_prompt(tokenizer, item, prompt_style, benchmark.name)
                                          for item in items]))
        prompts += chosen[-1][2]
        own = sampling if sampling.seed is None else replace(sampling, seed=sample_seed(sampling.seed, benchmark.name))
        params += per_prompt(own, len(items))  # a benchmark's seeds do not depend on the others chosen
    if log is not None:
        log(f"[eval] generating {len(prompts)} items x {samples} samples in one request")
    started = time.perf_counter()
    groups = engine.generate(prompts, params) if prompts else []
    generated = time.perf_counter() - started
    results: dict[str, dict[str, Any]] = {}
    offset = 0
    for benchmark, items, item_prompts in chosen:
        judged = time.perf_counter()
        records = _records(tokenizer, benchmark, items, item_prompts, groups[offset:offset + len(items)])
        offset += len(items)
        score = statistics.fmean(r["score"] for r in records) if records else None
        results[benchmark.name] = {
            "score": score, "items": len(records), "total_items": len(benchmark.items),
            "source": benchmark.source, "skipped": benchmark.skipped,
            "judge_seconds": round(time.perf_counter() - judged, 2), "records": records}
        if log is not None:
            log(f"[eval] {benchmark.name}: {len(records)}/{len(items)} items | score "
                f"{'-' if score is None else f'{score:.3f}'} | {time.perf_counter() - started:.0f}s elapsed")
    scores = {name: r["score"] for name, r in results.items()}
    scored = [s for s in scores.values() if s is not None]
    result = {
        "settings": {"limit": limit, "samples": samples, "temperature": temperature, "top_p": top_p,
                     "max_new_tokens": max_new_tokens, "prompt_style": prompt_style, "seed": seed},
        "scores": scores,
        "mean": statistics.fmean(scored) if scored else None,
        "generate_seconds": round(generated, 2),  # the one request for every benchmark's items
        "benchmarks": results,
    }
    if output is not None:
        write_result(result, output)
    return result


def rescore(result: dict[str, Any]) -> dict[str, Any]:
    """Judge the saved responses of an `evaluate` result again with the current verifier (after a
    verifier fix, without generating again) and recompute the scores; changes `result` in place."""
    for bench in result["benchmarks"].values():
        records = bench["records"]
        pairs = [(sample["response"], Item(r["id"], r["question"], r["gold"], r["kind"], tuple(r["choices"])))
                 for r in records for sample in r["samples"]]
        verdicts = iter(judge(pairs))
        for record in records:
            for sample in record["samples"]:
                verdict = next(verdicts)
                sample.update(extracted=verdict.extracted, correct=verdict.correct)
            samples = record["samples"]
            record["score"] = statistics.fmean(s["correct"] for s in samples) if samples else 0.0
        bench["score"] = statistics.fmean(r["score"] for r in records) if records else None
    result["scores"] = {name: b["score"] for name, b in result["benchmarks"].items()}
    scored = [s for s in result["scores"].values() if s is not None]
    result["mean"] = statistics.fmean(scored) if scored else None
    return result


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    """Write an `evaluate` result as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    tmp.replace(path)
    return path


def format_table(result: dict[str, Any]) -> str:
    """The terminal table: one row per benchmark (score in %), then the mean."""
    settings = result["settings"]
    width = max([len("benchmark"), len("mean")] + [len(n) for n in result["benchmarks"]])
    lines = [f"{'benchmark':<{width}}  {'items':>6}  {'samples':>7}  {'score %':>7}  {'skipped':>7}",
             "-" * (width + 38)]

    def percent(value: float | None) -> str:
        return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"

    for name, r in result["benchmarks"].items():
        lines.append(f"{name:<{width}}  {r['items']:>6}  {settings['samples']:>7}  {percent(r['score']):>7}"
                     f"  {len(r['skipped']):>7}")
    lines.append("-" * (width + 38))
    lines.append(f"{'mean':<{width}}  {'':>6}  {'':>7}  {percent(result['mean']):>7}")
    mode = ("greedy" if settings["temperature"] <= 0
            else f"mean of {settings['samples']} at temperature {settings['temperature']}")
    lines.append(f"({mode}, max_new_tokens {settings['max_new_tokens']}, "
                 f"prompt style {settings['prompt_style']})")
    return "\n".join(lines)


def evaluate_during_training(engine: RolloutEngine, tokenizer, config: EvalConfig, *,
                             prompt_style: str = "paper", seed: int = 0, output: str | Path | None = None,
                             log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Run `config`'s benchmarks and return flat metrics for metrics.jsonl: {"eval/<name>": score,
    "eval/mean": ...}; the full records go to `output` when given."""
    result = evaluate(engine, tokenizer, config.benchmarks, limit=config.limit, samples=config.samples,
                      temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                      prompt_style=prompt_style, seed=seed, log=log, output=output)
    metrics = {f"eval/{name}": score for name, score in result["scores"].items() if score is not None}
    if result["mean"] is not None:
        metrics["eval/mean"] = result["mean"]
    return metrics
