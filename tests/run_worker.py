"""`spice train` with the scripted challenger around the real engine (see tests/scripted.py); run by
tests/test_run.py in a subprocess so that it can be killed."""

import sys

import spice.run
from spice.corpus import load_corpus
from spice.embedded import resolve_corpus_path
from tests.scripted import ScriptedChallengerEngine

real_factory = spice.run.make_rollout_engine


def scripted_factory(config, model_dir):
    documents = load_corpus(resolve_corpus_path(config.corpus.path)).documents
    return ScriptedChallengerEngine(real_factory(config, model_dir), documents)


if __name__ == "__main__":
    spice.run.make_rollout_engine = scripted_factory
    from spice.cli import main

    sys.exit(main(sys.argv[1:]))
