"""A test double around a real rollout engine: the first challenger attempt of every document is
replaced by a valid, grounded MCQ task, so that a tiny random model yields both valid and invalid
tasks (a random model never writes valid JSON) and both roles get non-zero advantages."""

import json

from spice.rollout.base import Completion, SamplingParams


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
