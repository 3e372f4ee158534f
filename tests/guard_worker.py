"""`spice train` like tests/run_worker.py, with one injected fault for the guard tests: with
SPICE_TEST_SPIKE_AT=N the challenger reward of iteration N is raised by 50, once (a marker file in the
run folder remembers it), so that a rollback rule fires and the redone iteration is normal."""

import os
import sys
from pathlib import Path

import spice.run
import spice.telemetry
from tests.run_worker import scripted_factory

real_metrics = spice.telemetry.iteration_metrics


def spiked_metrics(iteration, samples):
    row = real_metrics(iteration, samples)
    marker = Path(os.environ["SPICE_TEST_SPIKE_MARKER"])
    if iteration.index == int(os.environ["SPICE_TEST_SPIKE_AT"]) and not marker.exists():
        marker.write_text("spiked")
        row["challenger_reward_mean"] += 50.0
    return row


if __name__ == "__main__":
    spice.run.make_rollout_engine = scripted_factory
    if "SPICE_TEST_SPIKE_AT" in os.environ:
        spice.telemetry.iteration_metrics = spiked_metrics
    from spice.cli import main

    sys.exit(main(sys.argv[1:]))
