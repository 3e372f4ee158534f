"""`spice bench constrained`: the challenger's valid-task rate with and without schema-constrained
decoding, over the same documents, kinds, seeds and sampling, on the in-process transformers engine;
with the invalid reasons and the time each mode takes."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter

from spice.chat import chat_prompt_ids
from spice.corpus import load_corpus
from spice.rollout.base import SamplingParams
from spice.schemas import schema_json, task_schema
from spice.tasks import ANSWER_KINDS, PROMPT_STYLES, Task, challenger_messages, parse_task, reason_counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench constrained`."""
    parser.add_argument("--model", default=None, help="HF model folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model instead (a smoke run)")
    parser.add_argument("--corpus", default=None, help="corpus path (default: the embedded passage corpus)")
    parser.add_argument("--documents", type=int, default=32, help="documents, the same in both modes")
    parser.add_argument("--max-doc-tokens", type=int, default=256, help="segment documents to this length")
    parser.add_argument("--kinds", default=",".join(ANSWER_KINDS),
                        help="task kinds, assigned to the documents in turn")
    parser.add_argument("--samples", type=int, default=4, help="challenger samples per document")
    parser.add_argument("--style", choices=PROMPT_STYLES, default="compact")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="free,constrained", help="free, constrained or both")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")


def _model_dir(args: argparse.Namespace, scratch: str) -> str:
    if args.tiny:
        from spice.testing import tiny_model_dir
        return str(tiny_model_dir(scratch))
    if args.model:
        return args.model
    from spice.embedded import embedded_model_dir
    return str(embedded_model_dir())


def _corpus_path(args: argparse.Namespace) -> str:
    if args.corpus:
        return args.corpus
    from spice.embedded import embedded_corpus_path
    return str(embedded_corpus_path())


def measure(engine, documents, kinds, args: argparse.Namespace, constrained: bool) -> dict:
    """Sample `args.samples` tasks per document in one mode; count valid tasks and invalid reasons."""
    results, tokens, truncated = [], 0, 0
    started = time.perf_counter()
    for kind in sorted(set(kinds)):
        chosen = [d for d, k in zip(documents, kinds) if k == kind]
        prompts = [chat_prompt_ids(engine.tokenizer, challenger_messages(d, kind, args.style)) for d in chosen]
        schema = schema_json(task_schema(kind, args.style)) if constrained else None
        sampling = SamplingParams(n=args.samples, temperature=args.temperature, top_p=1.0,
                                  max_new_tokens=args.max_new_tokens, json_schema=schema, seed=args.seed)
        for document, completions in zip(chosen, engine.generate(prompts, sampling)):
            for completion in completions:
                results.append(parse_task(completion.text, document, kind))
                tokens += len(completion.token_ids)
                truncated += completion.finish_reason == "length"
    seconds = time.perf_counter() - started
    counts = reason_counts(results)
    valid = counts.pop("valid")
    return {"mode": "constrained" if constrained else "free", "tasks": len(results), "valid": valid,
            "valid_rate": valid / max(len(results), 1), "truncated": truncated, "tokens": tokens,
            "seconds": round(seconds, 1), "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
            "documents_with_a_valid_task": len({r.doc_id for r in results if isinstance(r, Task)}),
            "invalid_reasons": dict(Counter({k: v for k, v in counts.items() if v}).most_common())}


def run(args: argparse.Namespace) -> int:
    """Run both modes on the same documents and print a table (or JSON)."""
    with tempfile.TemporaryDirectory(prefix="spice-bench-") as scratch:
        return _run(args, scratch)


def _run(args: argparse.Namespace, scratch: str) -> int:
    from spice.rollout.hf import HFRolloutEngine

    engine = HFRolloutEngine(_model_dir(args, scratch), batch_size=args.batch_size, seed=args.seed)
    corpus = load_corpus(_corpus_path(args)).segmented(engine.tokenizer, args.max_doc_tokens)
    documents = corpus.sample(args.documents, args.seed, 0)
    kinds_cycle = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds_cycle if k not in ANSWER_KINDS]
    if unknown or not kinds_cycle:
        print(f"spice bench constrained: --kinds {args.kinds!r}: each must be one of {ANSWER_KINDS}")
        return 2
    kinds = [kinds_cycle[i % len(kinds_cycle)] for i in range(len(documents))]
    modes = [m.strip() for m in args.modes.split(",")]
    rows = [measure(engine, documents, kinds, args, constrained=(mode == "constrained")) for mode in modes]
    engine.close()
    if args.json:
        print(json.dumps({"model": engine.model_dir.name, "style": args.style, "rows": rows}))
        return 0
    print(f"model {engine.model_dir}  style {args.style}  documents {len(documents)}  samples {args.samples}  "
          f"max_new_tokens {args.max_new_tokens}  temperature {args.temperature}")
    print("| mode | valid / tasks | rate | docs with a valid task | truncated | tokens/s | seconds | invalid reasons |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in r["invalid_reasons"].items())
        print(f"| {r['mode']} | {r['valid']} / {r['tasks']} | {r['valid_rate']:.1%} | "
              f"{r['documents_with_a_valid_task']} / {len(documents)} | {r['truncated']} | "
              f"{r['tokens_per_second']} | {r['seconds']} | {reasons} |")
    return 0
