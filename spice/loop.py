"""One SPICE iteration, stage by stage (../shared/SPICE.md):

documents -> challenger tasks -> reasoner answers -> verdicts -> rewards and Dr. GRPO advantages
-> one policy update on both roles -> weight sync.

Every stage is a plain function over plain data; `run_iteration` calls them in order.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field, replace

import torch

from spice import tasks as task_lib
from spice.chat import chat_prompt_ids
from spice.checks import check_samples, program_field
from spice.config import SpiceConfig, constrained_decoding
from spice.corpus import Corpus, Document
from spice.refine import refine_tasks
from spice.rollout.base import Completion, RolloutEngine, SamplingParams, per_prompt
from spice.schemas import answer_regex, format_selection_schema, quote_choices, task_schema
from spice.scoring import Scores, score_iteration
from spice.tasks import Invalid, Task
from spice.train.base import Batch, TrainBackend
from spice.verify import verify_batch


@dataclass
class ChallengerSample:
    """One challenger attempt: the document, the asked answer kind, the prompt and what came back."""

    document: Document
    kind: str
    prompt_ids: list[int]
    completion: Completion
    result: Task | Invalid
    check: dict | None = None  # the check program's audit record (spice.checks)
    versions: list[dict] = field(default_factory=list)  # every version of a refined task (spice.refine)


@dataclass
class Iteration:
    """Everything one iteration produced; `telemetry` and the run files read it."""

    index: int
    documents: list[Document]
    attempts: list[ChallengerSample]  # every challenger attempt
    trained: list[ChallengerSample]  # the challenger samples trained (see `select_attempts`)
    reasoner_prompts: list[list[int]] = field(default_factory=list)  # one per valid trained task
    answers: list[list[Completion]] = field(default_factory=list)  # G per valid trained task
    verdicts: torch.Tensor | None = None  # int8 [len(trained), G]
    scores: Scores | None = None
    format_choice_invalid: int = 0
    train_metrics: dict = field(default_factory=dict)
    sync_metrics: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def stage_seed(seed: int, iteration: int, stage: str) -> int:
    """A seed that depends only on the run seed, the iteration and the stage: resumable sampling."""
    return random.Random(f"{seed}/{iteration}/{stage}").randrange(2**31)


def sample_documents(corpus: Corpus, config: SpiceConfig, iteration: int) -> list[Document]:
    return corpus.sample(config.run.documents_per_iteration, config.run.seed, iteration)


def choose_kinds(engine: RolloutEngine, tokenizer, documents: list[Document], config: SpiceConfig,
                 iteration: int) -> tuple[list[str], int]:
    """The answer kind of each document's task: asked of the challenger (paper), else drawn at random.
    Returns the kinds and how many format verdicts did not parse (those fall back to a random draw)."""
    rng = random.Random(stage_seed(config.run.seed, iteration, "kinds"))
    formats = config.challenger.formats
    allowed = [k for k in task_lib.ANSWER_KINDS if ("mcq" if k == "mcq" else "free_form") in formats]
    fallback = [rng.choice(allowed) for _ in documents]
    if not config.challenger.select_format:
        return fallback, 0
    prompts = [chat_prompt_ids(tokenizer, task_lib.format_selection_messages(d, config.challenger.prompt_style))
               for d in documents]
    schema = None
    if constrained_decoding(config):
        schema = json.dumps(format_selection_schema())
    sampling = SamplingParams(n=1, temperature=config.challenger.temperature, top_p=config.challenger.top_p,
                              max_new_tokens=64, json_schema=schema,
                              seed=stage_seed(config.run.seed, iteration, "format"))
    kinds, failed = [], 0
    for index, (completion,) in enumerate(engine.generate(prompts, sampling)):
        choice = task_lib.parse_format_choice(completion.text)
        if isinstance(choice, Invalid) or choice[1] not in allowed:
            kinds.append(fallback[index])
            failed += 1
        else:
            kinds.append(choice[1])
    return kinds, failed


def generate_tasks(engine: RolloutEngine, tokenizer, documents: list[Document], kinds: list[str],
                   config: SpiceConfig, iteration: int, round_index: int = 0) -> list[ChallengerSample]:
    """`attempts_per_document` challenger samples per document, parsed into Task or Invalid
    (`round_index` > 0: a further round of the paper's attempts, with its own seed)."""
    cfg = config.challenger
    prompts, schemas = [], []
    for document, kind in zip(documents, kinds):
        program = program_field(kind, cfg.check)  # None unless check programs are asked for
        prompts.append(chat_prompt_ids(tokenizer, task_lib.challenger_messages(document, kind, cfg.prompt_style,
                                                                               program)))
        quotes = quote_choices(document.text, cfg.prompt_style) if cfg.quote_from_document else None
        schemas.append(json.dumps(task_schema(kind, cfg.prompt_style, program, quotes))
                       if constrained_decoding(config) else None)
    seed = stage_seed(config.run.seed, iteration, "challenger" + (f"/round{round_index}" if round_index else ""))
    shared = SamplingParams(n=cfg.attempts_per_document, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, seed=seed)
    # One request for every document whatever the mix of kinds: the schema, when it differs, goes per row.
    sampling = replace(shared, json_schema=next(iter(schemas), None)) if len(set(schemas)) <= 1 else \
        [replace(p, json_schema=schema) for p, schema in zip(per_prompt(shared, len(prompts)), schemas)]
    samples: list[ChallengerSample] = []
    for document, kind, prompt, completions in zip(documents, kinds, prompts, engine.generate(prompts, sampling)):
        for completion in completions:
            result = task_lib.parse_task(completion.text, document, kind, grounding=cfg.grounding)
            samples.append(ChallengerSample(document, kind, prompt, completion, result))
    check_samples(samples, cfg)  # a task whose program fails or disagrees becomes Invalid
    return samples


def challenge_documents(engine: RolloutEngine, tokenizer, documents: list[Document], kinds: list[str],
                        config: SpiceConfig, iteration: int) -> list[ChallengerSample]:
    """Every challenger attempt: one round of `attempts_per_document` per document, then (paper selection)
    further rounds for the documents still without a valid task, up to `max_attempts` samples each."""
    cfg = config.challenger
    attempts = generate_tasks(engine, tokenizer, documents, kinds, config, iteration)
    rounds = cfg.max_attempts // cfg.attempts_per_document if cfg.attempt_selection == "paper" else 1
    for round_index in range(1, rounds):
        solved = {s.document.id for s in attempts if isinstance(s.result, Task)}
        pending = [(d, k) for d, k in zip(documents, kinds) if d.id not in solved]
        if not pending:
            break
        attempts += generate_tasks(engine, tokenizer, [d for d, _ in pending], [k for _, k in pending], config,
                                   iteration, round_index)
    order = {d.id: i for i, d in enumerate(documents)}
    return sorted(attempts, key=lambda s: order[s.document.id])  # stable: rounds stay in order


def keep_one_task_per_document(samples: list[ChallengerSample]) -> list[ChallengerSample]:
    """`all_invalid` selection: the first valid task of each document (the one the reasoner answers) and
    every invalid attempt (-0.1); other valid attempts have no reasoner verdict and are dropped."""
    kept, seen = [], set()
    for sample in samples:
        if isinstance(sample.result, Invalid):
            kept.append(sample)
        elif sample.document.id not in seen:
            seen.add(sample.document.id)
            kept.append(sample)
    return kept


def paper_group(samples: list[ChallengerSample], group_size: int, rng: random.Random) -> list[ChallengerSample]:
    """The paper's challenger group of one document: its first valid task (the one the reasoner answers)
    and invalid attempts drawn at random in the proportion the attempts showed, i.e. round(invalid / valid)
    of them per valid task, at most `group_size` samples in all; `group_size` invalid ones if none is valid."""
    valid = [s for s in samples if isinstance(s.result, Task)]
    invalid = [s for s in samples if not isinstance(s.result, Task)]
    if valid:
        count = min(len(invalid), group_size - 1, math.floor(len(invalid) / len(valid) + 0.5))
    else:
        count = min(len(invalid), group_size)
    chosen = {id(s) for s in rng.sample(invalid, count)} | {id(s) for s in valid[:1]}
    return [s for s in samples if id(s) in chosen]  # in attempt order


def select_attempts(samples: list[ChallengerSample], config: SpiceConfig, iteration: int) -> list[ChallengerSample]:
    """The challenger samples that are trained (`challenger.attempt_selection`): `paper` groups of
    `attempts_per_document` keeping the valid:invalid ratio, or `all_invalid` (every invalid attempt)."""
    if config.challenger.attempt_selection == "all_invalid":
        return keep_one_task_per_document(samples)
    rng = random.Random(stage_seed(config.run.seed, iteration, "attempt_selection"))
    by_document: dict[str, list[ChallengerSample]] = {}
    for sample in samples:
        by_document.setdefault(sample.document.id, []).append(sample)
    return [s for group in by_document.values()
            for s in paper_group(group, config.challenger.attempts_per_document, rng)]


def shuffle_options(samples: list[ChallengerSample], config: SpiceConfig, iteration: int) -> None:
    """`challenger.shuffle_options`: every MCQ task's options in a seeded random order (per iteration and
    position) before the reasoner sees them; its verdicts and records then use that order."""
    if not config.challenger.shuffle_options:
        return
    seed = stage_seed(config.run.seed, iteration, "options")
    for position, sample in enumerate(samples):
        if isinstance(sample.result, Task):
            sample.result = task_lib.shuffled_options(sample.result, random.Random(f"{seed}/{position}"))


def answer_tasks(engine: RolloutEngine, tokenizer, tasks: list[Task], config: SpiceConfig,
                 iteration: int) -> tuple[list[list[int]], list[list[Completion]]]:
    """G reasoner answers per task; the reasoner never sees the document."""
    cfg = config.reasoner
    prompts = [chat_prompt_ids(tokenizer, task_lib.reasoner_messages(t, config.challenger.prompt_style))
               for t in tasks]
    sampling = SamplingParams(n=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p,
                              max_new_tokens=cfg.max_new_tokens,
                              seed=stage_seed(config.run.seed, iteration, "reasoner"))
    if cfg.constrained_answer:  # the answer's form per task kind, in the same one request
        sampling = [replace(p, regex=answer_regex(t.kind, cfg.max_new_tokens))
                    for p, t in zip(per_prompt(sampling, len(prompts)), tasks)]
    return prompts, engine.generate(prompts, sampling) if prompts else []


def verify_answers(trained: list[ChallengerSample], answers: list[list[Completion]], samples: int) -> torch.Tensor:
    """Verdict matrix [len(trained), G]: 1 where the answer is equivalent to the gold answer."""
    verdicts = torch.zeros(len(trained), samples, dtype=torch.int8)
    valid_rows = [row for row, s in enumerate(trained) if isinstance(s.result, Task)]
    items = [(c.text, trained[row].result.answer, trained[row].result.kind)
             for row, group in zip(valid_rows, answers) for c in group]
    questions = [trained[row].result.question for row, group in zip(valid_rows, answers) for _ in group]
    flat = verify_batch(items, questions=questions)  # the question too: restating it earns nothing
    for position, correct in enumerate(flat):
        verdicts[valid_rows[position // samples], position % samples] = int(correct)
    return verdicts


def score(trained: list[ChallengerSample], verdicts: torch.Tensor, config: SpiceConfig,
          batch_shape: tuple[torch.Tensor, torch.Tensor]) -> Scores:
    """Rewards of both roles and per-token Dr. GRPO advantages (one baseline per role)."""
    sequence_source, loss_mask = batch_shape
    valid = torch.tensor([isinstance(s.result, Task) for s in trained], dtype=torch.bool)
    return score_iteration(
        verdicts, valid, torch.zeros(len(trained), dtype=torch.int32), sequence_source, loss_mask,
        invalid_penalty=config.loss.invalid_penalty, std_normalize=config.loss.std_normalize)


def build_sequences(trained: list[ChallengerSample], reasoner_prompts: list[list[int]],
                    answers: list[list[Completion]], samples: int, pad_id: int) -> tuple[Batch, torch.Tensor]:
    """Padded prompt+completion sequences of both roles, and for each the index of its advantage in
    concat(challenger advantages [T], reasoner advantages [T * G])."""
    rows: list[tuple[list[int], Completion, str, int]] = []
    for t, sample in enumerate(trained):
        rows.append((sample.prompt_ids, sample.completion, "challenger", t))
    valid_rows = [t for t, s in enumerate(trained) if isinstance(s.result, Task)]
    for t, prompt, group in zip(valid_rows, reasoner_prompts, answers):
        for g, completion in enumerate(group):
            rows.append((prompt, completion, "reasoner", len(trained) + t * samples + g))
    width = max((len(p) + len(c.token_ids) for p, c, _, _ in rows), default=1)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    attention, loss_mask = torch.zeros(shape, dtype=torch.long), torch.zeros(shape)
    rollout_logprobs = torch.zeros(shape)
    for i, (prompt, completion, _, _) in enumerate(rows):
        start, end = len(prompt), len(prompt) + len(completion.token_ids)
        input_ids[i, :end] = torch.tensor(prompt + completion.token_ids)
        attention[i, :end] = 1
        loss_mask[i, start:end] = 1
        rollout_logprobs[i, start:end] = torch.tensor(completion.logprobs)
    batch = Batch(input_ids, attention, loss_mask, torch.zeros(shape), rollout_logprobs,
                  [role for _, _, role, _ in rows], [c.masked_logprobs for _, c, _, _ in rows])
    return batch, torch.tensor([source for _, _, _, source in rows], dtype=torch.long)


def run_rollouts(engine: RolloutEngine, tokenizer, corpus: Corpus, config: SpiceConfig,
                 index: int) -> tuple[Iteration, Batch]:
    """Everything before the update: documents, tasks, answers, verdicts, rewards, the batch."""
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    documents = sample_documents(corpus, config, index)
    kinds, format_invalid = choose_kinds(engine, tokenizer, documents, config, index)
    lap("format_selection")
    attempts = challenge_documents(engine, tokenizer, documents, kinds, config, index)
    trained = select_attempts(attempts, config, index)
    lap("challenger")
    if config.challenger.refine_rounds:
        refine_tasks(engine, tokenizer, trained, config, index)
        lap("refine")
    shuffle_options(trained, config, index)
    tasks = [s.result for s in trained if isinstance(s.result, Task)]
    reasoner_prompts, answers = answer_tasks(engine, tokenizer, tasks, config, index)
    lap("reasoner")
    verdicts = verify_answers(trained, answers, config.reasoner.samples)
    lap("verify")
    batch, sources = build_sequences(trained, reasoner_prompts, answers, config.reasoner.samples,
                                     tokenizer.pad_token_id)
    scores = score(trained, verdicts, config, (sources, batch.loss_mask))
    batch.advantages = scores.token_advantages
    lap("rewards")
    iteration = Iteration(index, documents, attempts, trained, reasoner_prompts, answers, verdicts, scores,
                          format_invalid, seconds=seconds)
    return iteration, batch


def update_policy(backend: TrainBackend, batch: Batch) -> dict:
    """One policy step on both roles' sequences. Rollout logprobs of a grammar-masked distribution
    (SGLang under json_schema) are first replaced by the trainer's own: their importance weight is 1."""
    masked = [row for row, flag in enumerate(batch.masked_logprobs) if flag]
    if masked:
        batch.rollout_logprobs[masked] = backend.logprobs(batch.select(masked))
    return backend.step(batch)


def sync_weights(backend: TrainBackend, engine: RolloutEngine, version: int) -> dict:
    """Send the trained weights to the rollout engine, which then tags completions with `version`."""
    return engine.update_weights(backend.named_weights(), version)
