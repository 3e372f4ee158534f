"""`spice bench rollout`: the in-process engine's rollouts.

- `memory`: peak resident memory of one long generation (default 16 rows x 2048 new tokens) on a
  randomly initialised model of the embedded model's shape, in a fresh process.
- `waves`: through the SGLang engine and `spice serve` stand-ins (a tiny random model: only the
  request pattern matters), per stage of one iteration (format selection, challenger, reasoner,
  evaluation): generate calls, HTTP requests, and the batches the stand-in ran one after another.
- `demo`: the demo's rollout stages (`loop.run_rollouts`, no update: the same weights, documents and
  seeds every time) for a few iterations; useful tokens per wall second and per CPU second of the
  engine's generate calls, generate calls per iteration, seconds per iteration.

Also runnable as `python -m spice.bench.rollout`, which lets an older checkout be measured the same way."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench rollout`."""
    parser.add_argument("what", choices=["memory", "demo", "waves"])
    parser.add_argument("--rows", type=int, default=16, help="memory: sequences generated together")
    parser.add_argument("--new-tokens", type=int, default=2048, help="memory: tokens generated per row")
    parser.add_argument("--layers", type=int, default=None,
                        help="memory: decoder layers of the random model (default: the embedded model's)")
    parser.add_argument("--hidden", type=int, default=None,
                        help="memory: hidden size of the random model, one 64-wide head per 64 (default: the "
                             "embedded model's); the stacked logits' memory depends only on rows, tokens, vocab")
    parser.add_argument("--config", default="examples/cpu_demo.yaml", help="demo: the run config")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="demo: config overrides")
    parser.add_argument("--iterations", type=int, default=2, help="demo: rollout iterations measured")
    parser.add_argument("--base-port", type=int, default=31870, help="waves: the stand-in's port")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure_memory(args: argparse.Namespace) -> dict:
    """Peak RSS above the loaded model while generating `rows` x `new_tokens` tokens."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from spice.embedded import embedded_model_dir
    from spice.rollout.base import SamplingParams
    from spice.rollout.hf import HFRolloutEngine

    source = embedded_model_dir()
    config = AutoConfig.from_pretrained(source)
    if args.layers is not None:
        config.num_hidden_layers = args.layers
    if args.hidden is not None:
        config.hidden_size, config.intermediate_size = args.hidden, 3 * args.hidden
        config.num_attention_heads = config.num_key_value_heads = max(1, args.hidden // 64)
        config.head_dim = args.hidden // config.num_attention_heads
    config.max_position_embeddings = max(config.max_position_embeddings, 64 + args.new_tokens)
    with tempfile.TemporaryDirectory(prefix="spice-bench-rollout-") as scratch:
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(scratch)
        AutoTokenizer.from_pretrained(source).save_pretrained(scratch)
        engine = HFRolloutEngine(scratch, batch_size=args.rows)
    prompt = engine.tokenizer.encode("Write a long story about a lighthouse keeper.")
    sampling = SamplingParams(n=args.rows, temperature=1.0, max_new_tokens=args.new_tokens, seed=0)
    before = _rss_bytes()
    started = time.perf_counter()
    (group,) = engine.generate([prompt], sampling)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rows": args.rows, "new_tokens": args.new_tokens, "layers": config.num_hidden_layers,
            "hidden": config.hidden_size,
            "vocab": config.vocab_size, "tokens": sum(len(c.token_ids) for c in group),
            "seconds": round(seconds, 1), "rss_before_gb": round(before / 1e9, 3),
            "peak_rss_delta_gb": round((peak - before) / 1e9, 3),
            "stacked_fp32_logits_gb": round(args.rows * args.new_tokens * config.vocab_size * 4 / 1e9, 3)}


class _TimedEngine:
    """Passes calls through to an engine, timing (wall and CPU) and counting its generate calls."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.calls = 0
        self.tokens = 0
        self.wall = 0.0
        self.cpu = 0.0

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def generate(self, prompts, sampling):
        wall, cpu = time.perf_counter(), time.process_time()
        groups = self.engine.generate(prompts, sampling)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.calls += 1
        self.tokens += sum(len(c.token_ids) for group in groups for c in group)
        return groups


def measure_demo(args: argparse.Namespace) -> dict:
    """The demo's rollouts for `iterations` iterations at fixed weights."""
    from spice import loop
    from spice.config import load_config
    from spice.corpus import load_corpus
    from spice.embedded import resolve_corpus_path, resolve_model_path
    from spice.rollout.hf import HFRolloutEngine

    config = load_config(args.config, args.set)
    engine = HFRolloutEngine(resolve_model_path(config.model.path), dtype=config.model.dtype,
                             batch_size=config.rollout.batch_size, seed=config.run.seed)
    corpus = load_corpus(resolve_corpus_path(config.corpus.path), text_field=config.corpus.text_field,
                         limit=config.corpus.limit).segmented(engine.tokenizer, config.corpus.max_segment_tokens)
    rows = []
    for index in range(args.iterations):
        timed = _TimedEngine(engine)
        started = time.perf_counter()
        iteration, _ = loop.run_rollouts(timed, engine.tokenizer, corpus, config, index)
        valid = sum(1 for s in iteration.attempts if type(s.result).__name__ == "Task")
        rows.append({"iteration": index, "generate_calls": timed.calls, "tokens": timed.tokens,
                     "generate_seconds": round(timed.wall, 1), "generate_cpu_seconds": round(timed.cpu, 1),
                     "tokens_per_second": round(timed.tokens / timed.wall, 1),
                     "tokens_per_cpu_second": round(timed.tokens / timed.cpu, 1),
                     "valid_attempts": valid, "attempts": len(iteration.attempts),
                     "rollout_seconds": round(time.perf_counter() - started, 1)})
    tokens = sum(r["tokens"] for r in rows)
    return {"config": args.config, "iterations": rows,
            "tokens_per_second": round(tokens / sum(r["generate_seconds"] for r in rows), 1),
            "tokens_per_cpu_second": round(tokens / sum(r["generate_cpu_seconds"] for r in rows), 1)}


def _server_counts(engine) -> tuple[int, int]:
    """(requests served, batches run) summed over the stand-ins of an SGLang engine."""
    import urllib.request

    requests = batches = 0
    for url in engine.pool.server_urls:
        request = urllib.request.Request(url + "/get_server_info")
        if engine.config.api_key:
            request.add_header("Authorization", f"Bearer {engine.config.api_key}")
        with urllib.request.urlopen(request, timeout=60) as response:
            info = json.loads(response.read())
        requests, batches = requests + info["requests_served"], batches + info["batches_run"]
    return requests, batches


def measure_waves(args: argparse.Namespace) -> dict:
    """Generate calls, HTTP requests and stand-in batches of each stage of one demo iteration."""
    from spice import loop
    from spice.config import load_config
    from spice.corpus import load_corpus
    from spice.embedded import resolve_corpus_path
    from spice.eval.runner import evaluate
    from spice.rollout.sglang import SGLangRolloutEngine
    from spice.tasks import Task
    from spice.testing import tiny_model_dir

    config = load_config(args.config, ["challenger.select_format=true", "challenger.max_new_tokens=32",
                                       "reasoner.max_new_tokens=16", "rollout.engine=sglang",
                                       "rollout.sglang.launch_command=python -m spice.serve --num-threads 1",
                                       f"rollout.sglang.base_port={args.base_port}"])
    with tempfile.TemporaryDirectory(prefix="spice-bench-waves-") as scratch:
        engine = SGLangRolloutEngine(config.rollout.sglang, tiny_model_dir(Path(scratch) / "model"),
                                     work_dir=Path(scratch) / "sglang")
        try:
            tokenizer = engine.tokenizer
            corpus = load_corpus(resolve_corpus_path(config.corpus.path), text_field=config.corpus.text_field,
                                 limit=config.corpus.limit).segmented(tokenizer, config.corpus.max_segment_tokens)
            timed = _TimedEngine(engine)
            documents = loop.sample_documents(corpus, config, 0)
            kinds: list[str] = []
            local = Path(__file__).resolve().parents[2] / "tests" / "data" / "eval_local.jsonl"
            stages = {
                "format_selection": lambda: kinds.extend(loop.choose_kinds(timed, tokenizer, documents, config, 0)[0]),
                "challenger": lambda: loop.generate_tasks(timed, tokenizer, documents, kinds, config, 0),
                "reasoner": lambda: loop.answer_tasks(timed, tokenizer, [
                    Task(f"Which word opens: {d.text[:60]}?", "the", "string", d.id) for d in documents], config, 0),
                "evaluation": lambda: evaluate(timed, tokenizer, [f"local={local}"], max_new_tokens=16, log=None),
            }
            rows = {}
            for stage, call in stages.items():
                calls, (requests, batches) = timed.calls, _server_counts(engine)
                call()
                after = _server_counts(engine)
                rows[stage] = {"generate_calls": timed.calls - calls, "http_requests": after[0] - requests,
                               "stand_in_batches": after[1] - batches}
        finally:
            engine.close()
    return {"config": args.config, "kinds": kinds, "documents": len(documents), "stages": rows}


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = {"memory": measure_memory, "demo": measure_demo, "waves": measure_waves}[args.what](args)
    if args.json:
        print(json.dumps(result))
    else:
        rows = result.pop("iterations", [])
        for key, value in result.items():
            print(f"{key:>24}: {value}")
        for row in rows:
            print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    main_parser = argparse.ArgumentParser(prog="python -m spice.bench.rollout", description=__doc__)
    add_arguments(main_parser)
    sys.exit(run(main_parser.parse_args()))
