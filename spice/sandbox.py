"""Run short untrusted Python programs (the challenger's check programs) under OS-level limits.

Each program runs in a fresh `python -I -S` process (no site-packages, no environment, no user
directories) in an empty scratch folder that is deleted afterwards, and is held by three layers:

1. rlimits, soft = hard: CPU seconds, address space, file size (which also caps the output, since
   stdout and stderr are files), 16 open files, no new processes for a non-root user, no core dumps;
   a wall-clock kill of the whole process group on top.
2. seccomp (mode "seccomp", the default, and "bwrap"): after the allow-listed modules are imported,
   a filter compiled by libseccomp (through pyseccomp) admits only the system calls pure computation
   needs: read, write to fds 0-2, memory mapping, signals, clocks, getrandom, exit. Every other call
   fails with EPERM: open/openat (so nothing can be read or written, /etc/passwd included), socket,
   connect, fork, vfork, clone, execve, kill, ptrace, prlimit, ioctl, io_uring, and so on.
3. an import allow-list (a replaced `__import__` and no `open`/`input` builtins): a convenience that
   gives a clear error; it is NOT a security boundary (`().__class__.__base__.__subclasses__()`
   reaches `os`), which is why layer 2 exists.

Mode "bwrap" adds bubblewrap namespaces (no network devices, own pid/ipc/uts namespaces, a read-only
root, a private /tmp). Mode "rlimits" is layer 1 and 3 only and must be chosen explicitly: it does not
stop a determined program from opening files, sockets or processes. Without pyseccomp and libseccomp
the default mode refuses to run (SandboxError) rather than fall back silently.

What this does not guarantee on Linux: protection from kernel bugs in the admitted system calls;
secrecy of what was mapped into the process before the filter (the interpreter, the allow-listed
modules); a program forging its own result line (it can only claim an output, which is what printing
does anyway); limits on other platforms (seccomp is Linux-only)."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MODES = ("seccomp", "bwrap", "rlimits")
ALLOWED_MODULES = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "operator",
                   "statistics", "datetime", "collections")
# What pure computation in CPython needs once running; everything else fails with EPERM. Names that
# do not exist on an architecture (e.g. `time` on aarch64) are skipped.
ALLOWED_SYSCALLS = (
    "read", "readv", "pread64", "close", "fstat", "newfstatat", "lseek",
    "mmap", "munmap", "mprotect", "mremap", "brk", "madvise", "futex",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    "getpid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getrandom", "sched_yield",
    "clock_gettime", "clock_getres", "gettimeofday", "time", "exit", "exit_group",
)
MAX_SOURCE_CHARS = 20000  # a check program is a few lines; longer input is refused before a process starts
CHILD = Path(__file__).with_name("sandbox_child.py")


class SandboxError(RuntimeError):
    """The sandbox cannot run in the requested mode on this machine; the message says what is missing."""


@dataclass(frozen=True)
class SandboxResult:
    """One program's outcome: `ok` when it ran to the end within its limits; `error` says why not."""

    ok: bool
    stdout: str
    error: str = ""
    seconds: float = 0.0  # wall-clock, process start to exit
    returncode: int = 0
    mode: str = "seccomp"


@functools.cache
def seccomp_program() -> bytes:
    """The BPF program of the allow-list, compiled once per process by libseccomp via pyseccomp."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError) as exc:  # RuntimeError: pyseccomp found no libseccomp
        raise SandboxError(f"sandbox mode 'seccomp' needs pyseccomp and libseccomp ({exc}); install them "
                           "(pip install pyseccomp; apt-get install libseccomp2) or choose the weaker "
                           "mode 'rlimits' explicitly") from exc
    rules = pyseccomp.SyscallFilter(pyseccomp.ERRNO(errno.EPERM))
    for name in ALLOWED_SYSCALLS:
        try:
            rules.add_rule(pyseccomp.ALLOW, name)
        except (ValueError, OSError):  # not a system call of this architecture
            continue
    for fd in (0, 1, 2):
        rules.add_rule(pyseccomp.ALLOW, "write", pyseccomp.Arg(0, pyseccomp.EQ, fd))
        rules.add_rule(pyseccomp.ALLOW, "writev", pyseccomp.Arg(0, pyseccomp.EQ, fd))
    with tempfile.TemporaryFile() as handle:
        rules.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def check_mode(mode: str) -> None:
    """Raise SandboxError unless `mode` can run here (its libraries and tools are present)."""
    if mode not in MODES:
        raise SandboxError(f"sandbox mode {mode!r} is not one of {', '.join(MODES)}")
    if mode in ("seccomp", "bwrap"):
        if not sys.platform.startswith("linux"):
            raise SandboxError(f"sandbox mode {mode!r} needs Linux (seccomp); choose 'rlimits' explicitly")
        seccomp_program()
    if mode == "bwrap" and shutil.which("bwrap") is None:
        raise SandboxError("sandbox mode 'bwrap' needs bubblewrap (apt-get install bubblewrap)")


def _hidden_by_tmpfs() -> list[str]:
    """What the child needs that bwrap's empty /tmp would hide: an interpreter, venv or checkout under /tmp."""
    needed = {sys.prefix, os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable)),
              str(CHILD.parent)}
    return sorted(p for p in needed if p.startswith("/tmp/"))


def _command(mode: str, scratch: str) -> list[str]:
    child = [sys.executable, "-I", "-S", str(CHILD)]
    if mode != "bwrap":
        return child
    visible = [arg for path in _hidden_by_tmpfs() for arg in ("--ro-bind", path, path)]
    return [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            *visible, "--bind", scratch, scratch, "--chdir", scratch, "--unshare-all", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", *child]


def _failure(returncode: int, cpu_seconds: int, stderr: str) -> str:
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return f"CPU time limit of {cpu_seconds} s exceeded"
    if returncode == -signal.SIGSYS:
        return "killed by the seccomp filter"
    tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    return f"the sandboxed process exited with code {returncode} without a result" + (
        f": {tail[0][:300]}" if tail else "")


def run_python(source: str, timeout: float = 2.0, memory_mb: int = 256, output_chars: int = 4096,
               mode: str = "seccomp") -> SandboxResult:
    """Run `source` in a fresh sandboxed process and return what it printed, or why it failed.
    `timeout` is the wall-clock limit in seconds (CPU time is limited to its ceiling)."""
    check_mode(mode)
    if len(source) > MAX_SOURCE_CHARS:
        return SandboxResult(False, "", f"program longer than {MAX_SOURCE_CHARS} characters", mode=mode)
    cpu_seconds = max(1, math.ceil(timeout))
    request = {"source": source, "cpu_seconds": cpu_seconds, "memory_bytes": memory_mb << 20,
               "file_bytes": 8 * output_chars + 4096, "output_chars": output_chars,
               "modules": list(ALLOWED_MODULES), "seccomp": seccomp_program().hex() if mode != "rlimits" else ""}
    scratch = tempfile.mkdtemp(prefix="spice-sandbox-")
    start = time.perf_counter()
    try:
        with open(os.path.join(scratch, ".out"), "w+b") as out, open(os.path.join(scratch, ".err"), "w+b") as err:
            proc = subprocess.Popen(_command(mode, scratch), stdin=subprocess.PIPE, stdout=out, stderr=err,
                                    cwd=scratch, env={"LC_ALL": "C.UTF-8"}, close_fds=True,
                                    start_new_session=True)
            try:
                proc.communicate(json.dumps(request).encode("utf-8"), timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return SandboxResult(False, "", f"wall-clock limit of {timeout:g} s exceeded",
                                     time.perf_counter() - start, proc.returncode, mode)
            except BrokenPipeError:  # the child died before reading its request
                proc.wait()
            seconds = time.perf_counter() - start
            out.seek(0)
            lines = out.read(request["file_bytes"]).decode("utf-8", errors="replace").strip().splitlines()
            err.seek(0)
            stderr = err.read(4096).decode("utf-8", errors="replace")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if proc.returncode != 0 or not isinstance(result, dict):
        return SandboxResult(False, "", _failure(proc.returncode, cpu_seconds, stderr), seconds,
                             proc.returncode, mode)
    return SandboxResult(bool(result.get("ok")), str(result.get("stdout", "")), str(result.get("error", "")),
                         seconds, 0, mode)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_many(sources: Sequence[str], timeout: float = 2.0, mode: str = "seccomp",
             workers: int | None = None, **limits) -> list[SandboxResult]:
    """`run_python` for each source, `workers` processes at a time (default: the CPU count)."""
    if not sources:
        return []
    check_mode(mode)
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=min(workers, len(sources))) as pool:
        return list(pool.map(lambda s: run_python(s, timeout=timeout, mode=mode, **limits), sources))
