"""`spice bench checks`: what check programs cost and catch. Scripted part: a fixed set of challenger
outputs (right and wrong gold answers, crashes, timeouts, trivial and missing programs, escape attempts)
checked in every sandbox mode available, with the verdicts and the seconds per program (process start
included). Model part (`--documents N`): the challenger (embedded model by default) asked for tasks with
a program; share of valid tasks carrying one, verdict rates, generation seconds beside checking seconds."""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections import Counter

from spice.checks import check_tasks, program_field
from spice.corpus import Document
from spice.sandbox import MODES, SandboxError, check_mode, run_many
from spice.tasks import Task, parse_task

_TEXT = ("The bakery sold 144 loaves on Monday and 96 loaves on Tuesday; each loaf cost 3.5 dollars. "
         "It opened on 14 March 2019 in Leeds.")
_QUOTE = "sold 144 loaves on Monday and 96 loaves on Tuesday"
_OS = "os_ = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0].__init__.__globals__\n"
# (label, answer, program): what a challenger could write; the label is the verdict a sound check gives.
SCRIPTED = [
    ("passed", "240", "monday, tuesday = 144, 96\nprint(monday + tuesday)"),
    ("passed", "840", "print((144 + 96) * 3.5)"),
    ("passed", "1753", "import datetime\nprint((datetime.date(2023, 12, 31) - datetime.date(2019, 3, 14)).days)"),
    ("check_mismatch", "250", "print(144 + 96)"),
    ("check_mismatch", "48", "print(144 - 96 + 1)"),
    ("check_failed", "240", "print(144 + 96 / 0)"),
    ("check_failed", "240", "while True:\n    pass"),
    ("check_failed", "240", "x = 'a' * 10**10"),
    ("check_failed", "240", "import os\nprint(os.listdir('/'))"),
    ("check_failed", "240", _OS + "print(os_['system']('echo escaped'))\nprint(os_['open']('/etc/passwd', 0))"),
    ("check_trivial", "240", "print(240)"),
    ("check_missing", "240", ""),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench checks`."""
    parser.add_argument("--repeat", type=int, default=3, help="passes over the scripted outputs per mode")
    parser.add_argument("--timeout", type=float, default=1.0, help="wall-clock seconds per program")
    parser.add_argument("--documents", type=int, default=0, help="documents for the model part (0: skip it)")
    parser.add_argument("--samples", type=int, default=2, help="challenger samples per document")
    parser.add_argument("--kinds", default="integer,float", help="free-form kinds, assigned in turn")
    parser.add_argument("--check", default="required_numeric", choices=("optional", "required_numeric"))
    parser.add_argument("--model", default=None, help="HF model folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--max-doc-tokens", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")


def _output(answer: str, program: str) -> str:
    obj = {"answer_type": "integer", "quote": _QUOTE, "question": "How many loaves did the Leeds bakery sell?",
           "program": program, "answer": answer, "difficulty": "easy"}
    return json.dumps(obj)


def _percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def scripted(mode: str, args: argparse.Namespace) -> dict:
    """The scripted outputs through `check_tasks` in `mode`; verdicts against their labels; timings."""
    document = Document(id="bench", text=_TEXT, source="bench")
    texts = [_output(answer, program) for _, answer, program in SCRIPTED] * args.repeat
    labels = [label for label, _, _ in SCRIPTED] * args.repeat
    results = [parse_task(t, document, "integer") for t in texts]
    start = time.perf_counter()
    checked = check_tasks(results, texts, [_TEXT] * len(texts), "required_numeric", mode, args.timeout)
    wall = time.perf_counter() - start
    verdicts = [record["verdict"] for _, record in checked]
    ran = [record["seconds"] for _, record in checked if record["seconds"]]
    quick = [record["seconds"] for (_, record), label in zip(checked, labels)
             if record["seconds"] and label in ("passed", "check_mismatch")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    empty = run_many(["pass"] * 8, timeout=5.0, mode=mode, workers=1)
    serial = (time.perf_counter() - start) / 8
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 8
    return {"mode": mode, "outputs": len(texts), "programs_run": len(ran),
            "agree_with_label": sum(v == label for v, label in zip(verdicts, labels)),
            "verdicts": dict(Counter(verdicts).most_common()), "check_wall_seconds": round(wall, 2),
            "program_seconds_p50": round(_percentile(quick, 0.5), 3),
            "program_seconds_p95": round(_percentile(quick, 0.95), 3),
            "empty_program_seconds_serial": round(serial, 3), "empty_program_cpu_seconds": round(cpu, 3),
            "empty_ok": all(r.ok for r in empty)}


def model_part(args: argparse.Namespace) -> dict:
    """Challenger tasks with programs from the model, checked in the default sandbox."""
    from spice.chat import chat_prompt_ids
    from spice.corpus import load_corpus
    from spice.embedded import embedded_corpus_path, embedded_model_dir
    from spice.rollout.base import SamplingParams
    from spice.rollout.hf import HFRolloutEngine
    from spice.schemas import schema_json, task_schema
    from spice.tasks import challenger_messages

    engine = HFRolloutEngine(args.model or str(embedded_model_dir()), batch_size=8, seed=args.seed)
    corpus = load_corpus(embedded_corpus_path()).segmented(engine.tokenizer, args.max_doc_tokens)
    documents = corpus.sample(args.documents, args.seed, 0)
    kinds_cycle = [k.strip() for k in args.kinds.split(",") if k.strip()]
    kinds = [kinds_cycle[i % len(kinds_cycle)] for i in range(len(documents))]
    results, texts, docs = [], [], []
    start = time.perf_counter()
    for kind in sorted(set(kinds)):
        chosen = [d for d, k in zip(documents, kinds) if k == kind]
        program = program_field(kind, args.check)
        prompts = [chat_prompt_ids(engine.tokenizer, challenger_messages(d, kind, "compact", program)) for d in chosen]
        sampling = SamplingParams(n=args.samples, temperature=1.0, max_new_tokens=args.max_new_tokens,
                                  json_schema=schema_json(task_schema(kind, "compact", program)), seed=args.seed)
        for document, completions in zip(chosen, engine.generate(prompts, sampling)):
            for completion in completions:
                results.append(parse_task(completion.text, document, kind))
                texts.append(completion.text)
                docs.append(document.text)
    generate_seconds = time.perf_counter() - start
    engine.close()
    start = time.perf_counter()
    checked = check_tasks(results, texts, docs, args.check, "seccomp", args.timeout)
    check_seconds = time.perf_counter() - start
    records = [record for _, record in checked if record is not None]
    verdicts = Counter(record["verdict"] for record in records)
    return {"model": engine.model_dir.name, "tasks": len(results),
            "valid_before_check": sum(isinstance(r, Task) for r in results),
            "valid_after_check": sum(isinstance(r, Task) for r, _ in checked),
            "with_program": sum(bool(record["program"]) for record in records),
            "verdicts": dict(verdicts.most_common()),
            "invalid_reasons": dict(Counter(r.reason for r in results if not isinstance(r, Task)).most_common()),
            "generate_seconds": round(generate_seconds, 1), "check_seconds": round(check_seconds, 2),
            "examples": [{"program": record["program"][:200], "output": record["output"][:80],
                          "verdict": record["verdict"]} for record in records[:6]]}


def run(args: argparse.Namespace) -> int:
    """Print the scripted table for every available sandbox mode, then the model part if asked for."""
    with tempfile.TemporaryDirectory(prefix="spice-bench-checks-"):
        rows = []
        for mode in MODES:
            try:
                check_mode(mode)
            except SandboxError as error:
                rows.append({"mode": mode, "unavailable": str(error)})
                continue
            rows.append(scripted(mode, args))
        model = model_part(args) if args.documents else None
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "scripted": rows, "model": model}))
        return 0
    print(f"{len(SCRIPTED)} scripted outputs x {args.repeat}, timeout {args.timeout} s, {os.cpu_count()} CPUs")
    print("| mode | verdicts as labelled | programs run | check wall s | s/program p50 | p95 | empty program s "
          "| empty program CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "unavailable" in r:
            print(f"| {r['mode']} | unavailable: {r['unavailable']} | | | | | | |")
            continue
        print(f"| {r['mode']} | {r['agree_with_label']} / {r['outputs']} | {r['programs_run']} | "
              f"{r['check_wall_seconds']} | {r['program_seconds_p50']} | {r['program_seconds_p95']} | "
              f"{r['empty_program_seconds_serial']} | {r['empty_program_cpu_seconds']} |")
    if model:
        print(json.dumps(model, indent=1))
    return 0
