"""The independent evaluator: a model that is not the policy (the frozen initial model, or any model
path) re-answers a sample of each iteration's tasks WITH the document in view. Where it, reading the
source, disagrees with the challenger's gold answer, the gold answer is likely wrong."""

from __future__ import annotations

import random
from pathlib import Path

from spice.chat import chat_prompt_ids
from spice.rollout.base import RolloutEngine, SamplingParams
from spice.tasks import LETTERS


def evaluator_messages(document_text: str, row: dict) -> list[dict]:
    """The task as the reasoner sees it, preceded by its document."""
    body = row["question"].strip()
    if row.get("kind") == "mcq":
        body += "\n\n" + "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, row["options"]))
        tail = "Answer from the document. Put the letter of the correct option in \\boxed{}."
    else:
        tail = "Answer from the document. Put your final answer in \\boxed{}."
    return [{"role": "user", "content": f"Document:\n{document_text}\n\nQuestion: {body}\n\n{tail}"}]


def sample_tasks(task_rows: list[dict], count: int, seed: int, iteration: int) -> list[dict]:
    """A fixed-seed sample of the iteration's valid tasks."""
    valid = [r for r in task_rows if r.get("status") == "valid"]
    return random.Random(f"{seed}/{iteration}/evaluator").sample(valid, min(count, len(valid)))


def judge(engine: RolloutEngine, tokenizer, rows: list[dict], documents: dict[str, str],
          max_new_tokens: int) -> list[dict]:
    """Greedy evaluator answers and whether each agrees with the gold answer."""
    from spice.verify import extract_answer, verify_batch

    rows = [r for r in rows if r["document_id"] in documents]
    if not rows:
        return []
    prompts = [chat_prompt_ids(tokenizer, evaluator_messages(documents[r["document_id"]], r)) for r in rows]
    sampling = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    texts = [group[0].text for group in engine.generate(prompts, sampling)]
    agrees = verify_batch([(text, r["answer"], r["kind"]) for text, r in zip(texts, rows)])
    return [{"document_id": r["document_id"], "attempt": r["attempt"], "gold": r["answer"],
             "answer": extract_answer(text, r["kind"]), "agrees": bool(agree)}
            for r, text, agree in zip(rows, texts, agrees)]


def evaluator_engine(spec: str, base_model: Path, dtype: str, seed: int) -> RolloutEngine:
    """An HF engine on the evaluator's own weights: `initial` is the run's base model, frozen."""
    from spice.eval.models import resolve_eval_model
    from spice.rollout.hf import HFRolloutEngine

    path = base_model if spec == "initial" else resolve_eval_model(spec)
    return HFRolloutEngine(path, dtype=dtype, seed=seed)
