"""`spice eval`: score a model or checkpoint on benchmarks with the engine of the config."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from spice.config import ConfigError, load_config
from spice.eval.benchmarks import BenchmarkError, available, load_benchmark
from spice.eval.models import resolve_eval_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice eval`; unset ones default to the config's `eval` section."""
    parser.add_argument("--model", help="Hugging Face folder, 'embedded', a checkpoint step_* folder or a "
                        "run folder (its latest checkpoint); default: the config's model.path")
    parser.add_argument("--benchmarks", help="comma-separated names (see --list) or NAME=PATH.jsonl local "
                        "files (format in docs/eval.md); default: the config's eval.benchmarks")
    parser.add_argument("--limit", type=int, help="items per benchmark, a fixed-seed subset (0 or less: all)")
    parser.add_argument("--samples", type=int, help="answers per item; the item scores their mean (needs "
                        "--temperature > 0)")
    parser.add_argument("--temperature", type=float, help="0 for greedy decoding (the paper's default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, help="default: the config's eval.max_new_tokens")
    parser.add_argument("--prompt-style", choices=("paper", "compact"),
                        help="reasoner prompt style; default: the config's challenger.prompt_style")
    parser.add_argument("--seed", type=int, default=0, help="seeds the subset and the sampling")
    parser.add_argument("--config", help="YAML config; its rollout section picks the engine (hf or sglang)")
    parser.add_argument("--output", help="JSON file for scores and per-item records "
                        "(default: runs/eval/<model>-<time>.json)")
    parser.add_argument("--list", action="store_true", help="list the bundled benchmarks and exit")
    parser.add_argument("--rescore", metavar="RESULT_JSON", help="judge the responses saved in an earlier "
                        "result again with the current verifier (no generation); writes --output or in place")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. "
                        "rollout.batch_size=8")


def _settings(args: argparse.Namespace):
    config = load_config(args.config, args.overrides)
    if args.model:
        config.model.path = args.model
    ev = config.eval
    benchmarks = ([b for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else ev.benchmarks)
    limit = ev.limit if args.limit is None else (args.limit if args.limit > 0 else None)
    return config, benchmarks, limit


def _default_output(model: str) -> Path:
    name = Path(model.rstrip("/")).name or "model"
    if name == "model":  # a checkpoint's model folder: name it after the checkpoint
        name = Path(model.rstrip("/")).parent.name or name
    return Path("runs") / "eval" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def _rescore(path: Path, output: Path | None) -> int:
    from spice.eval.runner import format_table, rescore, write_result

    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        print(f"spice eval: cannot read {path}: {error}", file=sys.stderr)
        return 2
    write_result(rescore(result), output or path)
    print(format_table(result))
    print(f"records: {output or path}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and write the JSON; exit status 2 on a bad input."""
    if args.list:
        for name, text in available().items():
            print(f"{name:<14} {text}")
        print("NAME=PATH.jsonl  any local file in the documented format (docs/eval.md)")
        return 0
    if args.rescore:
        return _rescore(Path(args.rescore), Path(args.output) if args.output else None)
    try:
        config, benchmarks, limit = _settings(args)
    except ConfigError as error:
        print(f"spice eval: {error}", file=sys.stderr)
        return 2
    ev = config.eval
    samples = args.samples if args.samples is not None else ev.samples
    temperature = args.temperature if args.temperature is not None else ev.temperature
    if samples > 1 and temperature <= 0:
        print(f"spice eval: --samples {samples} needs --temperature above 0 (greedy answers are identical)",
              file=sys.stderr)
        return 2
    try:
        loaded = [load_benchmark(spec) for spec in benchmarks]  # fail on a bad name before loading a model
        model_dir = resolve_eval_model(config.model.path)
    except (BenchmarkError, FileNotFoundError) as error:
        print(f"spice eval: {error}", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    from spice.eval.runner import evaluate, format_table, write_result
    from spice.run import make_rollout_engine

    output = Path(args.output) if args.output else _default_output(config.model.path)
    print(f"spice eval: model {model_dir}, engine {config.rollout.engine}, benchmarks "
          f"{', '.join(b.name for b in loaded)}, limit {limit}, samples {samples}, temperature {temperature}",
          file=sys.stderr)
    engine = make_rollout_engine(config, model_dir)
    try:
        tokenizer = getattr(engine, "tokenizer", None) or AutoTokenizer.from_pretrained(model_dir)
        result = evaluate(engine, tokenizer, loaded, limit=limit, samples=samples, temperature=temperature,
                          max_new_tokens=args.max_new_tokens or ev.max_new_tokens, top_p=args.top_p,
                          prompt_style=args.prompt_style or config.challenger.prompt_style, seed=args.seed)
    finally:
        engine.close()
    result["settings"].update(model=str(config.model.path), engine=config.rollout.engine)
    write_result(result, output)
    print(format_table(result))
    print(f"records: {output}")
    return 0
