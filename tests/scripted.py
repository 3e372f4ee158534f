"""A test double around a real rollout engine: the first challenger attempt of every document is
replaced by a valid, grounded MCQ task, so that a tiny random model yields both valid and invalid
tasks (a random model never writes valid JSON) and both roles get non-zero advantages."""

import json

from spice.rollout.base import Completion, SamplingParams, per_prompt


class ScriptedChallengerEngine:
    def __init__(self, engine, documents):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.documents = documents
        self.progress = None

    @property
    def weight_version(self):
        return self.engine.weight_version

    def _document_in(self, prompt):
        text = self.tokenizer.decode(prompt)
        return next((d for d in self.documents if d.text[:60] in text), None)

    def generate(self, prompts, sampling: SamplingParams):
        out = self.engine.generate(prompts, sampling)
        for prompt, group in zip(prompts, out):
            document = self._document_in(prompt)
            if document is None or not group:
                continue
            words = document.text.split()
            task = {"question": f"Which word opens the sentence about {words[1]}?",
                    "options": [words[0], "zebra", "quartz", "violin"], "answer": "A",
                    "quote": " ".join(words[:6]), "solution": "It is quoted.", "difficulty": "easy"}
            text = json.dumps(task)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            group[0] = Completion(group[0].prompt_index, text, ids, [-1.0] * len(ids), "stop",
                                  self.engine.weight_version)
        return out

    def update_weights(self, named_tensors, version):
        return self.engine.update_weights(named_tensors, version)

    def close(self):
        self.engine.close()


class ScriptedTextEngine:
    """An engine without a model: `respond(prompt_text, sampling)` returns the text of each completion
    (a string, or a list of `sampling.n` strings); with `engine`, prompts it returns None for go there."""

    def __init__(self, tokenizer, respond, engine=None):
        self.tokenizer = tokenizer
        self.respond = respond
        self.engine = engine
        self.weight_version = 0
        self.progress = None
        self.requests = []  # (decoded prompts, sampling) of every generate call

    def _completion(self, index, text):
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        return Completion(index, text, ids, [-1.0] * len(ids), "stop", self.weight_version)

    def generate(self, prompts, sampling: SamplingParams):
        texts = [self.tokenizer.decode(p) for p in prompts]
        self.requests.append((texts, sampling))
        params = per_prompt(sampling, len(prompts))  # shared or one per prompt (schemas differ by row)
        answers = [self.respond(t, p) for t, p in zip(texts, params)]
        passed = [i for i, a in enumerate(answers) if a is None]
        out = [None] * len(prompts)
        if passed:
            for i, group in zip(passed, self.engine.generate([prompts[i] for i in passed],
                                                             [params[i] for i in passed])):
                out[i] = group
        for i, answer in enumerate(answers):
            if answer is not None:
                answer = [answer] * params[i].n if isinstance(answer, str) else answer
                out[i] = [self._completion(i, a) for a in answer]
        return out

    def update_weights(self, named_tensors, version):
        self.weight_version = version
        return self.engine.update_weights(named_tensors, version) if self.engine else {}

    def close(self):
        if self.engine:
            self.engine.close()
