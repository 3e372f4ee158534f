"""`spice bench levers`: what each setting changes in a run's learning signal, on the same documents.

Runs the rollout half of the given iterations (documents, tasks, answers, verdicts, rewards; no update)
for each variant of a config and reports per iteration: the valid-task share, documents with a task,
reasoner accuracy, whether the batch has a non-zero advantage (a non-zero gradient needs one), and the
seconds; every challenger attempt is also re-parsed under each grounding mode. With `--run`, the same
re-parsing over a finished run's `tasks.jsonl` (no generation): valid attempts per grounding mode, over
all attempts and over the first round only (what one round of `attempts_per_document` would have had).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from spice import loop
from spice.config import SpiceConfig, load_config
from spice.tasks import GROUNDING_MODES, Task, parse_task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench levers`."""
    parser.add_argument("--config", default="examples/cpu_demo.yaml", help="the run config the variants change")
    parser.add_argument("--iterations", default="0,1,2", help="iteration indices (their documents and seeds)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,key=value",
                        help="a named set of overrides (repeatable); the config itself is always the first row")
    parser.add_argument("--run", default=None, metavar="RUN_DIR",
                        help="re-parse a finished run's attempts instead of generating (uses its config.yaml)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")


def _variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    rows = [("config", [])]
    for spec in specs:
        name, _, overrides = spec.partition(":")
        rows.append((name, [o for o in overrides.split(",") if o]))
    return rows


def measure(engine, tokenizer, corpus, config: SpiceConfig, index: int) -> dict:
    """The rollout half of iteration `index` under `config`: its learning signal, in numbers."""
    started = time.perf_counter()
    iteration, batch = loop.run_rollouts(engine, tokenizer, corpus, config, index)
    seconds = time.perf_counter() - started
    attempts = iteration.attempts
    valid_rows = [row for row, s in enumerate(iteration.trained) if isinstance(s.result, Task)]
    correct = [int(iteration.verdicts[row].sum()) for row in valid_rows]
    by_mode = {mode: sum(isinstance(parse_task(s.completion.text, s.document, s.kind, grounding=mode), Task)
                         for s in attempts) for mode in GROUNDING_MODES}
    return {
        "iteration": index, "attempts": len(attempts),
        "valid": sum(isinstance(s.result, Task) for s in attempts),
        "documents_with_task": len(valid_rows), "documents": len(iteration.documents),
        "reasoner_accuracy": sum(correct) / (len(correct) * config.reasoner.samples) if correct else 0.0,
        "nonzero_advantage": bool(batch.advantages.abs().sum() > 0),
        "valid_by_grounding": by_mode, "seconds": round(seconds, 1),
    }


def reparse_run(run_dir: Path, as_json: bool) -> int:
    """Valid attempts of a finished run per iteration under each grounding mode, all rounds and round one."""
    from transformers import AutoTokenizer

    from spice.corpus import load_corpus
    from spice.embedded import resolve_corpus_path, resolve_model_path

    config = load_config(run_dir / "config.yaml")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.model.path))
    corpus = load_corpus(resolve_corpus_path(config.corpus.path), text_field=config.corpus.text_field,
                         limit=config.corpus.limit).segmented(tokenizer, config.corpus.max_segment_tokens)
    rows = [json.loads(line) for line in (run_dir / "tasks.jsonl").read_text().splitlines() if line.strip()]
    first_round = config.challenger.attempts_per_document
    if not as_json:
        print("| iteration | attempts (round one) | valid exact | valid fuzzy | valid off | valid exact, round one | "
              "valid fuzzy, round one | documents with a fuzzy-valid task: all rounds / round one |")
        print("|---|---|---|---|---|---|---|---|")
    for index in sorted({r["iteration"] for r in rows}):
        seen: dict[str, int] = {}
        counts = {f"{mode}{suffix}": 0 for mode in GROUNDING_MODES for suffix in ("", "_round_one")}
        solved: dict[str, set[str]] = {"all": set(), "round_one": set()}
        attempts = early = 0
        for row in (r for r in rows if r["iteration"] == index):
            document = corpus.get(row["document_id"])
            position = seen[document.id] = seen.get(document.id, -1) + 1
            attempts += 1
            early += position < first_round
            for mode in GROUNDING_MODES:
                valid = isinstance(parse_task(row["challenger_output"], document, row["kind"], grounding=mode), Task)
                counts[mode] += valid
                counts[f"{mode}_round_one"] += valid and position < first_round
                if valid and mode == "fuzzy":
                    solved["all"].add(document.id)
                    if position < first_round:
                        solved["round_one"].add(document.id)
        result = {"iteration": index, "attempts": attempts, "attempts_round_one": early, **counts,
                  "documents_all_rounds": len(solved["all"]), "documents_round_one": len(solved["round_one"])}
        if as_json:
            print(json.dumps(result))
            continue
        print(f"| {index} | {attempts} ({early}) | {counts['exact']} | {counts['fuzzy']} | {counts['off']} | "
              f"{counts['exact_round_one']} | {counts['fuzzy_round_one']} | {len(solved['all'])} / "
              f"{len(solved['round_one'])} |")
    return 0


def run(args: argparse.Namespace) -> int:
    """Every variant on the same iterations' documents and seeds, with one engine at the initial weights."""
    from spice.corpus import load_corpus
    from spice.embedded import resolve_corpus_path, resolve_model_path
    from spice.run import make_rollout_engine

    if args.run:
        return reparse_run(Path(args.run), args.json)
    base = load_config(args.config)
    indices = [int(i) for i in args.iterations.split(",") if i.strip()]
    engine = make_rollout_engine(base, resolve_model_path(base.model.path))
    tokenizer = engine.tokenizer
    corpus = load_corpus(resolve_corpus_path(base.corpus.path), text_field=base.corpus.text_field,
                         limit=base.corpus.limit).segmented(tokenizer, base.corpus.max_segment_tokens)
    if not args.json:
        print("| variant | iteration | valid / attempts | docs with task | reasoner acc | non-zero advantage | "
              "valid by grounding (exact / fuzzy / off) | seconds |")
        print("|---|---|---|---|---|---|---|---|")
    for name, overrides in _variants(args.variant):
        config = load_config(args.config, overrides)
        for index in indices:
            row = measure(engine, tokenizer, corpus, config, index)
            if args.json:
                print(json.dumps({"variant": name, "overrides": overrides, **row}), flush=True)
                continue
            grounding = " / ".join(str(row["valid_by_grounding"][m]) for m in ("exact", "fuzzy", "off"))
            print(f"| {name} | {index} | {row['valid']} / {row['attempts']} | {row['documents_with_task']} / "
                  f"{row['documents']} | {row['reasoner_accuracy']:.3f} | {'yes' if row['nonzero_advantage'] else 'no'}"
                  f" | {grounding} | {row['seconds']} |", flush=True)
    engine.close()
    return 0
