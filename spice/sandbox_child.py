"""The child side of `spice.sandbox`, run as `python -I -S sandbox_child.py` in a fresh process.

It reads one JSON request from stdin (source, limits, the compiled seccomp program), sets its rlimits,
imports the allow-listed modules, loads the seccomp filter (after which no file can be opened, no
process started, no socket made), runs the source with an import hook that admits only the allow-list,
and writes one JSON result line to fd 1. Standard library only: site-packages are not on its path."""

import builtins
import io
import json
import os
import resource
import signal
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
FILENAME = "<check>"


class OutputLimit(BaseException):
    """The program printed more than the output cap (BaseException: `except Exception` cannot hide it)."""


class CappedText(io.StringIO):
    """sys.stdout of the program: raises OutputLimit once `cap` characters are exceeded."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.exceeded = False

    def write(self, text: str) -> int:
        if self.tell() + len(text) > self.cap:
            self.exceeded = True
            raise OutputLimit(f"output exceeds {self.cap} characters")
        return super().write(text)


def set_limits(request: dict) -> None:
    """Soft = hard for every limit, so that the program cannot raise a soft limit back up."""
    cpu = int(request["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (request["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails with EFBIG instead


def load_seccomp(program: bytes) -> None:
    """Install the BPF program compiled by libseccomp in the parent; no_new_privs first, as the kernel asks."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def guarded_builtins(allowed: frozenset) -> dict:
    """The program's builtins: no open/input/breakpoint/exit, and an __import__ that admits `allowed` only."""
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name.partition(".")[0] not in allowed:
            raise ImportError(f"import of {name!r} is not allowed in the sandbox")
        return real_import(name, globals, locals, fromlist, level)

    names = dict(vars(builtins))
    for name in ("open", "input", "breakpoint", "help", "exit", "quit", "copyright", "credits", "license"):
        names.pop(name, None)
    names["__import__"] = guarded_import
    return names


def error_text(exc: BaseException) -> str:
    """`ExcType: message (line N)`, N the last line of the program in the traceback (no file is read)."""
    line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f" (line {line})" if line else ""
    return f"{type(exc).__name__}: {exc}"[:500] + where


def run(request: dict) -> dict:
    set_limits(request)
    allowed = frozenset(request["modules"])
    for name in request["modules"]:
        __import__(name)
    try:
        code = compile(request["source"], FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        return {"ok": False, "stdout": "", "error": error_text(exc)}
    if request["seccomp"]:
        load_seccomp(bytes.fromhex(request["seccomp"]))
    out = CappedText(request["output_chars"])
    sys.stdout = sys.stderr = out
    error = ""
    try:
        exec(code, {"__builtins__": guarded_builtins(allowed), "__name__": "__main__"})
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = f"SystemExit: {exc.code!r}"[:500]
    except BaseException as exc:  # the program's own failure is the result, whatever it is
        error = error_text(exc)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if out.exceeded:
        error = f"output exceeds {out.cap} characters"
    return {"ok": not error, "stdout": out.getvalue()[: out.cap], "error": error}


def main() -> None:
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    data = (json.dumps(run(request)) + "\n").encode("utf-8")
    while data:
        data = data[os.write(1, data):]


if __name__ == "__main__":
    main()
