"""`spice train` with the scripted challenger around the real engine (see tests/scripted.py); run by
tests/test_run.py in a subprocess so that it can be killed."""

import os
import sys
import time

import spice.loop
import spice.run
from spice.corpus import load_corpus
from spice.embedded import resolve_corpus_path
from tests.scripted import ScriptedChallengerEngine

real_factory = spice.run.make_rollout_engine


def scripted_factory(config, model_dir):
    documents = load_corpus(resolve_corpus_path(config.corpus.path)).documents
    return ScriptedChallengerEngine(real_factory(config, model_dir), documents)


real_rollouts = spice.loop.run_rollouts


def slow_rollouts(*args, **kwargs):
    """Rollouts that take SPICE_TEST_ROLLOUT_SECONDS longer (rank 0 only runs them): the other ranks
    wait meanwhile, as they do for a long rollout on a cluster."""
    time.sleep(float(os.environ["SPICE_TEST_ROLLOUT_SECONDS"]))
    return real_rollouts(*args, **kwargs)


if __name__ == "__main__":
    spice.run.make_rollout_engine = scripted_factory
    if os.environ.get("SPICE_TEST_ROLLOUT_SECONDS"):
        spice.loop.run_rollouts = slow_rollouts
    from spice.cli import main

    sys.exit(main(sys.argv[1:]))
