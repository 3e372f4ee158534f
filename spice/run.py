"""A training run: set up the pieces, resume if asked, and repeat `spice.loop`'s iteration with
records, checkpoints, evaluation and a graceful stop."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
from tqdm import tqdm

from spice import checkpoint, loop, telemetry
from spice.config import SpiceConfig, constrained_decoding, dump_config, load_config
from spice.corpus import load_corpus
from spice.embedded import resolve_corpus_path, resolve_model_path
from spice.errors import UserError
from spice.guard.core import Guard
from spice.rollout.base import RolloutEngine
from spice.train.base import TrainBackend


def make_rollout_engine(config: SpiceConfig, model_dir: Path) -> RolloutEngine:
    if config.rollout.engine == "sglang":
        from spice.rollout.sglang import SGLangRolloutEngine

        return SGLangRolloutEngine(config, model_dir)
    from spice.rollout.hf import HFRolloutEngine

    return HFRolloutEngine(model_dir, dtype=config.model.dtype, batch_size=config.rollout.batch_size,
                           seed=config.run.seed)


def make_train_backend(config: SpiceConfig, model_dir: Path) -> TrainBackend:
    if config.train.backend == "megatron":
        from spice.train.megatron.backend import MegatronBackend

        return MegatronBackend(config, model_dir)
    from spice.train.torch_backend import TorchBackend

    return TorchBackend(config, model_dir)


class StopSwitch:
    """SIGINT/SIGTERM or a STOP file in the run folder: finish the step, checkpoint, exit 0."""

    def __init__(self, run_dir: Path) -> None:
        self.file = run_dir / "STOP"
        self.signalled = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signalled:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signalled = True
        print(f"\nspice: received {signal.Signals(signum).name}; finishing this iteration, then "
              "checkpointing (send again to abort)", file=sys.stderr, flush=True)

    def requested(self) -> bool:
        return self.signalled or self.file.exists()


@dataclass
class RunState:
    next_iteration: int = 0
    weight_version: int = 0


def _truncate(path: Path, size: int) -> None:
    """Drop rows written after the checkpoint: they belong to an iteration that will be redone."""
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


_CONTROL: dist.ProcessGroup | None = None  # gloo group of the loop's broadcasts (see _open_control_group)


def _open_control_group(hours: float, world: int) -> None:
    """A gloo group for the loop's object broadcasts and barriers, with a timeout of `hours`: ranks > 0
    wait in it while rank 0 rolls out and evaluates, which may outlast the compute groups' timeout
    (NCCL's watchdog would abort them). A collective: every rank calls it once, in the same place."""
    global _CONTROL
    if world > 1:
        _CONTROL = dist.new_group(backend="gloo", timeout=timedelta(hours=hours))


def _broadcast(value, rank: int, world: int):
    if world == 1:
        return value
    holder = [value if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0, group=_CONTROL)
    return holder[0]


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier(group=_CONTROL)


def prepare_run_dir(config: SpiceConfig, resume: bool) -> Path:
    """The run folder, created; a STOP file left by an earlier stop is removed (it asked that run to stop,
    not this one)."""
    run_dir = Path(config.run.dir)
    if not resume and (run_dir / "checkpoints" / "latest").exists():
        raise UserError(f"{run_dir} already holds a run; resume it with `spice train --resume {run_dir}` "
                        "or choose another run.dir")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run.dir {str(run_dir)!r} is a file, not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    stop_file = run_dir / "STOP"
    if stop_file.exists() and (not dist.is_initialized() or dist.get_rank() == 0):
        stop_file.unlink(missing_ok=True)
        print(f"spice: removed {stop_file} left by an earlier stop", flush=True)
    return run_dir


def train(config: SpiceConfig, resume: bool = False) -> int:
    """Run `config.run.iterations` SPICE iterations (continuing a checkpointed run when `resume`)."""
    run_dir = prepare_run_dir(config, resume)
    model_dir = resolve_model_path(config.model.path)
    corpus_path = resolve_corpus_path(config.corpus.path)
    raw_corpus = None
    if not dist.is_initialized() or dist.get_rank() == 0:  # read before any model loads: bad input fails fast
        raw_corpus = load_corpus(corpus_path, text_field=config.corpus.text_field, limit=config.corpus.limit)
    backend = make_train_backend(config, model_dir)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    _open_control_group(config.train.control_timeout_hours, world)
    main = rank == 0
    if main:
        dump_config(config, run_dir / "config.yaml")
    metrics_path, tasks_path = run_dir / "metrics.jsonl", run_dir / "tasks.jsonl"
    guard = Guard(config, run_dir, main, share=lambda value: _broadcast(value, rank, world))

    state = RunState()
    latest = checkpoint.latest_checkpoint(run_dir) if resume else None
    if latest is not None:
        saved = checkpoint.load_checkpoint(latest, backend)
        state = RunState(saved["next_iteration"], saved["weight_version"])
        if main:
            _truncate(metrics_path, saved["metrics_bytes"])
            _truncate(tasks_path, saved["tasks_bytes"])
            print(f"spice: resumed {run_dir} at iteration {state.next_iteration} from {latest.name}")
    elif main:  # no checkpoint: rows left by a run that crashed before its first one are redone from 0
        _truncate(metrics_path, 0)
        _truncate(tasks_path, 0)
    guard.start(saved if latest is not None else None, corpus_path)  # re-anchors the record chains

    engine, tokenizer, corpus = None, None, None
    if main:
        engine = make_rollout_engine(config, model_dir)
        tokenizer = engine.tokenizer
        corpus = raw_corpus.segmented(tokenizer, config.corpus.max_segment_tokens)
        print(f"spice: {len(corpus.documents)} document segments from {corpus_path}; model {model_dir}; "
              f"rollout {config.rollout.engine}, backend {config.train.backend}, world size {world}")
    _barrier(world)  # in the control group: starting servers may outlast the compute groups' timeout
    if state.weight_version:
        _sync(backend, engine, state.weight_version)
    guard.prepare_drift(engine, tokenizer, corpus.documents if main else [], backend.logprobs, state.weight_version)
    if latest is None and guard.needs_baseline():  # the initial weights: a rollback target
        _save(run_dir, backend, state, config, rank, world, guard)

    stop = StopSwitch(run_dir)
    total = config.run.iterations
    while state.next_iteration < total:
        index, version = state.next_iteration, state.weight_version  # the weights the rollouts use
        iteration, batch = None, None
        if main:
            # no total: how many tasks turn out valid (and get G answers) is known only as they come
            with tqdm(desc=f"iteration {index + 1}/{total}", unit="seq", leave=False, file=sys.stderr,
                      mininterval=2.0) as bar:
                engine.progress = bar.update
                iteration, batch = loop.run_rollouts(engine, tokenizer, corpus, config, index)
                engine.progress = None
            if config.rollout.engine == "sglang" and config.rollout.sglang.weight_sync == "tensor":
                engine.release_memory()  # colocated: the trainer gets the GPUs; update_weights resumes
        batch = _broadcast(batch, rank, world)
        started = time.perf_counter()
        train_metrics = loop.update_policy(backend, batch)
        trained = time.perf_counter()
        sync_metrics = _sync(backend, engine, state.weight_version + 1)
        state = RunState(index + 1, state.weight_version + 1)
        if main:
            iteration.train_metrics, iteration.sync_metrics = train_metrics, sync_metrics
            iteration.seconds.update(train=trained - started, weight_sync=time.perf_counter() - trained)
            metrics = telemetry.iteration_metrics(iteration, config.reasoner.samples)
            metrics["constrained_decoding"] = constrained_decoding(config)
            if config.eval.every and (index + 1) % config.eval.every == 0:
                from spice.eval.runner import evaluate_during_training

                print(f"spice: evaluating on {', '.join(config.eval.benchmarks)}", flush=True)
                metrics.update(evaluate_during_training(
                    engine, tokenizer, config.eval, prompt_style=config.challenger.prompt_style,
                    seed=config.run.seed, output=run_dir / "eval" / f"iter_{index + 1:06d}.json", log=print))
            guard.record(tasks_path.name, telemetry.task_records(iteration, version))  # hash-chained rows
            guard.record(metrics_path.name, [metrics])
            print(telemetry.summary_line(metrics, total), flush=True)
        drift = guard.measure_drift(backend.logprobs, index)
        verdict = _broadcast(guard.observe(iteration, metrics, drift, stop.requested, version) if main else None,
                             rank, world)
        if verdict.rollback:
            target = _broadcast(guard.roll_back(state.weight_version, verdict.reasons) if main else None, rank, world)
            if target is not None:
                state = _roll_back(target, backend, engine, guard, world)
                if verdict.then == "continue":
                    continue
                if main:
                    print(f"spice: rolled back to {target.name} and stopped (guard); resume with "
                          f"`spice train --resume {run_dir}`", flush=True)
                break
        stopping = _broadcast(stop.requested() or verdict.rollback or verdict.stop, rank, world)
        last = state.next_iteration == total
        if stopping or last or state.next_iteration % config.run.checkpoint_every == 0:
            _save(run_dir, backend, state, config, rank, world, guard)
        if stopping:
            if main:
                print(f"spice: stopped after iteration {index + 1}; resume with "
                      f"`spice train --resume {run_dir}`", flush=True)
            break
    if engine is not None:
        engine.close()
    guard.close()
    return 0


def _sync(backend: TrainBackend, engine: RolloutEngine | None, version: int) -> dict:
    """Weights to the engine on rank 0; other ranks take part in the gather and drop the result."""
    if engine is not None:
        return loop.sync_weights(backend, engine, version)
    for _ in backend.named_weights():
        pass
    return {}


def _roll_back(target: Path, backend: TrainBackend, engine: RolloutEngine | None, guard: Guard,
               world: int) -> RunState:
    """Restore the checkpoint the guard rolled back to (its loop state already rewritten by rank 0)."""
    _barrier(world)
    saved = checkpoint.load_checkpoint(target, backend)
    guard.after_rollback(saved.get("guard_rollbacks", 0))
    state = RunState(saved["next_iteration"], saved["weight_version"])
    _sync(backend, engine, state.weight_version)
    return state


def _save(run_dir: Path, backend: TrainBackend, state: RunState, config: SpiceConfig, rank: int,
          world: int, guard: Guard) -> None:
    sizes = {"metrics_bytes": 0, "tasks_bytes": 0}
    for key, name in (("metrics_bytes", "metrics.jsonl"), ("tasks_bytes", "tasks.jsonl")):
        path = run_dir / name
        sizes[key] = path.stat().st_size if path.exists() else 0
    loop_state = {"next_iteration": state.next_iteration, "weight_version": state.weight_version, **sizes,
                  **guard.loop_state()}
    path = checkpoint.save_checkpoint(run_dir, state.next_iteration, backend, loop_state,
                                      keep=config.run.keep_checkpoints, rank=rank, world=world,
                                      protect=guard.protected())
    guard.saved(path)  # its file hashes go to events.jsonl


def resume_config(run_dir: str | Path, overrides: list[str]) -> SpiceConfig:
    """The saved config of a run, with overrides (e.g. `run.iterations=...`)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_config(path, overrides)
    config.run.dir = str(run_dir)
    return config

