"""Answer verification: is a reasoner response's final answer equivalent to the gold answer?

The compiled fast path (`spice._C.verify_batch`) decides what it can with certainty: exact rationals,
MCQ letters, plain strings, and exact algebra (quotients of polynomials over the rationals in
single-letter variables, \\pi, square roots and logarithms of rationals). Only undecided items go to
math-verify, which runs in worker processes with a hard per-item timeout (a worker that overruns is
killed and replaced, the item counts as wrong and is logged), so no input can hang or crash the
caller. `extract_answer` here and the C++ extractor implement the same rules; tests compare them.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

KINDS = ("mcq", "integer", "float", "expression", "string")
MAX_SCAN_CHARS = 32768  # only the tail of a response is scanned for its answer (the C++ side caps the same)
MAX_PHRASE_BYTES = 256  # a "the answer is ..." text longer than this is not taken as an answer
MAX_ANSWER_BYTES = 1024  # longer answers skip the string rule and go straight to math-verify
DEFAULT_TIMEOUT_S = 0.8  # per item in math-verify: with the kill, no item takes over 1 s
STARTUP_TIMEOUT_S = 120.0  # a worker importing math-verify on a loaded machine
EQUIVALENT, NOT_EQUIVALENT, UNDECIDED = 1, 0, -1

try:
    from spice import _C
except ImportError:  # a source checkout without the compiled module: everything goes to math-verify
    _C = None

_WS = " \t\n\r\f\v"


def _is_alpha(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_alnum(c: str) -> bool:
    return _is_alpha(c) or ("0" <= c <= "9")


def _is_choice(c: str) -> bool:
    return ("A" <= c <= "J") or ("a" <= c <= "j")


def _is_upper_choice(c: str) -> bool:
    return "A" <= c <= "J"


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)[ \t\n\r\f\v]*\{")
_BRACE_RE = re.compile(r"[{}]")
_ANSWER_RE = re.compile(r"answer", re.IGNORECASE | re.ASCII)
_NUMBER_RE = re.compile(r"-?[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?")
_PAREN_LETTER_RE = re.compile(r"\(([A-J])\)")
_CLOSE_LETTER_RE = re.compile(r"(?<![A-Za-z0-9])([A-J])\)")
_LETTER_WRAPPERS = ("\\text{", "\\textbf{", "\\mathrm{", "\\mathbf{", "\\textrm{")


# ---------------------------------------------------------------------------------------------------
# Extraction (mirrors csrc/verify_extract.cpp)


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} whose braces close, stripped; None without one."""
    close: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            close[stack.pop()] = m.start()
    best = None
    for m in _BOX_RE.finditer(text):
        j = m.end() - 1
        if j in close:
            best = (j, close[j])
    return None if best is None else text[best[0] + 1:best[1]].strip(_WS)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text` with balanced braces; None if absent."""
    return _last_boxed(text)


def _parse_letter(content: str) -> str | None:
    """An MCQ letter from "B", "(B)", "B)", "B.", "(B) text", "\\text{B}"; None otherwise."""
    v = content.replace("$", "").strip(_WS)
    for _ in range(4):
        for w in _LETTER_WRAPPERS:
            if len(v) > len(w) and v.startswith(w) and v.endswith("}"):
                v = v[len(w):-1].strip(_WS)
                break
        else:
            break
    if not v:
        return None
    if len(v) >= 3 and v[0] == "(" and _is_choice(v[1]) and v[2] == ")":
        return v[1].upper()
    if _is_choice(v[0]) and (len(v) == 1 or (v[1] in ").:" and (len(v) == 2 or v[2] in _WS))):
        return v[0].upper()
    return None


def _marker_end(t: str, p: int) -> int:
    if p > 0 and _is_alpha(t[p - 1]):
        return -1
    n, q = len(t), p + 6
    while q < n and t[q] in _WS:
        q += 1
    if q < n and t[q] == ":":
        return q + 1
    if q + 1 < n and t[q] in "iI" and t[q + 1] in "sS" and (q + 2 == n or not _is_alnum(t[q + 2])):
        q += 2
        while q < n and t[q] in _WS:
            q += 1
        return q + 1 if q < n and t[q] == ":" else q
    return -1


def _last_marker(t: str) -> int:
    """End of the last "answer:" / "answer is" / "answer is:" marker, or -1."""
    for m in reversed(list(_ANSWER_RE.finditer(t))):
        end = _marker_end(t, m.start())
        if end >= 0:
            return end
    return -1


def _phrase_answer(t: str) -> str | None:
    q = _last_marker(t)
    if q < 0:
        return None
    n = len(t)
    while q < n and t[q] in _WS:
        q += 1
    end = t.find("\n", q)
    end = n if end < 0 else end
    for j in range(q, end):
        if t[j] in ".!?;" and (j + 1 == n or t[j + 1] in _WS):
            end = j
            break
    a = t[q:end].strip(_WS)
    if not a or len(a.encode("utf-8", "surrogatepass")) > MAX_PHRASE_BYTES:
        return None
    return a


def _mcq_from_text(t: str) -> str | None:
    n, q = len(t), _last_marker(t)
    if q >= 0:
        while q < n and t[q] in _WS:
            q += 1
        if t[q:q + 6].translate(_ASCII_LOWER) in ("option", "choice"):
            r = q + 6
            if r < n and t[r] in _WS:
                while r < n and t[r] in _WS:
                    r += 1
                q = r
        if q + 2 < n and t[q] == "(" and _is_upper_choice(t[q + 1]) and t[q + 2] == ")":
            return t[q + 1]
        if q < n and _is_upper_choice(t[q]) and (q + 1 == n or not _is_alnum(t[q + 1])):
            return t[q]
    for pattern in (_PAREN_LETTER_RE, _CLOSE_LETTER_RE):
        found = [m.group(1) for m in pattern.finditer(t)]
        if found:
            return found[-1]
    s = t.strip(_WS)
    if (len(s) == 1 or (len(s) == 2 and s[1] == ".")) and _is_upper_choice(s[0]):
        return s[0]
    return None


def extract_answer(response: str, kind: str) -> str | None:
    """The final answer of a response: the last balanced \\boxed{}/\\fbox{}, else the text after the last
    "the answer is"/"answer:", else (integer/float) the last number; for "mcq" the letter A-J. Only the
    last MAX_SCAN_CHARS characters are scanned. None when there is no answer."""
    text = _as_text(response)[-MAX_SCAN_CHARS:]
    box = _last_boxed(text)
    if kind == "mcq":
        return _parse_letter(box) if box is not None else _mcq_from_text(text)
    if box is not None:
        return box or None
    phrase = _phrase_answer(text)
    if phrase is not None:
        return phrase
    if kind in ("integer", "float"):
        numbers = _NUMBER_RE.findall(text)
        return numbers[-1] if numbers else None
    return None


# ---------------------------------------------------------------------------------------------------
# Normalisation for the string rule (mirrors csrc/verify_normalize.cpp) and cleaning for math-verify


def _replace(s: str, old: str, new: str) -> tuple[str, bool]:
    if old.startswith("\\") and len(old) > 1 and _is_alpha(old[-1]):
        out, count = re.subn(re.escape(old) + r"(?![A-Za-z])", lambda _: new, s)
        return out, count > 0
    return s.replace(old, new), old in s


_UNWRAP = ("\\text{", "\\textbf{", "\\textrm{", "\\textit{", "\\mathrm{", "\\mathbf{", "\\mathit{", "\\mbox{",
           "\\boxed{", "\\fbox{", "\\operatorname{")


def _unwrap_one(s: str) -> str | None:
    i = s.find("\\")
    while i >= 0:
        for w in _UNWRAP:
            if not s.startswith(w, i):
                continue
            start = i + len(w) - 1
            depth = 0
            for j in range(start, len(s)):
                if s[j] == "{":
                    depth += 1
                elif s[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return s[:i] + s[start + 1:j] + s[j + 1:]
        i = s.find("\\", i + 1)
    return None


def _collapse(s: str) -> str:
    return re.sub(r"[ \t\n\r\f\v]+", " ", s).strip(" ")


def normalize_answer(s: str) -> tuple[str, bool, bool]:
    """(text, percent removed, degree removed): LaTeX wrappers, spacing, currency, degrees, percent and
    trailing punctuation removed; the same steps as the C++ `normalize_math`."""
    for old, new in (("\u00a0", " "), ("\u2009", " "), ("\u202f", " "), ("\u2212", "-"), ("\\$", ""), ("$", "")):
        s, _ = _replace(s, old, new)
    degree = percent = False
    for deg in ("^{\\circ}", "^\\circ", "\\degree", "\\circ", "\u00b0"):
        s, hit = _replace(s, deg, "")
        degree = degree or hit
    for pct in ("\\%", "%"):
        s, hit = _replace(s, pct, "")
        percent = percent or hit
    for old, new in (("\\left.", ""), ("\\right.", ""), ("\\left", ""), ("\\right", ""), ("\\displaystyle", ""),
                     ("\\qquad", ""), ("\\quad", ""), ("\\!", ""), ("\\;", ""), ("\\:", ""), ("\\dfrac", "\\frac"),
                     ("\\tfrac", "\\frac"), ("{,}", ","), ("\\thinspace", " "), ("\\,", " "), ("\\ ", " "),
                     ("~", " ")):
        s, _ = _replace(s, old, new)
    for _ in range(64):
        unwrapped = _unwrap_one(s)
        if unwrapped is None:
            break
        s = unwrapped
    return _collapse(s).rstrip(" .,;:!?"), percent, degree


def _compact(s: str) -> str:
    """Spaces dropped, but those before a letter or '.' and those between two alphanumerics."""
    return "".join(c for i, c in enumerate(s)
                   if c != " " or (i < len(s) - 1 and (_is_alpha(s[i + 1]) or s[i + 1] == "." or
                                                       (i > 0 and _is_alnum(s[i - 1]) and _is_alnum(s[i + 1])))))


def _string_canonical(s: str) -> str:
    chars = [c if not c.isascii() else (c.translate(_ASCII_LOWER) if _is_alnum(c) or c in _WS else " ") for c in s]
    out = _collapse("".join(chars))
    for article in ("the ", "an ", "a "):
        if len(out) > len(article) and out.startswith(article):
            return out[len(article):]
    return out


def _string_rule(answer: str, gold: str) -> bool | None:
    """The short-string rule: equal up to case, spacing, punctuation and a leading article is correct;
    two different plain-word strings are wrong; anything else is for math-verify (None)."""
    if max(len(answer.encode("utf-8", "surrogatepass")), len(gold.encode("utf-8", "surrogatepass"))) > MAX_ANSWER_BYTES:
        return None
    a, g = normalize_answer(answer), normalize_answer(gold)
    if not a[0] or not g[0]:
        return None
    if a[1:] == g[1:] and _compact(a[0]) == _compact(g[0]):
        return True
    ca, cg = _string_canonical(a[0]), _string_canonical(g[0])
    if ca and ca == cg:
        return True
    no_digit = not any(c.isascii() and c.isdigit() for c in ca + cg)
    if ca and no_digit and ca.replace(" ", "") == cg.replace(" ", ""):
        return True
    if re.fullmatch(r"[a-z ]+", ca) and re.fullmatch(r"[a-z ]+", cg):
        return False
    if _is_name_with_digits(a[0], ca) and _is_name_with_digits(g[0], cg) and ca.replace(" ", "") != cg.replace(" ", ""):
        return False  # names with digits ("K2", "Apollo 11")
    return None


def _is_name_with_digits(text: str, canonical: str) -> bool:
    """Letters, digits and spaces after canonicalisation, with a letter, written without math syntax."""
    return (not any(c in "\\^_{}=+*/()<>|" for c in text) and re.fullmatch(r"[a-z0-9 ]+", canonical) is not None
            and any("a" <= c <= "z" for c in canonical))


_GROUP_SPACE = re.compile(r"(?<=[0-9])(?:\\,|\\ |\\thinspace|~|[ \u00a0\u2009\u202f])(?=[0-9]{3}(?![0-9]))")


def _clean_for_math_verify(s: str) -> str:
    """Spellings math-verify misreads: digit groups split by (thin) spaces, a degree sign, a trailing full stop."""
    s = _GROUP_SPACE.sub("", s.replace("\u00b0", "^\\circ"))
    return s.strip(_WS).rstrip(".,;:!? \t\n\r\f\v")


# ---------------------------------------------------------------------------------------------------
# math-verify in worker processes with a hard per-item timeout


def _math_verify_pair(answer: str, gold: str, cache: dict) -> bool:
    """math-verify's verdict on a cleaned answer against a cleaned gold, both read as boxed LaTeX."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    def parsed(s: str):
        if s not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[s] = parse("\\boxed{" + s + "}", parsing_timeout=None)
        return cache[s]

    try:
        return bool(mv_verify(parsed(gold), parsed(answer), timeout_seconds=None))
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
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
        self.proc = subprocess.Popen([sys.executable, "-m", "spice.verify", "--worker"], stdin=subprocess.PIPE,
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


def _pool() -> MathVerifyPool:
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


# ---------------------------------------------------------------------------------------------------
# Public API


def _as_text(x: object) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, bytes | bytearray):
        return bytes(x).decode("utf-8", errors="replace")
    return "" if x is None else str(x)


def _check_kind(kind: str, index: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"verify: item {index}: kind {kind!r} is not one of {KINDS}")
    return kind


def fast_verdicts(items: Sequence[tuple[str, str, str]]) -> list[int]:
    """Verdicts of the compiled fast path alone: 1 equivalent, 0 not equivalent, -1 undecided."""
    if _C is None:
        return [UNDECIDED] * len(items)
    responses = [_as_text(r)[-MAX_SCAN_CHARS:] for r, _, _ in items]
    golds = [_as_text(g) for _, g, _ in items]
    kinds = [_check_kind(k, i) for i, (_, _, k) in enumerate(items)]
    return list(_C.verify_batch(responses, golds, kinds))


def slow_verdicts(items: Sequence[tuple[str, str, str]], timeout: float | None = None) -> list[bool]:
    """Verdicts without the fast path: extraction here, MCQ letters and the short-string rule in Python,
    everything else through math-verify in the worker pool."""
    verdicts: list[bool | None] = [None] * len(items)
    jobs: dict[tuple[str, str], list[int]] = {}
    for i, (response, gold, kind) in enumerate(items):
        kind = _check_kind(kind, i)
        gold = _as_text(gold)
        answer = extract_answer(response, kind)
        if kind == "mcq":
            letter = _parse_letter(gold)
            verdicts[i] = answer is not None and letter is not None and answer == letter
        elif answer is None:
            verdicts[i] = False
        else:
            rule = _string_rule(answer, gold) if kind == "string" else None
            if rule is not None:
                verdicts[i] = rule
            else:
                jobs.setdefault((_clean_for_math_verify(answer), _clean_for_math_verify(gold)), []).append(i)
    if jobs:
        pairs = list(jobs)
        for pair, result in zip(pairs, _pool().run(pairs, timeout)):
            for i in jobs[pair]:
                verdicts[i] = bool(result)
    return [bool(v) for v in verdicts]


def verify_batch(items: Iterable[tuple[str, str, str]], timeout: float | None = None) -> list[bool]:
    """Whether each (response, gold, kind) is correct: the compiled fast path first, math-verify (hard
    per-item timeout, in worker processes) for what it leaves undecided. Never raises on any strings."""
    items = list(items)
    fast = fast_verdicts(items)
    undecided = [i for i, v in enumerate(fast) if v == UNDECIDED]
    out = [v == EQUIVALENT for v in fast]
    if undecided:
        for i, v in zip(undecided, slow_verdicts([items[i] for i in undecided], timeout)):
            out[i] = v
    return out


def verify(response: str, gold: str, kind: str) -> bool:
    """Whether the final answer of `response` is equivalent to `gold` for an answer of type `kind`
    (one of KINDS)."""
    return verify_batch([(response, gold, kind)])[0]


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
