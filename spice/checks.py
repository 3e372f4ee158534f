"""Check programs (AgentInstruct's code tool): the challenger may write a short Python program that
computes its gold answer from values in the document; the run executes it in `spice.sandbox` and a
task whose program fails, does nothing, or disagrees with its stated answer becomes Invalid.

Modes (`challenger.check`): "off"; "optional" (programs are asked for the computable kinds and
checked when present); "required_numeric" (integer and float tasks without a program are Invalid).
Agreement is decided by the project's verifier on the program's last printed line, so a program must
print the answer as the task states it (rounded as the question asks).

What a check does not prove: that the program reads its numbers from the document (the share of its
literals found there is recorded, not enforced), nor that `print(40 + 2)` is a derivation. A program
that only prints a constant is refused as "check_trivial", so copying the answer is not the cheapest
way through."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from spice.json_extract import ExtractError, extract_json_object
from spice.sandbox import run_many
from spice.tasks import Invalid, Task

CHECK_MODES = ("off", "optional", "required_numeric")
PROGRAM_KINDS = ("integer", "float", "expression")  # kinds whose prompt asks for a program
NUMERIC_KINDS = ("integer", "float")  # kinds that must carry one under "required_numeric"
CHECK_REASONS = (
    "check_missing",  # required_numeric: a numeric task without a program
    "check_trivial",  # the program computes nothing (it prints constants)
    "check_failed",  # the program raised, timed out, ran out of memory or printed nothing
    "check_mismatch",  # the program's answer is not equivalent to the task's answer
)
MAX_PROGRAM_CHARS = 2000
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
# Calls that only move a value to the output: a program made of these and constants computes nothing.
_PASSIVE_CALLS = frozenset({"print", "str", "int", "float", "repr", "format", "round", "Fraction", "Decimal"})


def program_field(kind: str, mode: str) -> str | None:
    """How the task of `kind` asks for a program under `mode`: None (not at all), "optional" or "required"."""
    if mode not in CHECK_MODES:
        raise ValueError(f"check mode {mode!r} is not one of {CHECK_MODES}")
    if mode == "off" or kind not in PROGRAM_KINDS:
        return None
    return "required" if mode == "required_numeric" and kind in NUMERIC_KINDS else "optional"


def program_of(text: str) -> str:
    """The "program" string of a challenger output's JSON object ("" when absent or not a string)."""
    try:
        value = extract_json_object(text).get("program")
    except ExtractError:
        return ""
    return value.strip() if isinstance(value, str) else ""


def is_trivial(program: str) -> bool:
    """Whether the program computes nothing: no operator, comparison, loop, comprehension or call other
    than printing and converting constants (e.g. `print(42)`, `x = "42"; print(x)`)."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return False  # the sandbox reports it as check_failed
    for node in ast.walk(tree):
        if isinstance(node, (ast.BinOp, ast.AugAssign, ast.Compare, ast.BoolOp, ast.For, ast.While,
                             ast.comprehension, ast.Subscript, ast.IfExp, ast.Lambda, ast.FunctionDef)):
            return False
        if isinstance(node, ast.UnaryOp) and not isinstance(node.operand, ast.Constant):
            return False
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name not in _PASSIVE_CALLS:
                return False
    return True


def literals_in_document(program: str, document_text: str) -> tuple[int, int]:
    """(numeric literals of the program that occur in the document, all numeric literals other than
    0, 1 and 2): how far the program reads its values from the document. Audit only."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return 0, 0
    found = {n.replace(",", "") for n in _NUMBER.findall(document_text)}
    values = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
              and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)]
    values = [v for v in values if v not in (0, 1, 2)]
    return sum(_as_text(v) in found for v in values), len(values)


def _as_text(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _last_line(stdout: str) -> str:
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _boxed(value: str, kind: str) -> str:
    """The program's answer as a response the verifier reads (Python's ** written as ^)."""
    return "\\boxed{" + (value.replace("**", "^") if kind == "expression" else value) + "}"


def check_tasks(results: Sequence[Task | Invalid], texts: Sequence[str], document_texts: Sequence[str],
                mode: str, sandbox_mode: str = "seccomp", timeout: float = 2.0) -> list[tuple[Task | Invalid, dict | None]]:
    """Check every Task among `results` (parsed from `texts`, about `document_texts`): each comes back
    as itself or an Invalid with one of CHECK_REASONS, beside its audit record (None where no check
    applies): program, output, error, verdict, seconds, literals found in the document."""
    from spice.verify import verify_batch

    out: list[tuple[Task | Invalid, dict | None]] = [(r, None) for r in results]
    if mode == "off":
        return out
    pending: list[tuple[int, str]] = []
    for index, (result, text) in enumerate(zip(results, texts)):
        if not isinstance(result, Task) or program_field(result.kind, mode) is None:
            continue
        program = program_of(text)
        record = {"program": program, "output": "", "error": "", "verdict": "passed", "seconds": 0.0}
        if program:
            record["literals_in_document"] = list(literals_in_document(program, document_texts[index]))
        if not program:
            record["verdict"] = "check_missing" if program_field(result.kind, mode) == "required" else "absent"
        elif len(program) > MAX_PROGRAM_CHARS:
            record.update(verdict="check_failed", error=f"program longer than {MAX_PROGRAM_CHARS} characters")
        elif is_trivial(program):
            record["verdict"] = "check_trivial"
        else:
            pending.append((index, program))
        out[index] = (result, record)
    runs = run_many([program for _, program in pending], timeout=timeout, mode=sandbox_mode)
    compared: list[int] = []
    for (index, _), run in zip(pending, runs):
        record = out[index][1]
        record.update(output=run.stdout, error=run.error, seconds=round(run.seconds, 4))
        if not run.ok or not _last_line(run.stdout):
            record["verdict"] = "check_failed"
            record["error"] = run.error or "the program printed nothing"
        else:
            compared.append(index)
    items = [(_boxed(_last_line(out[i][1]["output"]), results[i].kind), results[i].answer, results[i].kind)
             for i in compared]
    for index, agrees in zip(compared, verify_batch(items) if items else []):
        if not agrees:
            out[index][1]["verdict"] = "check_mismatch"
    for index, (result, record) in enumerate(out):
        if record is not None and record["verdict"] in CHECK_REASONS:
            detail = record["error"] or (f"program printed {_last_line(record['output'])[:60]!r}, answer is "
                                         f"{result.answer[:60]!r}" if record["verdict"] == "check_mismatch" else "")
            out[index] = (Invalid(record["verdict"], detail[:200], extra={"task": result}), record)
    return out


def check_metrics(records: Sequence[dict | None]) -> dict[str, float]:
    """Per-iteration shares among checked tasks: with a program, passed, failed, mismatched, trivial,
    missing; and the sandbox seconds spent (summed over programs, which run in parallel)."""
    checked = [r for r in records if r is not None]
    if not checked:
        return {}
    verdicts = [r["verdict"] for r in checked]
    with_program = sum(bool(r["program"]) for r in checked)
    metrics = {"check/tasks": float(len(checked)), "check/program_share": with_program / len(checked),
               "check/sandbox_seconds": sum(r["seconds"] for r in checked)}
    for verdict in ("passed", *CHECK_REASONS):
        metrics[f"check/{verdict}"] = verdicts.count(verdict) / len(checked)
    return metrics


def check_samples(samples: Sequence, challenger) -> None:
    """Check the challenger samples of an iteration in place (`challenger` is the ChallengerConfig):
    each sample's `result` becomes its verdict and `check` its audit record."""
    if challenger.check == "off":
        return
    checked = check_tasks([s.result for s in samples], [s.completion.text for s in samples],
                          [s.document.text for s in samples], challenger.check, challenger.check_sandbox,
                          challenger.check_timeout)
    for sample, (result, record) in zip(samples, checked):
        sample.result = result
        if record is not None:
            sample.check = record
