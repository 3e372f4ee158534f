"""math-verify in worker processes with a hard per-item wall-clock timeout: a worker that overruns or
dies is killed and replaced and its item counts as wrong (logged), so no input can hang or crash the
caller."""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 0.8  # per item in math-verify: with the kill, no item takes over 1 s
STARTUP_TIMEOUT_S = 120.0  # a worker importing math-verify on a loaded machine
_WORKER_COMMAND = "from spice.verify.pool import _worker_main; _worker_main()"


def _math_verify_pair(answer: str, gold: str, cache: dict) -> bool:
    """math-verify's verdict on a cleaned answer against a cleaned gold, both read as boxed LaTeX."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    from spice.verify.frame import tiny_values_differ

    def parsed(s: str):
        if s not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[s] = parse("\\boxed{" + s + "}", parsing_timeout=None)
        return cache[s]

    try:
        if not mv_verify(parsed(gold), parsed(answer), timeout_seconds=None):
            return False
        return not tiny_values_differ(parsed(gold), parsed(answer))  # its 6-place rounding equates them
    except Exception:  # math-verify or sympy failing on a string is a wrong answer, not a crash
        return False


_WARMUP = (("x^2+1", "1+x^2"), ("\\frac{\\sqrt{3}}{2}", "0.866"), ("(1,2]", "(1,2]"), ("\\{1,2\\}", "\\{2,1\\}"),
           ("2\\pi", "6.28"), ("x=5", "5"), ("50\\%", "0.5"), ("Paris", "paris"), ("10^\\circ", "10"))


def _worker_main() -> None:
    """Worker loop: one JSON job per stdin line ([id, answer, gold]), one JSON reply per line ([id, bool])."""
    import resource

    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints of libraries go to stderr, never into the protocol
    for limit, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, 8 << 30)):
        try:
            resource.setrlimit(limit, (value, resource.getrlimit(limit)[1]))
        except (ValueError, OSError):
            pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    cache: dict = {}
    for answer, gold in _WARMUP:  # sympy's first uses import and compile a lot: not an item's time
        _math_verify_pair(answer, gold, cache)
    cache.clear()
    proto.write(b"R\n")
    for line in sys.stdin.buffer:
        job_id, answer, gold = json.loads(line)
        try:  # a runaway item dies by SIGXCPU even if the parent is gone
            used = int(resource.getrusage(resource.RUSAGE_SELF).ru_utime) + 60
            resource.setrlimit(resource.RLIMIT_CPU, (used, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        except (ValueError, OSError):
            pass
        proto.write(json.dumps([job_id, _math_verify_pair(answer, gold, cache)]).encode() + b"\n")


class _Worker:
    """One math-verify worker process and the job it is running."""

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_COMMAND], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buffer = b""
        self.ready = False
        self.started = time.monotonic()
        self.job: int | None = None
        self.deadline = 0.0

    def send(self, job: int, answer: str, gold: str, deadline: float) -> bool:
        try:
            self.proc.stdin.write(json.dumps([job, answer, gold]).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        self.job, self.deadline = job, deadline
        return True

    def read_lines(self) -> list[bytes] | None:
        """Complete lines received so far; None once the worker has closed its output (died)."""
        try:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return lines

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class MathVerifyPool:
    """Worker processes running math-verify, each item under a hard wall-clock timeout; a worker that
    overruns or dies is killed and replaced and its item counts as wrong (logged)."""

    def __init__(self, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        # one more than the cores (up to 4): while a killed worker's replacement imports sympy, work goes on
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.size = max(1, workers or min(4, cores) + 1)
        self.timeout = timeout
        self.owner = os.getpid()
        self.workers: list[_Worker] = []
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.timeouts = 0
        self._failed_starts = 0

    def _spawn(self) -> _Worker:
        worker = _Worker()
        self.selector.register(worker.proc.stdout, selectors.EVENT_READ, worker)
        self.workers.append(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        self.selector.unregister(worker.proc.stdout)
        worker.kill()
        self.workers.remove(worker)

    def run(self, jobs: Sequence[tuple[str, str]], timeout: float | None = None) -> list[bool | None]:
        """math-verify verdicts of (answer, gold) pairs; None for an item that timed out or crashed."""
        timeout = self.timeout if timeout is None else timeout
        results: list[bool | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        with self.lock:
            while len(self.workers) < self.size:
                self._spawn()
            while pending or any(w.job is not None for w in self.workers):
                now = time.monotonic()
                for worker in list(self.workers):
                    if worker.ready and worker.job is None and pending:
                        job = pending.popleft()
                        if not worker.send(job, *jobs[job], now + timeout):
                            pending.appendleft(job)
                            self._replace(worker, "its input pipe closed")
                busy = [w.deadline for w in self.workers if w.job is not None]
                wait = max(0.0, min(busy) - now) if busy else 0.5
                for key, _ in self.selector.select(wait):
                    self._receive(key.data, results, jobs)
                now = time.monotonic()
                for worker in list(self.workers):
                    if worker.job is not None and now > worker.deadline:
                        self.timeouts += 1
                        answer, gold = jobs[worker.job]
                        logger.warning("verify: math-verify took over %.1fs on answer %r vs gold %r; killed the "
                                       "worker, counted wrong", timeout, answer[:80], gold[:80])
                        self._replace(worker, None)
                    elif not worker.ready and now - worker.started > STARTUP_TIMEOUT_S:
                        raise RuntimeError(f"verify: a math-verify worker did not start within {STARTUP_TIMEOUT_S}s")
        return results

    def _receive(self, worker: _Worker, results: list, jobs: Sequence[tuple[str, str]]) -> None:
        lines = worker.read_lines()
        if lines is None:
            job = worker.job
            if job is not None:
                logger.warning("verify: a math-verify worker died on answer %r vs gold %r; counted wrong",
                               jobs[job][0][:80], jobs[job][1][:80])
            elif not worker.ready:
                self._failed_starts += 1
                if self._failed_starts >= 3:
                    raise RuntimeError("verify: math-verify workers exit at startup (is math-verify installed? "
                                       "their stderr says why)")
            self._replace(worker, None)
            return
        for line in lines:
            if line == b"R":
                worker.ready = True
                self._failed_starts = 0
                continue
            job, verdict = json.loads(line)
            if job == worker.job:
                results[job] = bool(verdict)
                worker.job = None

    def _replace(self, worker: _Worker, reason: str | None) -> None:
        if reason:
            logger.warning("verify: replacing a math-verify worker: %s", reason)
        worker.job = None
        self._retire(worker)
        self._spawn()

    def close(self) -> None:
        """Stop the workers: end of input first, a kill for any that does not exit within a second."""
        if os.getpid() != self.owner:
            return
        for worker in list(self.workers):
            try:
                worker.proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 1.0
        for worker in list(self.workers):
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            worker.close_pipes()
        self.workers.clear()
        self.selector.close()


_POOL: MathVerifyPool | None = None
_POOL_LOCK = threading.Lock()
_SETTINGS = {"workers": None, "timeout": DEFAULT_TIMEOUT_S}


def configure(workers: int | None = None, timeout: float | None = None) -> None:
    """Set the math-verify pool's worker count and per-item timeout (seconds); restarts the pool."""
    if workers is not None:
        _SETTINGS["workers"] = workers
    if timeout is not None:
        _SETTINGS["timeout"] = timeout
    shutdown()


def get_pool() -> MathVerifyPool:
    """The process's pool, started on first use (and again in a forked child)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.owner != os.getpid():
            _POOL = MathVerifyPool(_SETTINGS["workers"], _SETTINGS["timeout"])
        return _POOL


def shutdown() -> None:
    """Stop the math-verify workers (also registered at exit); the next call starts new ones."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
        _POOL = None


def _forget_pool_in_child() -> None:
    """After fork the workers belong to the parent: drop our references without touching them."""
    global _POOL, _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    if _POOL is not None:
        for worker in _POOL.workers:
            worker.close_pipes()
        _POOL = None


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
