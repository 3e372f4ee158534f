"""The sandbox against deliberate escapes: each test is a program that tries one way out and must fail
(or do nothing outside) in the secure modes; one test shows what the weaker rlimits mode lets through."""

import shutil
import socket
import sys
import tempfile

import pytest

from spice import sandbox
from spice.sandbox import SandboxError, run_many, run_python

try:
    sandbox.check_mode("seccomp")
    HAVE_SECCOMP = True
except SandboxError:
    HAVE_SECCOMP = False

SECURE = [pytest.param("seccomp", marks=pytest.mark.skipif(not HAVE_SECCOMP, reason="no libseccomp")),
          pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_SECCOMP or shutil.which("bwrap") is None,
                                                         reason="no libseccomp or bubblewrap"))]
# The real os module, reached without any import statement: why the import hook alone is no boundary.
OS = "os_ = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]" \
     ".__init__.__globals__\n"
POSIX = ("posix = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'BuiltinImporter'][0]"
         ".load_module('posix')\n")


@pytest.fixture(params=SECURE)
def mode(request):
    return request.param


def test_allowed_modules_compute(mode):
    result = run_python("from fractions import Fraction\nimport statistics, datetime, decimal, math, itertools\n"
                        "print(Fraction(1, 3) + Fraction(1, 6), statistics.median([3, 1, 2]),\n"
                        "      datetime.date(2020, 1, 1) + datetime.timedelta(days=40),\n"
                        "      decimal.Decimal('1.1') * 3, math.comb(10, 3), len(list(itertools.permutations(range(4)))))",
                        mode=mode)
    assert result.ok, result.error
    assert result.stdout == "1/2 2 2020-02-10 3.3 120 24\n"
    assert result.mode == mode


def test_program_errors_are_results_not_exceptions(mode):
    assert "ZeroDivisionError" in run_python("x = 1\nprint(x / 0)", mode=mode).error
    assert "(line 2)" in run_python("x = 1\nprint(x / 0)", mode=mode).error
    assert "SyntaxError" in run_python("print(", mode=mode).error
    assert run_python("raise SystemExit(0)", mode=mode).ok
    assert run_python("if __name__ == '__main__':\n    print(7)", mode=mode).stdout == "7\n"
    assert not run_python("raise SystemExit(3)", mode=mode).ok


def test_infinite_loop_is_killed(mode):
    result = run_python("while True:\n    pass", timeout=1.0, mode=mode)
    assert not result.ok
    assert "limit" in result.error
    assert result.seconds < 5


@pytest.mark.parametrize("bomb", ["x = 'a' * 10**10", "x = []\nwhile True:\n    x.append(bytearray(10**7))",
                                  "x = 10 ** (10 ** 10)"])
def test_memory_bombs_fail(mode, bomb):
    result = run_python(bomb, timeout=5.0, memory_mb=128, mode=mode)
    assert not result.ok
    assert "MemoryError" in result.error or "limit" in result.error


def test_output_is_capped(mode):
    result = run_python("while True:\n    print('x' * 1000)", output_chars=2000, mode=mode)
    assert not result.ok and "output exceeds 2000" in result.error
    assert len(result.stdout) <= 2000
    flood = run_python(OS + "while True:\n    os_['write'](1, b'y' * 65536)", output_chars=2000, mode=mode)
    assert not flood.ok and len(flood.stdout) <= 2000


def test_imports_outside_the_allow_list_are_refused(mode):
    for source in ("import os", "import subprocess", "import socket", "import ctypes", "from os import path",
                   "__import__('os')", "import importlib", "__builtins__['__import__']('sys')",
                   "import sys", "from . import x"):
        result = run_python(source, mode=mode)
        assert not result.ok and "ImportError" in result.error, source
    assert "NameError" in run_python("open('/etc/passwd')", mode=mode).error


def test_reading_files_is_blocked(mode):
    """Reads are blocked too: no file can be opened once the program runs (/etc/passwd exists here)."""
    result = run_python(OS + "fd = os_['open']('/etc/passwd', 0)\nprint(os_['read'](fd, 100))", mode=mode)
    assert not result.ok and "Operation not permitted" in result.error
    assert not run_python(OS + "print(os_['listdir']('/'))", mode=mode).ok
    assert not run_python(POSIX.replace("'posix'", "'pwd'").replace("posix =", "pwd =")
                          + "print(pwd.getpwnam('root'))", mode=mode).ok


def test_writes_outside_scratch_are_blocked(mode, tmp_path):
    target = tmp_path / "escaped.txt"
    result = run_python(OS + f"fd = os_['open']({str(target)!r}, 0o101)\nos_['write'](fd, b'x')", mode=mode)
    assert not result.ok and "Operation not permitted" in result.error
    assert not target.exists()
    for call in (f"os_['mkdir']({str(tmp_path / 'd')!r})", f"os_['rename']({str(tmp_path)!r}, '/tmp/moved')",
                 f"os_['unlink']({str(tmp_path / 'x')!r})"):
        assert not run_python(OS + call, mode=mode).ok, call
    assert list(tmp_path.iterdir()) == []


def test_os_system_subprocess_and_fork_are_blocked(mode, tmp_path):
    marker = tmp_path / "ran"
    assert run_python(OS + f"print(os_['system']('touch {marker}'))", mode=mode).stdout.strip() != "0"
    result = run_python(OS + "sp = os_['__builtins__']['__import__']('subprocess')\n"
                        f"sp.run(['touch', {str(marker)!r}])", mode=mode)
    assert not result.ok and "Operation not permitted" in result.error  # the module file cannot be opened
    result = run_python(POSIX + f"posix.execv('/usr/bin/touch', ['touch', {str(marker)!r}])", mode=mode)
    assert not result.ok
    assert not marker.exists()


def test_fork_bomb_fails_at_once(mode):
    result = run_python(POSIX + "while True:\n    posix.fork()", timeout=3.0, mode=mode)
    assert not result.ok and "Operation not permitted" in result.error
    threads = run_python(POSIX.replace("'posix'", "'_thread'").replace("posix =", "t =")
                         + "t.start_new_thread(print, ('x',))", mode=mode)
    assert not threads.ok


def test_no_signals_to_other_processes(mode):
    result = run_python(OS + f"os_['kill']({__import__('os').getpid()}, 9)", mode=mode)
    assert not result.ok  # and this test process is still alive to assert it


def test_socket_to_loopback_is_blocked(mode):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    for name in ("socket", "_socket"):
        source = OS + f"s = os_['__builtins__']['__import__']({name!r})\ns.socket(2, 1).connect(('127.0.0.1', {port}))"
        result = run_python(source, mode=mode)
        assert not result.ok and "Operation not permitted" in result.error
    with pytest.raises(TimeoutError):
        server.accept()
    server.close()


def test_ctypes_raw_system_calls_are_blocked(mode, tmp_path):
    """ctypes is loaded in the child (it installs the filter), so a program can reach libc directly."""
    target = tmp_path / "c.txt"
    source = (OS + "ct = os_['sys'].modules['ctypes']\nlibc = ct.CDLL(None)\n"
              f"print(libc.socket(2, 1, 0), libc.fork(), libc.open({str(target).encode()!r}, 0o101))")
    result = run_python(source, mode=mode)
    assert result.ok, result.error
    assert result.stdout.split() == ["-1", "-1", "-1"]
    assert not target.exists()


def test_scratch_folder_is_deleted(mode, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run_python("print(1)", mode=mode).ok
    assert not run_python("while True:\n    pass", timeout=1.0, mode=mode).ok
    assert list(tmp_path.iterdir()) == []


def test_rlimits_mode_is_weaker_and_says_so():
    """The explicit weak mode keeps limits and the import hook, but the os route reads files: documented."""
    assert run_python("import os", mode="rlimits").error.startswith("ImportError")
    assert "limit" in run_python("while True:\n    pass", timeout=1.0, mode="rlimits").error
    leaked = run_python(OS + "fd = os_['open']('/etc/passwd', 0)\nprint(len(os_['read'](fd, 100)) > 0)",
                        mode="rlimits")
    assert leaked.ok and leaked.stdout.strip() == "True"
    assert "rlimits" in sandbox.__doc__ and "does not" in sandbox.__doc__


def test_refuses_without_seccomp_unless_weak_mode_is_chosen(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import fails as if not installed
    sandbox.seccomp_program.cache_clear()
    try:
        with pytest.raises(SandboxError, match="rlimits"):
            run_python("print(1)")
        with pytest.raises(SandboxError, match="pyseccomp"):
            run_python("print(1)", mode="bwrap")
        assert run_python("print(1)", mode="rlimits").stdout == "1\n"
    finally:
        monkeypatch.undo()
        sandbox.seccomp_program.cache_clear()
    with pytest.raises(SandboxError, match="not one of"):
        run_python("print(1)", mode="none")


def test_long_programs_are_refused_before_a_process_starts():
    result = run_python("x = 1\n" * 5000, mode="rlimits")
    assert not result.ok and "longer than" in result.error and result.seconds == 0.0


def test_run_many_keeps_order(mode):
    results = run_many([f"print({i} * {i})" for i in range(5)], mode=mode, workers=2)
    assert [r.stdout.strip() for r in results] == ["0", "1", "4", "9", "16"]
    assert run_many([], mode=mode) == []
