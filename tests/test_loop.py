import json

import torch

from spice import loop
from spice.config import load_config
from spice.corpus import load_corpus
from spice.rollout.hf import HFRolloutEngine
from spice.schemas import SEMANTIC_REASONS
from spice.tasks import Invalid, Task
from spice.telemetry import iteration_metrics, task_records
from spice.train.torch_backend import TorchBackend
from tests.scripted import ScriptedChallengerEngine

DOCUMENTS = [
    "Marie Curie was born in Warsaw in 1867 and won two Nobel Prizes, in physics and in chemistry.",
    "The Danube flows through ten countries, more than any other river in the world, before the Black Sea.",
    "Photosynthesis in plants converts light energy, water and carbon dioxide into glucose and oxygen.",
]


def make_corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCUMENTS))
    return load_corpus(path), path


def config_for(tmp_path, corpus_path, model, *extra):
    return load_config(None, [
        f"run.dir={tmp_path / 'run'}", "run.iterations=2", "run.documents_per_iteration=2",
        f"model.path={model}", f"corpus.path={corpus_path}", "challenger.attempts_per_document=2",
        "challenger.select_format=false", "challenger.formats=[mcq]", "challenger.max_new_tokens=12",
        "reasoner.samples=2", "reasoner.max_new_tokens=8", "optim.lr=1e-3", "optim.micro_batch_size=4",
        "challenger.prompt_style=compact", *extra])


def test_one_iteration_end_to_end_changes_the_weights(tiny_model, tmp_path):
    corpus, corpus_path = make_corpus(tmp_path)
    config = config_for(tmp_path, corpus_path, tiny_model)
    engine = ScriptedChallengerEngine(HFRolloutEngine(tiny_model, batch_size=8), corpus.documents)
    backend = TorchBackend(config, tiny_model)
    before = {n: t.clone() for n, t in backend.named_weights()}

    iteration, batch = loop.run_rollouts(engine, engine.tokenizer, corpus, config, 0)
    assert len(iteration.documents) == 2 and len(iteration.attempts) == 4
    assert sum(isinstance(s.result, Task) for s in iteration.trained) == 2  # one kept per document
    assert sum(isinstance(s.result, Invalid) for s in iteration.trained) == 2  # random JSON is invalid
    assert iteration.verdicts.shape == (4, 2)
    assert batch.num_sequences == 4 + 2 * 2
    assert batch.roles.count("reasoner") == 4
    # rewards: invalid -0.1, valid tasks the Gaussian of the variance; one baseline for the role
    rewards = iteration.scores.challenger_rewards
    assert torch.allclose(rewards[[1, 3]], torch.tensor([-0.1, -0.1]))
    assert (rewards[[0, 2]] > 0).all()
    assert batch.advantages[batch.loss_mask == 0].abs().sum() == 0
    challenger_adv = batch.advantages[:4].sum(1)
    assert (challenger_adv != 0).any()

    metrics = loop.update_policy(backend, batch)
    assert metrics["grad_norm"] > 0
    changed = sum(not torch.equal(t, before[n]) for n, t in backend.named_weights())
    assert changed == len(before)
    sync = loop.sync_weights(backend, engine, 1)
    assert sync["gigabytes"] > 0 and engine.weight_version == 1
    for name, tensor in engine.engine.model.state_dict().items():
        assert torch.equal(tensor, dict(backend.named_weights())[name])

    iteration.train_metrics = metrics
    row = iteration_metrics(iteration, config.reasoner.samples)
    assert row["valid_task_rate"] == 0.5
    assert row["documents_with_task"] == 1.0
    assert sum(row["correct_histogram"]) == 2
    assert set(row["invalid_reasons"]) <= set(__import__("spice.tasks").tasks.INVALID_REASONS)
    records = task_records(iteration, 7)  # the weights' version, which need not equal the iteration index
    assert len(records) == 4 and {r["weight_version"] for r in records} == {7}
    valid = [r for r in records if r["status"] == "valid"]
    assert all(len(r["reasoner"]) == 2 and r["document_id"] for r in valid)


def test_constrained_answer_boxes_every_reasoner_reply(tiny_model, tmp_path):
    """reasoner.constrained_answer: the reasoner's replies (one request, a regex per task) each end in one
    boxed letter, which the verifier reads; without it a random model's replies box nothing."""
    import re

    corpus, corpus_path = make_corpus(tmp_path)
    for constrained in (True, False):
        config = config_for(tmp_path, corpus_path, tiny_model, "reasoner.max_new_tokens=40",
                            f"reasoner.constrained_answer={str(constrained).lower()}")
        engine = ScriptedChallengerEngine(HFRolloutEngine(tiny_model, batch_size=8), corpus.documents)
        iteration, _ = loop.run_rollouts(engine, engine.tokenizer, corpus, config, 0)
        replies = [c.text for group in iteration.answers for c in group]
        assert len(replies) == 4
        boxed = [bool(re.search(r"\\boxed\{[A-D]\}$", text)) for text in replies]
        assert all(boxed) if constrained else not any(boxed)


def test_mcq_options_reach_the_reasoner_shuffled_and_are_recorded(tiny_model, tmp_path):
    """The scripted challenger always puts the gold at A; the reasoner sees it moved, its verdicts use
    the moved letter, and the record keeps the order. Off: the challenger's order."""
    corpus, corpus_path = make_corpus(tmp_path)
    for shuffle in (True, False):
        config = config_for(tmp_path, corpus_path, tiny_model, "run.documents_per_iteration=3",
                            f"challenger.shuffle_options={str(shuffle).lower()}")
        engine = ScriptedChallengerEngine(HFRolloutEngine(tiny_model, batch_size=8), corpus.documents)
        golds = []
        for index in range(3):
            iteration, _ = loop.run_rollouts(engine, engine.tokenizer, corpus, config, index)
            for sample, prompt in zip([s for s in iteration.trained if isinstance(s.result, Task)],
                                      iteration.reasoner_prompts):
                task = sample.result
                words = sample.document.text.split()
                assert task.options[ord(task.answer) - ord("A")] == words[0]  # the gold moved with its option
                assert f"{task.answer}. {words[0]}" in engine.tokenizer.decode(prompt)
                golds.append(task.answer)
            records = [r for r in task_records(iteration, 0) if r["status"] == "valid"]
            assert all(("option_order" in r) == shuffle for r in records)
        assert (set(golds) != {"A"}) if shuffle else (set(golds) == {"A"})


def test_kinds_come_from_the_allowed_formats(tiny_model, tmp_path):
    corpus, corpus_path = make_corpus(tmp_path)
    config = config_for(tmp_path, corpus_path, tiny_model, "challenger.formats=[free_form]")
    kinds, failed = loop.choose_kinds(None, None, corpus.documents, config, 0)
    assert failed == 0 and set(kinds) <= {"integer", "float", "expression", "string"}
    assert kinds == loop.choose_kinds(None, None, corpus.documents, config, 0)[0]


def test_format_selection_by_the_model_falls_back_when_unparsable(tiny_model, tmp_path):
    corpus, corpus_path = make_corpus(tmp_path)
    config = config_for(tmp_path, corpus_path, tiny_model, "challenger.select_format=true")
    engine = HFRolloutEngine(tiny_model)
    kinds, failed = loop.choose_kinds(engine, engine.tokenizer, corpus.documents, config, 0)
    assert len(kinds) == 3 and failed == 3  # a random model never writes the JSON verdict
    assert set(kinds) == {"mcq"}


def test_constrained_challenger_output_always_parses_as_json(tiny_model, tmp_path):
    corpus, corpus_path = make_corpus(tmp_path)
    config = config_for(tmp_path, corpus_path, tiny_model, "challenger.constrained_decoding=true",
                        "challenger.max_new_tokens=700", "challenger.max_attempts=2")  # one round: never grounded
    engine = HFRolloutEngine(tiny_model, batch_size=8)
    iteration, _ = loop.run_rollouts(engine, engine.tokenizer, corpus, config, 0)
    invalid = [s.result for s in iteration.attempts if isinstance(s.result, Invalid)]
    assert all(s.completion.finish_reason == "stop" for s in iteration.attempts)
    # a random model cannot ground its quote, but the JSON itself always parses under the schema: only the
    # reasons no schema can express remain (duplicate or blank options, never a wrong number of them)
    assert {r.reason for r in invalid} <= SEMANTIC_REASONS
    # the quote is one of the document's sentences (challenger.quote_from_document), so it always grounds
    assert not {r.reason for r in invalid} & {"quote_not_in_document", "quote_too_short", "empty_quote"}
    assert all(r.detail in ("an option is empty", "options are not distinct",
                            "an option is only a letter label or punctuation",
                            "options are difficulty labels (easy, medium, hard), not answers")
               for r in invalid if r.reason == "mcq_options")


CHECKED_TASKS = {  # document prefix -> (quote, question, answer, program) of a free-form integer task
    "Marie Curie": ("born in Warsaw in 1867", "In which year did Marie Curie, born in Warsaw, turn 40?", 1907,
                    "born = 1867\nprint(born + 40)"),
    "The Danube": ("flows through ten countries", "How many countries does the Danube flow through, doubled?",
                   20, "print(10 * 2)"),
    "Photosynthesis": ("water and carbon dioxide into glucose", "How many substances does photosynthesis "
                       "turn into glucose and oxygen besides light?", 2, "print(len(['water', 'CO2']))"),
}


def checked_challenger(prompt, sampling):
    """Format verdict: integer. Challenger: a task whose program agrees, then one with a wrong gold answer.
    Suggester and editor: a harder wording with the same answer. Reasoner prompts: the real model."""
    if "Which question type" in prompt:
        return '{"format": "free_form", "answer_type": "integer"}'
    prefix = next((p for p in CHECKED_TASKS if p in prompt), None)
    if prefix is None:
        return None
    quote, question, answer, program = CHECKED_TASKS[prefix]
    if "Suggest up to three" in prompt:
        return "Ask for it in two steps."
    if "Rewrite the task" in prompt:
        question = "First recall the fact, then answer: " + question
    task = {"answer_type": "integer", "quote": quote, "question": question, "program": program,
            "answer": str(answer), "difficulty": "easy"}
    wrong = dict(task, answer=str(answer + 1))
    return [json.dumps(task), json.dumps(wrong)][:sampling.n] if "Rewrite" not in prompt else json.dumps(task)


def test_check_programs_and_refinement_in_the_loop(tiny_model, tmp_path):
    from spice.checks import CHECK_REASONS
    from tests.scripted import ScriptedTextEngine

    corpus, corpus_path = make_corpus(tmp_path)
    config = config_for(tmp_path, corpus_path, tiny_model, "challenger.select_format=true",
                        "challenger.formats=[free_form]", "challenger.check=required_numeric",
                        "challenger.refine_rounds=1", "challenger.constrained_decoding=false")
    real = HFRolloutEngine(tiny_model, batch_size=8)
    engine = ScriptedTextEngine(real.tokenizer, checked_challenger, real)
    iteration, batch = loop.run_rollouts(engine, engine.tokenizer, corpus, config, 0)
    first, second = iteration.attempts[0], iteration.attempts[1]
    assert isinstance(first.result, Task) and first.check["verdict"] == "passed"
    assert isinstance(second.result, Invalid) and second.result.reason == "check_mismatch"
    assert second.check["output"].strip() == str(int(second.result.extra["task"].answer) - 1)
    challenger_prompts = [t for texts, s in engine.requests for t in texts if "Write a question" in t]
    assert challenger_prompts and all("program" in t for t in challenger_prompts)
    # the kept task was refined: the trained sample is the editor's, every version is in the audit row
    assert first.result.question.startswith("First recall the fact")
    assert "Rewrite the task" in engine.tokenizer.decode(first.prompt_ids)
    assert "refine" in iteration.seconds
    assert batch.roles.count("reasoner") == 2 * 2
    records = task_records(iteration, 0)
    assert records[0]["check"]["program"] and [v["status"] for v in records[0]["versions"]] == ["original",
                                                                                              "accepted"]
    assert records[1]["reason"] == "check_mismatch" and records[1]["check"]["verdict"] == "check_mismatch"
    row = iteration_metrics(iteration, config.reasoner.samples)
    assert row["check/program_share"] == 1.0 and row["check/passed"] == 0.5
    assert row["check/check_mismatch"] == 0.5
    assert set(row["invalid_reasons"]) <= set(CHECK_REASONS)


def test_masked_rollout_logprobs_are_replaced_by_the_trainers_before_the_step():
    """Sequences whose engine logprobs are of a grammar-masked distribution get the trainer's own
    (importance weight 1); the others keep the engine's."""
    from spice.train.base import Batch

    class Backend:
        def logprobs(self, batch):
            self.scored = batch.input_ids.tolist()
            return torch.full(batch.input_ids.shape, -2.0) * batch.loss_mask

        def step(self, batch):
            self.stepped = batch.rollout_logprobs.clone()
            return {"loss": 0.0}

    ids = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    mask = torch.tensor([[0.0, 1, 1], [0, 1, 1], [0, 0, 1]])
    batch = Batch(ids, torch.ones_like(ids), mask, torch.zeros(3, 3), torch.full((3, 3), -9.0) * mask,
                  ["challenger", "reasoner", "challenger"], [True, False, True])
    backend = Backend()
    loop.update_policy(backend, batch)
    assert backend.scored == [[5, 6, 7], [11, 12, 13]]
    assert backend.stepped.tolist() == [[0, -2, -2], [0, -9, -9], [0, 0, -2]]
