"""`spice bench grounding`: the challenger's valid-task share under each grounding mode (exact, fuzzy,
off) on the same completions: generate once on the embedded model and corpus, parse three ways, and
list the tasks that `fuzzy` accepts but `exact` rejects, for reading one by one."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from spice.tasks import ANSWER_KINDS, GROUNDING_MODES, Invalid, Task, parse_task, reason_counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench grounding`."""
    parser.add_argument("--documents", type=int, default=16, help="documents of the embedded corpus")
    parser.add_argument("--samples", type=int, default=2, help="challenger attempts per document")
    parser.add_argument("--max-doc-tokens", type=int, default=192, help="segment documents to this length")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--kinds", default=",".join(ANSWER_KINDS), help="task kinds, given to documents in turn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--save", type=Path, default=None, help="write the completions to this jsonl")
    parser.add_argument("--load", type=Path, default=None,
                        help="parse the completions of an earlier --save instead of generating")
    parser.add_argument("--show", type=int, default=20, help="tasks accepted by fuzzy but not exact to print")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")


def generate(args: argparse.Namespace) -> list[dict]:
    """Challenger completions (compact prompt, schema-constrained, as examples/cpu_demo.yaml) as rows
    of document, kind and text."""
    from spice.chat import chat_prompt_ids
    from spice.corpus import load_corpus
    from spice.embedded import embedded_corpus_path, embedded_model_dir
    from spice.rollout.base import SamplingParams
    from spice.rollout.hf import HFRolloutEngine
    from spice.schemas import schema_json, task_schema
    from spice.tasks import challenger_messages

    engine = HFRolloutEngine(str(embedded_model_dir()), batch_size=args.batch_size, seed=args.seed)
    corpus = load_corpus(str(embedded_corpus_path())).segmented(engine.tokenizer, args.max_doc_tokens)
    documents = corpus.sample(args.documents, args.seed, 0)
    cycle = [k.strip() for k in args.kinds.split(",") if k.strip()]
    kinds = [cycle[i % len(cycle)] for i in range(len(documents))]
    rows = []
    for kind in sorted(set(kinds)):
        chosen = [d for d, k in zip(documents, kinds) if k == kind]
        prompts = [chat_prompt_ids(engine.tokenizer, challenger_messages(d, kind, "compact")) for d in chosen]
        sampling = SamplingParams(n=args.samples, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                  json_schema=schema_json(task_schema(kind, "compact")), seed=args.seed)
        for document, completions in zip(chosen, engine.generate(prompts, sampling)):
            rows.extend({"doc_id": document.id, "doc_text": document.text, "doc_source": document.source,
                         "kind": kind, "text": c.text} for c in completions)
    engine.close()
    return rows


def parse_all(rows: list[dict]) -> dict[str, list[Task | Invalid]]:
    """Each completion parsed under every grounding mode."""
    from spice.corpus import Document

    docs = [Document(id=r["doc_id"], text=r["doc_text"], source=r["doc_source"]) for r in rows]
    return {mode: [parse_task(r["text"], d, r["kind"], grounding=mode) for r, d in zip(rows, docs)]
            for mode in GROUNDING_MODES}


def run(args: argparse.Namespace) -> int:
    """Generate (or load), parse three ways, print the table and the tasks only fuzzy accepts."""
    started = time.perf_counter()
    if args.load is not None:
        rows = [json.loads(line) for line in args.load.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        rows = generate(args)
        if args.save is not None:
            args.save.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    seconds = time.perf_counter() - started
    parsed = parse_all(rows)
    table = []
    for mode, results in parsed.items():
        counts = reason_counts(results)
        valid = counts.pop("valid")
        table.append({"mode": mode, "attempts": len(results), "valid": valid,
                      "valid_share": round(valid / max(len(results), 1), 3),
                      "invalid_reasons": dict(Counter({k: v for k, v in counts.items() if v}).most_common())})
    only_fuzzy = [(i, t) for i, (t, e) in enumerate(zip(parsed["fuzzy"], parsed["exact"]))
                  if isinstance(t, Task) and not isinstance(e, Task)]
    shown = [{"index": i, "quote": t.quote, "question": t.question, "answer": t.answer,
              "exact_reason": parsed["exact"][i].reason, "document": rows[i]["doc_text"]}
             for i, t in only_fuzzy[:args.show]]
    if args.json:
        print(json.dumps({"completions": len(rows), "generation_s": round(seconds, 1), "rows": table,
                          "fuzzy_not_exact": len(only_fuzzy), "shown": shown}))
        return 0
    print(f"completions {len(rows)}  generation {seconds:.0f} s")
    print("| grounding | valid / attempts | share | invalid reasons |")
    print("|---|---|---|---|")
    for r in table:
        reasons = ", ".join(f"{k} {v}" for k, v in r["invalid_reasons"].items())
        print(f"| {r['mode']} | {r['valid']} / {r['attempts']} | {r['valid_share']:.1%} | {reasons} |")
    print(f"\naccepted by fuzzy, rejected by exact: {len(only_fuzzy)}")
    for s in shown:
        print(f"\n[{s['index']}] quote: {s['quote']!r}\n    question: {s['question']!r}  answer: {s['answer']!r}"
              f"\n    document: {s['document']!r}")
    return 0
