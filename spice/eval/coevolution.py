"""The paper's co-evolution check: tasks written by one checkpoint's challenger from a fixed document
sample, answered by another checkpoint's reasoner; the pass rate shows whether challengers get harder
and reasoners stronger over training. `spice coevolve` runs it for every challenger x reasoner pair."""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from spice.config import ConfigError, SpiceConfig, load_config
from spice.corpus import Document
from spice.rollout.base import RolloutEngine
from spice.tasks import Task


def challenger_tasks(engine: RolloutEngine, tokenizer, documents: list[Document],
                     config: SpiceConfig) -> list[Task]:
    """One valid task per document where the challenger wrote one, with the training loop's own stages
    (format choice, `attempts_per_document` samples, parsing), seeded as iteration 0."""
    from spice import loop

    kinds, _ = loop.choose_kinds(engine, tokenizer, documents, config, 0)
    attempts = loop.generate_tasks(engine, tokenizer, documents, kinds, config, 0)
    kept = loop.keep_one_task_per_document(attempts)
    loop.shuffle_options(kept, config, 0)  # shown to every reasoner as the loop shows them
    return [s.result for s in kept if isinstance(s.result, Task)]


def reasoner_verdicts(engine: RolloutEngine, tokenizer, tasks: list[Task],
                      config: SpiceConfig) -> list[list[bool]]:
    """`config.reasoner.samples` verdicts per task: the reasoner's answers checked against the gold."""
    from spice import loop
    from spice.verify import verify_batch

    if not tasks:
        return []
    _, answers = loop.answer_tasks(engine, tokenizer, tasks, config, 0)
    flat = verify_batch([(c.text, task.answer, task.kind)
                         for task, group in zip(tasks, answers) for c in group])
    verdicts, position = [], 0
    for group in answers:
        verdicts.append([bool(v) for v in flat[position:position + len(group)]])
        position += len(group)
    return verdicts


def pass_rate(verdicts: list[list[bool]]) -> float | None:
    """Mean correctness over tasks and samples; None without tasks."""
    flat = [v for group in verdicts for v in group]
    return statistics.fmean(flat) if flat else None


def pass_rate_error(verdicts: list[list[bool]]) -> float | None:
    """Standard error of pass_rate over tasks (a task's answers are not independent of each other: the
    spread of the tasks' pass fractions, not of the single answers); None for fewer than two tasks."""
    fractions = [statistics.fmean(group) for group in verdicts if group]
    if len(fractions) < 2:
        return None
    return statistics.stdev(fractions) / len(fractions) ** 0.5


def sample_documents(config: SpiceConfig, tokenizer, count: int, seed: int) -> list[Document]:
    """`count` segments of the config's corpus, a pure function of `seed` (the same for every model)."""
    from spice.corpus import load_corpus
    from spice.embedded import resolve_corpus_path

    corpus = load_corpus(resolve_corpus_path(config.corpus.path), text_field=config.corpus.text_field,
                         limit=config.corpus.limit)
    return corpus.segmented(tokenizer, config.corpus.max_segment_tokens).sample(count, seed, 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice coevolve`."""
    parser.add_argument("--challenger", nargs="+", required=True, metavar="CKPT",
                        help="model(s) whose challenger writes the tasks: HF folder, 'embedded', "
                        "checkpoint or run folder")
    parser.add_argument("--reasoner", nargs="+", required=True, metavar="CKPT",
                        help="model(s) whose reasoner answers every challenger's tasks")
    parser.add_argument("--documents", type=int, default=32, help="documents in the fixed sample")
    parser.add_argument("--samples", type=int,
                        help="answers per task (default: the config's reasoner.samples)")
    parser.add_argument("--temperature", type=float, help="reasoner temperature (default: the config's)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the document sample and the decoding")
    parser.add_argument("--config", help="YAML config (corpus, challenger, reasoner, rollout sections)")
    parser.add_argument("--output", default="runs/coevolution.json", help="JSON file with tasks and verdicts")
    parser.add_argument("--picture", help="also draw the pass-rate matrix to this PNG file (a heatmap)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def _load(config: SpiceConfig, path: str):
    from spice.eval.models import resolve_eval_model
    from spice.run import make_rollout_engine

    model_dir = resolve_eval_model(path)
    return make_rollout_engine(config, model_dir)


def _table(challengers: list[str], reasoners: list[str], rates: dict[str, dict[str, float | None]],
           errors: dict[str, dict[str, float | None]] | None = None) -> str:
    """The matrix as text; a cell is the pass rate and, with `errors`, its standard error over tasks."""
    def cell(c: str, r: str) -> str:
        if rates[c][r] is None:
            return "-"
        error = (errors or {}).get(c, {}).get(r)
        return f"{100 * rates[c][r]:.1f}%" + ("" if error is None else f" ± {100 * error:.1f}")

    corner = "challenger \\ reasoner"
    width = max(len(corner), *(len(c) for c in challengers))
    lines = [f"{corner:<{width}}  " + "  ".join(f"{r:>14}" for r in reasoners)]
    for c in challengers:
        lines.append(f"{c:<{width}}  " + "  ".join(f"{cell(c, r):>14}" for r in reasoners))
    return "\n".join(lines)


def draw_matrix(challengers: list[str], reasoners: list[str], rates: dict[str, dict[str, float | None]],
                tasks: dict[str, int], path: str | Path) -> Path:
    """The pass-rate matrix as a heatmap PNG (rows: challengers with their task counts; empty cells grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[np.nan if rates[c][r] is None else 100 * rates[c][r] for r in reasoners]
                       for c in challengers], dtype=float)
    figure, axes = plt.subplots(figsize=(1.8 + 1.6 * len(reasoners), 1.2 + 0.9 * len(challengers)))
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100)
    image.cmap.set_bad("lightgrey")
    for i in range(len(challengers)):
        for j in range(len(reasoners)):
            text = "-" if np.isnan(values[i, j]) else f"{values[i, j]:.1f}%"
            axes.text(j, i, text, ha="center", va="center", color="white" if values[i, j] < 60 else "black")
    axes.set_xticks(range(len(reasoners)), [Path(r).name for r in reasoners], rotation=20)
    axes.set_yticks(range(len(challengers)), [f"{Path(c).name} ({tasks[c]} tasks)" for c in challengers])
    axes.set_xlabel("reasoner")
    axes.set_ylabel("challenger")
    axes.set_title("pass rate of each reasoner on each challenger's tasks")
    figure.colorbar(image, ax=axes, label="pass rate %")
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def run(args: argparse.Namespace) -> int:
    """Generate each challenger's tasks, let each reasoner answer them, print the pass-rate matrix."""
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"spice coevolve: {error}", file=sys.stderr)
        return 2
    if args.documents < 1:
        print(f"spice coevolve: --documents must be at least 1, got {args.documents}", file=sys.stderr)
        return 2
    config = copy.deepcopy(config)
    config.run.seed = args.seed
    if args.samples is not None:
        config.reasoner.samples = args.samples
    if args.temperature is not None:
        config.reasoner.temperature = args.temperature
    try:
        from spice.eval.models import resolve_eval_model

        for path in args.challenger + args.reasoner:
            resolve_eval_model(path)
    except FileNotFoundError as error:
        print(f"spice coevolve: {error}", file=sys.stderr)
        return 2
    tasks_of: dict[str, list[Task]] = {}
    documents: list[Document] | None = None
    for challenger in args.challenger:
        engine = _load(config, challenger)
        try:
            if documents is None:
                documents = sample_documents(config, engine.tokenizer, args.documents, args.seed)
            tasks_of[challenger] = challenger_tasks(engine, engine.tokenizer, documents, config)
        finally:
            engine.close()
        print(f"spice coevolve: challenger {challenger}: {len(tasks_of[challenger])} valid tasks from "
              f"{len(documents)} documents", file=sys.stderr)
    verdicts: dict[str, dict[str, list[list[bool]]]] = {c: {} for c in args.challenger}
    for reasoner in args.reasoner:
        engine = _load(config, reasoner)
        try:
            for challenger, tasks in tasks_of.items():
                verdicts[challenger][reasoner] = reasoner_verdicts(engine, engine.tokenizer, tasks, config)
        finally:
            engine.close()
    rates = {c: {r: pass_rate(v) for r, v in row.items()} for c, row in verdicts.items()}
    errors = {c: {r: pass_rate_error(v) for r, v in row.items()} for c, row in verdicts.items()}
    result: dict[str, Any] = {
        "documents": [d.id for d in documents or []], "seed": args.seed, "samples": config.reasoner.samples,
        "temperature": config.reasoner.temperature, "pass_rates": rates, "pass_rate_errors": errors,
        "tasks": {c: [{"question": t.question, "answer": t.answer, "kind": t.kind, "options": list(t.options),
                       "doc_id": t.doc_id, "verdicts": {r: verdicts[c][r][i] for r in args.reasoner}}
                      for i, t in enumerate(tasks)] for c, tasks in tasks_of.items()},
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(_table(args.challenger, args.reasoner, rates, errors))
    print(f"tasks and verdicts: {output}")
    if args.picture:
        counts = {c: len(tasks) for c, tasks in tasks_of.items()}
        print(f"picture: {draw_matrix(args.challenger, args.reasoner, rates, counts, args.picture)}")
    return 0
