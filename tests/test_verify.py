"""Answer verification: extraction, the compiled fast path, the math-verify pool and its guarantees
(never hangs, never raises, survives forks)."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spice import verify as V

ROOT = Path(__file__).resolve().parent.parent
B = "\\boxed{%s}"

CASES = [
    # (response, gold, kind, expected)
    (B % "\\frac{1}{2}", "0.5", "float", True),
    (B % "\\dfrac{3}{4}", "0.75", "float", True),
    (B % "\\tfrac{1}{4}", "1/4", "float", True),
    (B % "6/8", "3/4", "float", True),
    (B % "\\frac{1}{3}", "0.33", "float", False),
    (B % "2\\frac{1}{2}", "2.5", "float", True),
    (B % "-\\frac{1}{2}", "-0.5", "float", True),
    (B % "\\frac{-3}{4}", "-0.75", "float", True),
    (B % ".5", "1/2", "float", True),
    (B % "5.00", "5", "integer", True),
    (B % "3.14", "3.14159", "float", False),
    (B % "0.1", "1/10", "float", True),
    (B % "1,234", "1234", "integer", True),
    (B % "1{,}234", "1234", "integer", True),
    (B % "1\\,234", "1234", "integer", True),
    (B % "1,000,000", "1000000", "integer", True),
    (B % "1,234", "1243", "integer", False),
    (B % "12,345.5", "12345.5", "float", True),
    (B % "\\left( 7 \\right)", "7", "integer", True),
    (B % "\\text{7}", "7", "integer", True),
    (B % "\\mathrm{7}", "7", "integer", True),
    (B % "$7$", "7", "integer", True),
    (B % "7.", "7", "integer", True),
    (B % "\\!7", "7", "integer", True),
    (B % "5 \\text{ cm}", "5", "integer", True),
    (B % "5 \\text{ cm}", "6", "integer", False),
    (B % "90^\\circ", "90", "integer", True),
    (B % "90^{\\circ}", "45", "integer", False),
    (B % "40\\%", "40", "integer", True),
    (B % "40\\%", "0.4", "float", True),
    (B % "\\$12", "12", "integer", True),
    (B % "\\{1,2\\}", "\\{2,1\\}", "expression", True),
    (B % "[1,2)", "[1,2)", "expression", True),
    (B % "[1,2)", "(1,2)", "expression", False),
    (B % "x^2+1", "1+x^2", "expression", True),
    (B % "\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", "expression", True),
    (B % "2\\sqrt{3}", "3\\sqrt{2}", "expression", False),
    (B % "x = 4", "4", "integer", True),
    (B % "B", "B", "mcq", True),
    (B % "(B)", "B", "mcq", True),
    (B % "(B) 12 apples", "B", "mcq", True),
    (B % "\\text{C}", "C", "mcq", True),
    (B % "A", "B", "mcq", False),
    ("The answer is (C).", "C", "mcq", True),
    ("Answer: D", "D", "mcq", True),
    ("B) is my choice", "B", "mcq", False),  # no stated answer: a letter in passing is not one
    ("I would go with (A).", "B", "mcq", False),
    ("No letter here.", "A", "mcq", False),
    ("The answer is 42.", "42", "integer", True),
    ("So in total there are 17 sheep.", "17", "integer", True),
    ("So in total there are 17 sheep.", "18", "integer", False),
    ("Therefore the answer is: 2.5", "5/2", "float", True),
    ("First \\boxed{3}, no wait, \\boxed{4}.", "4", "integer", False),  # boxed values that disagree
    ("First \\boxed{3}, no wait, \\boxed{4}.", "3", "integer", False),
    ("\\boxed{2} then \\boxed{9", "2", "integer", True),
    ("", "5", "integer", False),
    (B % "", "5", "integer", False),
    ("", "A", "mcq", False),
    ("", "Paris", "string", False),
    (B % "Paris", "paris", "string", True),
    (B % "The Nile", "Nile", "string", True),
    (B % "U.S.A.", "USA", "string", True),
    (B % "Rome", "Paris", "string", False),
    (B % "ab", "ba", "string", False),
    ("The answer is photosynthesis.", "Photosynthesis", "string", True),
    (B % "-5", "5", "integer", False),
    (B % "\u22125", "-5", "integer", True),
    (B % "123456789012345678901234567890", "123456789012345678901234567890", "integer", True),
    (B % "9^{9^{9^{9}}}", "5", "integer", False),
]


@pytest.mark.parametrize(("response", "gold", "kind", "expected"), CASES)
def test_verify_cases(response, gold, kind, expected):
    assert V.verify(response, gold, kind) is expected


def test_verify_batch_matches_single_calls_and_keeps_order():
    items = [(r, g, k) for r, g, k, _ in CASES]
    assert V.verify_batch(items) == [e for *_, e in CASES]
    assert V.verify_batch([]) == []


@pytest.mark.parametrize(("response", "kind", "answer"), [
    ("a \\boxed{1} b \\boxed{\\frac{2}{3}} c", "float", "\\frac{2}{3}"),
    ("\\boxed{a{b}c}", "expression", "a{b}c"),
    ("\\fbox{12}", "integer", "12"),
    ("\\boxed {7}", "integer", "7"),
    ("\\boxed{5} and \\boxed{6", "integer", "5"),
    ("The final answer is 3/4.\n", "float", "3/4"),
    ("answer: x+1\nmore text", "expression", "x+1"),
    ("values 1, 2 and -3.5 here", "float", "-3.5"),
    ("total 1,234,567 items", "integer", "1,234,567"),
    ("no numbers at all", "integer", None),
    ("no answer at all", "expression", None),
    ("\\boxed{(D) blue}", "mcq", "D"),
    ("\\boxed{d}", "mcq", "D"),
    ("the answer is option B", "mcq", "B"),
    ("Answer is A good guess", "mcq", "A"),
    ("x (A) y (C) z", "mcq", None),
    ("x A) y C) z", "mcq", None),
    ("  B.  ", "mcq", "B"),
    ("\\boxed{42}", "mcq", None),
])
def test_extract_answer(response, kind, answer):
    assert V.extract_answer(response, kind) == answer


needs_C = pytest.mark.skipif(V._C is None, reason="spice._C is not built")


def _fuzz_strings(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    atoms = ["\\boxed{", "\\fbox{", "{", "}", "(", ")", "A)", "(B)", "C", "answer", "Answer is", "answer:", " is ",
             "\n", " ", ".", ",", "-", "12", "3.5", "1,234", "\\frac{1}{2}", "$", "option ", "é", "\ud800", "İs", "\x00"]
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(0, 25))) for _ in range(n)]


@needs_C
def test_cpp_extraction_equals_python_extraction():
    rows = [json.loads(line) for line in (ROOT / "tests/data/verify_agreement.jsonl").read_text().splitlines()]
    responses = [r["response"] for r in rows] + [r for r, *_ in CASES] + _fuzz_strings(0, 3000)
    for kind in V.KINDS:
        got = V._C.extract_answers(responses, [kind] * len(responses))
        for response, cpp in zip(responses, got):
            py = V.extract_answer(response, kind)
            assert (None if cpp is None else cpp.decode("utf-8", "surrogatepass")) == py, (kind, response)


@needs_C
def test_cpp_normalisation_equals_python_mirror():
    samples = [r for r, *_ in CASES] + [g for _, g, *_ in CASES] + _fuzz_strings(1, 2000) + [
        "\\left( 5 \\right)^{\\circ}.", "\\text{The  U.S.A.}", "50\\%", "\\leftarrow x", "\\mathrm{a}\\textbf{b}",
        "5\\,000", "{,}", "\u00a01\u2009234\u202f", "\\boxed{\\text{an apple}}", "\\$3"]
    for s in samples:
        text, percent, degree, canonical = V._C.normalize(s)
        ours = V.normalize_answer(s)
        assert (text.decode("utf-8", "surrogatepass"), percent, degree) == ours, s
        assert canonical.decode("utf-8", "surrogatepass") == V.string_canonical(ours[0]), s


@needs_C
def test_fast_path_decides_common_forms_and_leaves_the_rest():
    items = [(B % "\\frac{6}{4}", "1.5", "float"), (B % "41", "42", "integer"), (B % "x^2", "x\\cdot x", "expression"),
             (B % "C", "C", "mcq"), (B % "Paris", "paris", "string"), (B % "2\\pi", "6.283", "expression"),
             (B % "1e3", "1000", "integer"), (B % "5", "5", "integer"), (B % "K2", "Mount Everest", "string"),
             (B % "\\{1,2\\}", "\\{2,1\\}", "expression")]
    assert V.fast_verdicts(items) == [1, 0, 1, 1, 1, 0, -1, 1, 0, -1]


ALGEBRA = [
    # (answer, gold, fast verdict): exact algebra decides these with certainty ...
    ("(x+1)^2", "x^2+2x+1", 1), ("\\sqrt{18}", "3\\sqrt{2}", 1), ("\\frac{\\pi}{2}", "\\frac{\\pi}{4}", 0),
    ("\\ln(2)", "\\ln 2", 1), ("\\ln 3", "\\ln 2", 0), ("2^{10}", "1024", 1), ("9^{9^{9^{9}}}", "5", 0),
    ("123456789012345678901234567890", "123456789012345678901234567891", 0), ("\\frac{x^2-1}{x-1}", "x+1", 1),
    ("(1+\\sqrt{2})^2", "3+2\\sqrt{2}", 1), ("\\sqrt{\\frac{1}{2}}", "\\frac{\\sqrt{2}}{2}", 1), ("x^{-1}", "\\frac{1}{x}", 1),
    ("2 \\pi r", "2r\\pi", 1), ("a+b", "a-b", 0), ("0.25\\pi", "\\frac{\\pi}{3}", 0), ("120000 gallons", "1200", 0),
    ("4 pounds (Grace)", "623", 0),
    # ... and leaves alone whatever math-verify reads its own way, or might not prove
    ("x", "\\frac{x^2+x}{x+1}", -1), ("2m", "2", -1), ("5 - m", "5-m", -1), ("2a b", "2", -1), ("k(x)", "kx", -1),
    ("x^23", "3x^2", -1), ("1/2x", "\\frac{x}{2}", -1), ("(2)(3)", "6", -1), ("X", "x", -1), ("e^2", "e^{2}", -1),
    ("\\frac{\\sqrt{2}}{10^{17}}", "\\frac{\\sqrt{3}}{10^{17}}", -1), ("0.1x+0.2x", "0.3x", -1),
    ("\\frac{1}{1+\\sqrt{2}}", "\\sqrt{2}-1", -1), ("\\ln 2 \\cdot 3", "3\\ln 2", -1), ("\\ln 4", "2\\ln 2", -1),
    ("2^{64}", "18446744073709551616", -1), ("5 percent", "10", -1), ("12 items", "12", -1),
]


@needs_C
@pytest.mark.parametrize(("answer", "gold", "verdict"), ALGEBRA)
def test_exact_algebra_decides_only_when_certain(answer, gold, verdict):
    assert V.fast_verdicts([(B % answer, gold, "expression")]) == [verdict]


@needs_C
def test_exact_algebra_bounds_its_work():
    """Inputs built to blow up (huge powers, deep nesting, many radicals, big radicands) are refused."""
    items = [("(x+y+z+a+b)^{64}", "1"), ("(" * 500 + "x" + ")" * 500, "x"), ("{" * 40 + "2" + "}" * 40, "2"),
             ("+".join(f"\\sqrt{{{p}}}" for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59)), "1"),
             ("\\sqrt{99999999977}", "1"), ("x^{65}", "x^{65}+1"), ("((x+y+1)^{8})^{8}", "1"),
             ("\\ln 2+\\ln 3+\\ln 5+\\ln 7+\\ln 11", "1")]
    assert V.fast_verdicts([(B % a, g, "expression") for a, g in items]) == [-1] * len(items)


def test_unknown_kind_is_an_error_that_names_it():
    with pytest.raises(ValueError, match="'number'"):
        V.verify("\\boxed{1}", "1", "number")


def test_non_string_inputs_do_not_raise():
    assert V.verify_batch([(None, "1", "integer"), (b"\\boxed{1}", "1", "integer"), ("\\boxed{1}", 1, "integer")]) == [
        False, True, True]


def test_random_strings_never_raise():
    rng = random.Random(3)
    junk = _fuzz_strings(5, 200) + [bytes(rng.randrange(256) for _ in range(300)).decode("utf-8", "replace")
                                    for _ in range(50)]
    items = [(s, rng.choice(["5", "A", "x+1", "Paris", s[:20]]), rng.choice(V.KINDS)) for s in junk]
    out = V.verify_batch(items)
    assert len(out) == len(items) and all(isinstance(v, bool) for v in out)


def test_timeout_counts_wrong_logs_and_replaces_the_worker(caplog):
    pool = V.MathVerifyPool(workers=1, timeout=0.5)
    try:
        with caplog.at_level(logging.WARNING, logger="spice.verify"):
            out = pool.run([("9^{9^{9^{9}}}", "5"), ("\\frac{1}{2}", "0.5")])
        assert out == [None, True]
        assert pool.timeouts == 1
        assert any("counted wrong" in r.message for r in caplog.records)
        assert len(pool.workers) == 1 and pool.workers[0].proc.poll() is None
    finally:
        pool.close()
    assert not pool.workers


def _run_python(code: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_ten_megabytes_of_random_bytes_and_a_power_tower_return(tmp_path):
    """Each call returns quickly; the subprocess timeout is only a does-not-hang guard."""
    code = """
        import os, time
        from spice import verify as V
        V.verify("\\\\boxed{x^2}", "x^2+0", "expression")  # start the workers first
        big = os.urandom(10_000_000).decode("utf-8", errors="replace")
        for kind in V.KINDS:
            t = time.monotonic(); assert V.verify(big, "5", kind) in (True, False); print(kind, time.monotonic() - t)
        t = time.monotonic()
        assert V.verify("\\\\boxed{9^{9^{9^{9}}}}", "5", "integer") is False
        print("tower", time.monotonic() - t)
        """
    result = _run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "tower" in result.stdout


def test_works_in_a_forked_child_and_shuts_down_cleanly():
    code = """
        import os, sys
        from spice import verify as V
        from spice.verify import pool as P
        assert V.verify("\\\\boxed{\\\\{1,2\\\\}}", "\\\\{2,1\\\\}", "expression")  # a set: math-verify's
        parent_workers = [w.proc.pid for w in P._POOL.workers]
        pid = os.fork()
        if pid == 0:
            ok = V.verify("\\\\boxed{\\\\{1,3\\\\}}", "\\\\{3,1\\\\}", "expression") and P._POOL.owner == os.getpid()
            mine = [w.proc.pid for w in P._POOL.workers]
            os._exit(0 if ok and not set(mine) & set(parent_workers) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert all(w.proc.poll() is None for w in P._POOL.workers)  # the child left our workers alone
        assert V.verify("\\\\boxed{\\\\sqrt{4}}", "2", "integer")
        workers = list(P._POOL.workers)
        V.shutdown()
        assert all(w.proc.returncode is not None for w in workers)
        print("clean")
        """
    result = _run_python(code, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "clean" in result.stdout
