"""`spice train` under torchrun on CPU (gloo, two processes, torch backend, tiny model, scripted
challenger as in test_run.py): waiting ranks survive a rollout longer than the compute group's
timeout, and the Slurm script's preemption path (USR1 -> STOP -> checkpoint -> requeue -> resume)
loses and duplicates no rows. The sbatch script runs under bash with stand-ins for srun and scontrol."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spice.rollout.sglang_servers import free_port
from tests.test_run import _args, _corpus, _rows

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.distributed


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _torchrun(args, env, timeout=600):
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              str(ROOT / "tests" / "run_worker.py"), *args], env=env, cwd=ROOT,
                             timeout=timeout, capture_output=True, text=True)
    return process.returncode, process.stdout[-3000:] + process.stderr[-6000:]


@pytest.mark.parametrize("control_hours, completes", [(1.0, True), (0.0008, False)])
def test_waiting_ranks_outlast_the_compute_timeout(tiny_model, tmp_path, control_hours, completes):
    """Rank 0's rollouts take 8 s, the compute group's timeout is 3 s: rank 1 waits in the gloo control
    group, so the run completes; with a control timeout (3 s) shorter than the wait it fails."""
    run_dir = tmp_path / "run"
    args = [*_args(run_dir, _corpus(tmp_path), tiny_model, iterations=1), "train.distributed_timeout_minutes=0.05",
            f"train.control_timeout_hours={control_hours}"]
    code, output = _torchrun(args, _env(SPICE_TEST_ROLLOUT_SECONDS="8"))
    if completes:
        assert code == 0, output
        assert [m["iteration"] for m in _rows(run_dir / "metrics.jsonl")] == [0]
    else:
        assert code != 0 and ("timeout" in output.lower() or "timed out" in output.lower()), output


def _fake_slurm(bin_dir: Path, requeues: Path) -> None:
    """srun runs its command after dropping its own options; scontrol answers hostnames and records requeues."""
    bin_dir.mkdir()
    scripts = {
        "srun": '#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n',
        "scontrol": ('#!/usr/bin/env bash\nif [ "$1" = show ]; then echo 127.0.0.1; '
                     f'else echo "$@" >> {requeues}; fi\n'),
        "torchrun": f'#!/usr/bin/env bash\nexec {sys.executable} -m torch.distributed.run "$@"\n',
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_slurm_warning_checkpoints_requeues_and_resumes_without_lost_or_duplicated_rows(tiny_model, tmp_path):
    run_dir, requeues = tmp_path / "run", tmp_path / "requeues.txt"
    _fake_slurm(tmp_path / "bin", requeues)
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  backend: torch\n")
    overrides = [a for a in _args(run_dir, _corpus(tmp_path), tiny_model, iterations=5) if a != "train"]
    env = _env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="node0",
               SLURM_NNODES="1", SLURM_GPUS_ON_NODE="2", SLURM_CPUS_PER_TASK="1", MASTER_PORT=str(free_port()),
               SPICE_MODULE="tests.run_worker")
    command = ["bash", str(ROOT / "examples" / "slurm_spice.sbatch"), str(config), *overrides]
    job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline and job.poll() is None and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)  # --signal=B:USR1: to the batch shell only, inside iteration 2
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output
    done = len(_rows(metrics))
    assert 1 <= done < 5 and f"stopped after iteration {done}" in output, output
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{done:06d}"
    assert requeues.read_text().split() == ["requeue", "4242"]
    # the requeued job: same script, same arguments; it resumes and runs to the end
    env["MASTER_PORT"] = str(free_port())
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resumed {run_dir} at iteration {done}" in again.stdout and not (run_dir / "STOP").exists()
    assert requeues.read_text().split() == ["requeue", "4242"]  # no warning this time: no requeue
    assert [m["iteration"] for m in _rows(metrics)] == list(range(5))
    tasks = [(t["iteration"], t["attempt"], t["document_id"]) for t in _rows(run_dir / "tasks.jsonl")]
    assert len(tasks) == len(set(tasks)) and {t[0] for t in tasks} == set(range(5))
    assert all(json.loads(line) for line in (run_dir / "tasks.jsonl").read_text().splitlines())
