"""The refinement pass (AgentInstruct's suggester/editor pairs): rounds that rewrite each kept valid
task to be harder while keeping its gold answer and its grounding in the document.

Each round asks the model, as suggester, how the task could be made harder with the same answer, then,
as editor, for the rewritten task JSON (under the task schema when decoding is constrained). An edit is
accepted only if it parses and passes the grounding checks (`parse_task`), keeps the gold answer (the
verifier for free-form kinds, the text of the correct option for MCQ), changes the question, and passes
its check program when checks are on; otherwise the previous version stays. An accepted edit becomes
the trained challenger sample (editor prompt and completion: the tokens that wrote the question the
reasoner sees); suggestions are not trained. `sample.versions` keeps every version for the audit row."""

from __future__ import annotations

import json

from spice import tasks as task_lib
from spice.chat import chat_prompt_ids
from spice.checks import check_tasks, program_field, program_of
from spice.config import SpiceConfig, constrained_decoding
from spice.rollout.base import RolloutEngine, SamplingParams
from spice.tasks import LETTERS, Invalid, Task

SUGGESTION_TOKENS = 192  # at most this many tokens of suggestions per round


def task_json(task: Task, program: str = "") -> str:
    """The task as the JSON object the challenger prompt asks for (the assistant turn being refined)."""
    obj: dict = {} if task.kind == "mcq" else {"answer_type": task.kind}
    obj.update(quote=task.quote, question=task.question)
    if task.kind == "mcq":
        obj["options"] = list(task.options)
    if task.solution:
        obj["solution"] = task.solution
    if program:
        obj["program"] = program
    obj.update(answer=task.answer, difficulty=task.difficulty or "medium")
    return json.dumps(obj, ensure_ascii=False)


def _kept_answer(task: Task) -> str:
    if task.kind == "mcq":
        return f'the correct option "{task.options[LETTERS.index(task.answer)]}"'
    return f'the answer "{task.answer}"'


def suggester_messages(base: list[dict], task: Task, program: str, style: str) -> list[dict]:
    """The challenger conversation so far, then a request for changes that make the task harder."""
    if style == "compact":
        ask = f"Suggest up to three ways to make this question harder, keeping {_kept_answer(task)}. Suggestions only."
    else:
        ask = ("You are now the suggester. List up to three concrete changes that would make this question "
               "harder (more reasoning steps, combining several facts of the document, a calculation) while "
               f"it keeps {_kept_answer(task)}, stays answerable from the document and stays self-contained. "
               "Reply with the suggestions only, one per line.")
    return [*base, {"role": "assistant", "content": task_json(task, program)}, {"role": "user", "content": ask}]


def editor_messages(base: list[dict], task: Task, program: str, suggestions: str, style: str) -> list[dict]:
    """The challenger conversation so far, then a request to rewrite the task as the suggestions say."""
    keep = (f"Keep {_kept_answer(task)}, keep the quote copied word for word from the document and keep the "
            "question self-contained.")
    if style == "compact":
        ask = f"Rewrite the task following these suggestions:\n{suggestions}\n{keep} Same JSON keys."
    else:
        ask = (f"You are now the editor. Rewrite the task following these suggestions:\n{suggestions}\n\n{keep}"
               " Reply with only the JSON object, with the same keys in the same order.")
    return [*base, {"role": "assistant", "content": task_json(task, program)}, {"role": "user", "content": ask}]


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _answer_kept(old: Task, new: Task) -> bool | None:
    """True/False for MCQ (same correct option text); None for free-form kinds (the verifier decides)."""
    if old.kind != "mcq":
        return None
    return _fold(old.options[LETTERS.index(old.answer)]) == _fold(new.options[LETTERS.index(new.answer)])


def _version(round_index: int, status: str, output: str, result: Task | Invalid, check: dict | None,
             suggestion: str | None = None) -> dict:
    version: dict = {"round": round_index, "status": status}
    if suggestion is not None:
        version["suggestion"] = suggestion
    version["output"] = output
    if isinstance(result, Task):
        version.update(question=result.question, answer=result.answer, options=list(result.options),
                       quote=result.quote)
    else:
        version.update(reason=result.reason, detail=result.detail)
    if check is not None:
        version["check"] = check
    return version


def refine_tasks(engine: RolloutEngine, tokenizer, trained: list, config: SpiceConfig, iteration: int) -> None:
    """`challenger.refine_rounds` suggester/editor rounds over the valid samples of `trained`, in place."""
    from spice.loop import stage_seed
    from spice.verify import verify_batch

    cfg = config.challenger
    for round_index in range(1, cfg.refine_rounds + 1):
        samples = [s for s in trained if isinstance(s.result, Task)]
        if not samples:
            return
        programs = [program_of(s.completion.text) for s in samples]
        bases = [task_lib.challenger_messages(s.document, s.kind, cfg.prompt_style, program_field(s.kind, cfg.check))
                 for s in samples]
        for sample in samples:
            if not sample.versions:
                sample.versions.append(_version(0, "original", sample.completion.text, sample.result, sample.check))
        prompts = [chat_prompt_ids(tokenizer, suggester_messages(b, s.result, p, cfg.prompt_style))
                   for b, s, p in zip(bases, samples, programs)]
        sampling = SamplingParams(n=1, temperature=cfg.temperature, top_p=cfg.top_p,
                                  max_new_tokens=min(SUGGESTION_TOKENS, cfg.max_new_tokens),
                                  seed=stage_seed(config.run.seed, iteration, f"refine/{round_index}/suggest"))
        suggestions = [group[0].text.strip() for group in engine.generate(prompts, sampling)]
        edits: list = [None] * len(samples)
        for kind in sorted({s.kind for s in samples}):  # one request per kind: the schema differs by kind
            rows = [i for i, s in enumerate(samples) if s.kind == kind]
            program = program_field(kind, cfg.check)
            schema = None
            if constrained_decoding(config):
                from spice.schemas import task_schema
                schema = json.dumps(task_schema(kind, cfg.prompt_style, program))
            edit_prompts = [chat_prompt_ids(tokenizer, editor_messages(bases[i], samples[i].result, programs[i],
                                                                       suggestions[i], cfg.prompt_style))
                            for i in rows]
            sampling = SamplingParams(n=1, temperature=cfg.temperature, top_p=cfg.top_p,
                                      max_new_tokens=cfg.max_new_tokens, json_schema=schema,
                                      seed=stage_seed(config.run.seed, iteration, f"refine/{round_index}/{kind}"))
            for i, prompt, (completion,) in zip(rows, edit_prompts, engine.generate(edit_prompts, sampling)):
                edits[i] = (prompt, completion, task_lib.parse_task(completion.text, samples[i].document, kind))
        free = [i for i, (_, _, new) in enumerate(edits) if isinstance(new, Task) and new.kind != "mcq"]
        same = dict(zip(free, verify_batch([("\\boxed{" + edits[i][2].answer + "}", samples[i].result.answer,
                                             samples[i].kind) for i in free]) if free else []))
        judged = []
        for i, (sample, (_, _, new)) in enumerate(zip(samples, edits)):
            if isinstance(new, Task):
                kept = _answer_kept(sample.result, new)
                if not (same.get(i) if kept is None else kept):
                    new = Invalid("answer_changed", f"{new.answer[:60]!r} instead of {sample.result.answer[:60]!r}")
                elif _fold(new.question) == _fold(sample.result.question):
                    new = Invalid("unchanged", "the question is the same")
            judged.append(new)
        checked = check_tasks(judged, [c.text for _, c, _ in edits], [s.document.text for s in samples],
                              cfg.check, cfg.check_sandbox, cfg.check_timeout)
        for sample, suggestion, (prompt, completion, _), (result, check) in zip(samples, suggestions, edits, checked):
            accepted = isinstance(result, Task)
            sample.versions.append(_version(round_index, "accepted" if accepted else "rejected", completion.text,
                                            result, check, suggestion))
            if accepted:
                sample.result, sample.prompt_ids, sample.completion, sample.check = result, prompt, completion, check
