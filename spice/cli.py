"""`spice train | eval | plot | coevolve | serve | audit | rollback | approve | promote | report | bench {...}`."""

from __future__ import annotations

import argparse
import importlib
import sys

from spice.config import ConfigError, describe_options, load_config
from spice.errors import UserError

# subcommand -> module exposing add_arguments(parser) and run(args) -> int
COMMANDS = {
    "eval": ("spice.eval.command", "evaluate a model on benchmarks (GSM8K, MATH-500, ARC, local jsonl)"),
    "plot": ("spice.plot", "draw a run's training curves to PNG"),
    "coevolve": ("spice.eval.coevolution", "pass rate of one checkpoint's reasoner on another's tasks"),
    "serve": ("spice.serve", "CPU stand-in for an SGLang server (subset of its HTTP API)"),
    "audit": ("spice.guard.audit", "verify a run's hash-chained records, signatures and checkpoint hashes"),
    "rollback": ("spice.guard.rollback", "return a run to an earlier checkpoint, marking later rows superseded"),
    "approve": ("spice.guard.approve", "record a person's approval: continue a paused run, or a checkpoint"),
    "promote": ("spice.guard.promote", "export an approved checkpoint that passes its evaluation thresholds"),
    "report": ("spice.guard.report", "write a run's self-contained HTML report"),
}
BENCHMARKS = {
    "loss": ("spice.bench.loss", "fused GRPO loss vs materialized logits: time and peak memory"),
    "verify": ("spice.bench.verify", "answer verification throughput: fast path, math-verify, combined"),
    "grounding": ("spice.bench.grounding", "challenger valid-task share per grounding mode (exact, fuzzy, off)"),
    "train": ("spice.bench.train", "training step tokens/s and MFU (Megatron backend)"),
    "guard": ("spice.bench.guard", "what the guard adds per iteration: chained rows, near-duplicates, audit"),
    "constrained": ("spice.bench.constrained",
                    "challenger valid-task rate with and without schema-constrained decoding"),
    "levers": ("spice.bench.levers", "a run's learning signal per setting (valid tasks, accuracy, advantage)"),
    "scoring": ("spice.bench.scoring", "fused scoring: CUDA kernel vs its C++ twin, time and bitwise equality"),
    "gpu": ("spice.bench.gpu", "one-shot GPU validation: offline install, GPU tests, loss/scoring/train benches"),
    "checks": ("spice.bench.checks", "check programs in the sandbox: verdicts, seconds per program, model share"),
}


def _options_epilog() -> str:
    rows = describe_options()
    width = max(len(key) for key, _, _, _ in rows)
    lines = ["configuration options (set in the YAML file or as key=value overrides):"]
    for key, type_name, default, comment in rows:
        text = f"  {key:<{width}}  {type_name} = {default!r}"
        lines.append(text + (f"  # {comment}" if comment else ""))
    return "\n".join(lines)


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="run SPICE self-play training",
        description="Run SPICE: the challenger writes tasks from corpus documents, the reasoner answers "
                    "them, both roles are trained with Dr. GRPO. Runs under torchrun for data parallelism.",
        epilog=_options_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (e.g. examples/cpu_demo.yaml); defaults otherwise")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint (its config.yaml is used; "
                             "overrides still apply, e.g. run.iterations=20)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. run.iterations=4")


def _run_train(args: argparse.Namespace) -> int:
    from spice.run import resume_config, train

    if args.resume:
        if args.config:
            raise ConfigError("--resume uses the run's saved config.yaml; pass overrides instead of --config")
        config = resume_config(args.resume, args.overrides)
        return train(config, resume=True)
    return train(load_config(args.config, args.overrides))


def _add_module(subparsers, name: str, module_name: str, help_text: str, load: bool) -> None:
    """A subcommand whose options come from its module; the module is imported only when chosen."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    if not load:
        return
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        parser.set_defaults(handler=lambda args, e=error: _unavailable(name, e))
        return
    module.add_arguments(parser)
    parser.set_defaults(handler=module.run)


def _unavailable(name: str, error: Exception) -> int:
    print(f"spice {name}: unavailable in this installation ({error})", file=sys.stderr)
    return 2


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI; only the module of the subcommand named in `argv` is imported (fast `--help`)."""
    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    chosen = words[:2]
    parser = argparse.ArgumentParser(prog="spice", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    for name, (module_name, help_text) in COMMANDS.items():
        _add_module(subparsers, name, module_name, help_text, load=chosen[:1] == [name])
    bench = subparsers.add_parser("bench", help="benchmarks (loss, verify, train, constrained, scoring, gpu)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        _add_module(bench_sub, name, module_name, help_text, load=chosen == ["bench", name])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    try:
        if args.command == "train":
            return _run_train(args)
        return args.handler(args)
    except ConfigError as error:
        print(f"spice: config error: {error.one_line()}", file=sys.stderr)
        return 2
    except UserError as error:  # bad input (path, corpus, data): one line; internal errors keep a traceback
        print(f"spice: {error.one_line()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
