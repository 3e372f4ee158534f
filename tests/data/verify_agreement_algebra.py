"""Append symbolic pairs to the agreement suite: random expressions in single-letter variables, \\pi
and square roots, written by hand-style templates and by sympy's LaTeX printer, each paired with an
equivalent rewrite (expanded, factored, reordered, rationalised) or a perturbed one, plus spellings
math-verify reads in its own way (units, mixed numbers, "x^23", uppercase letters). New pairs are
labelled by math-verify alone (the pool, without the fast path or spice's framing); the rows where its
reading and the mathematics differ were re-labelled by hand in the suite ("label": "hand", with "why"),
and this script only appends pairs it has not written before, so it never overwrites them.

    python tests/data/verify_agreement_algebra.py            # appends (seeded, so reruns add nothing new)
    python tests/data/verify_agreement_algebra.py --check N  # N fresh random pairs: fast path vs math-verify
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

import sympy as sp

from spice import verify as V

SUITE = Path(__file__).with_name("verify_agreement.jsonl")
LETTERS = "abkmnprtxyz"  # m and t are also unit words for math-verify
B = "\\boxed{%s}"


def random_expression(rng: random.Random, depth: int = 0) -> sp.Expr:
    """A small random expression over the rationals, a few variables, pi and square roots."""
    x, y = sp.symbols(rng.sample(LETTERS, 2))
    leaf = rng.choice([
        lambda: sp.Integer(rng.randint(1, 9)),
        lambda: x,
        lambda: y,
        lambda: sp.sqrt(rng.choice([2, 3, 5, 6, 8, 12, 18, 27, 50])),
        lambda: sp.pi,
        lambda: sp.Rational(rng.randint(1, 9), rng.randint(2, 9)),
        lambda: sp.log(rng.choice([2, 3, 5])),
        lambda: sp.Float(rng.choice(["0.5", "0.25", "1.5", "2.75"])),
    ])
    if depth >= 2 or rng.random() < 0.3:
        return leaf()
    op = rng.choice(["add", "sub", "mul", "pow", "div"])
    a, b = random_expression(rng, depth + 1), random_expression(rng, depth + 1)
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "pow":
        return a ** rng.randint(2, 3)
    return a / b if b != 0 else a


def rewrites(expr: sp.Expr) -> list[sp.Expr]:
    out = [sp.expand(expr), sp.factor(expr), sp.together(expr), sp.radsimp(expr), sp.simplify(expr)]
    return [e for e in out if e is not sp.nan and e.is_finite is not False]


def perturb(rng: random.Random, expr: sp.Expr) -> sp.Expr:
    symbols = sorted(expr.free_symbols, key=str)
    choices = [lambda: expr + 1, lambda: 2 * expr, lambda: expr - sp.Rational(1, 2), lambda: -expr,
               lambda: expr + sp.sqrt(2), lambda: expr * sp.pi]
    if symbols:
        s = rng.choice(symbols)
        choices += [lambda: expr.subs(s, s + 1), lambda: expr.subs(s, 2 * s), lambda: expr + s]
    return rng.choice(choices)()


def hand_style(latex: str) -> str:
    """How a model writes it: no \\left/\\right, no spaces but after a command name before a letter."""
    latex = latex.replace("\\left(", "(").replace("\\right)", ")")
    return re.sub(r"(\\[A-Za-z]+)? +", lambda m: m.group(1) + " " if m.group(1) else "", latex)


def generated_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        expr = random_expression(rng)
        if expr.is_number and expr.is_rational:
            continue  # plain numbers are the numeric path's
        other = rng.choice(rewrites(expr)) if rng.random() < 0.5 else perturb(rng, expr)
        a, g = sp.latex(other, ln_notation=True), sp.latex(expr, ln_notation=True)
        if rng.random() < 0.5:
            a = hand_style(a)
        if rng.random() < 0.3:
            g = hand_style(g)
        pairs.append((a, g))
    return pairs


# Spellings math-verify reads its own way; the fast path must leave them undecided or agree.
QUIRKS = [
    ("2m", "2"), ("2 m", "2"), ("x+m", "x+m"), ("3t", "3"), ("\\sqrt{2}m", "\\sqrt{2}"), ("2 + m", "2"),
    ("2\\frac{1}{2}", "1"), ("2\\frac{1}{2}", "\\frac{5}{2}"), ("x^23", "x^{23}"), ("x^23", "3x^2"),
    ("1/2x", "\\frac{1}{2x}"), ("1/2x", "\\frac{x}{2}"), ("2^3^2", "64"), ("2^3^2", "512"),
    ("X+1", "x+1"), ("X", "x"), ("E", "e"), ("e^2", "e^{2}"), ("i^2", "-1"), ("ab", "a \\cdot b"),
    ("a b", "ab"), ("a+b c", "a+b"), ("2a b", "2"), ("x", "\\frac{x^2+x}{x+1}"), ("\\frac{x^2+x}{x+1}", "x"),
    ("2x", "\\frac{2x^2+2x}{x+1}"), ("\\frac{1}{0}", "\\frac{1}{0}"), ("0^0", "1"), ("x^0", "1"),
    ("\\frac{1}{1+\\sqrt{2}}", "\\sqrt{2}-1"), ("\\frac{1}{\\sqrt{2}+\\sqrt{3}}", "\\sqrt{3}-\\sqrt{2}"),
    ("(1+\\sqrt{2})^2", "3+2\\sqrt{2}"), ("\\sqrt{2}^2", "2"), ("\\frac12x", "\\frac{x}{2}"), ("\\frac123", "\\frac{1}{23}"),
    ("\\sqrt23", "3\\sqrt{2}"), ("2 3", "6"), ("2 3", "5"), ("x (x+1)", "x^2+x"), ("x(x+1)", "x^2+x"),
    ("\\frac{x^2-1}{x-1}", "x+1"), ("\\frac{x}{y}", "x/y"), ("x/y/z", "\\frac{x}{yz}"), ("-x^2", "-(x^2)"),
    ("(-x)^2", "x^2"), ("2^{10}", "1024"), ("2^{-1}", "\\frac{1}{2}"), ("10^{18}", "1000000000000000000"),
    ("2^{64}", "18446744073709551616"), ("9^{9^{9}}", "5"), ("\\pi^2/6", "\\frac{\\pi^{2}}{6}"),
    ("\\frac{355}{113}", "\\pi"), ("\\frac{\\sqrt{2}}{10^{17}}", "\\frac{\\sqrt{3}}{10^{17}}"),
    ("x+\\frac{1}{10^{20}}", "x"), ("\\sqrt{8}", "2\\sqrt{2}"), ("\\sqrt{\\frac{1}{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("\\sqrt{\\frac{3}{4}}", "\\frac{\\sqrt{3}}{2}"), ("\\sqrt{1000000007}", "\\sqrt{1000000007}"),
    ("\\left(x+1\\right)^{2}", "x^2+2x+1"), ("x^{2} y", "x^2y"), ("2 x", "2x"), ("\\frac{1}{2} x", "\\frac{x}{2}"),
    ("x \\cdot 2", "2x"), ("x \\times y", "xy"), ("\\pi r^2", "r^2\\pi"), ("2\\pi r", "2 \\pi r"),
    ("123456789012345678901234567890", "123456789012345678901234567890"), ("-5", "5"),
    ("a b c", "abc"), ("x y", "xy"), ("x y+1", "xy+1"), ("2 k z", "2kz"), ("a k+1", "ak+1"), ("k a+1", "ak+1"),
    ("x+a 2", "x+2a"), ("x^{2} + a b", "x^2+ab"), ("x p \\pi m", "\\pi xpm"), ("r(2)", "2r"), ("k(x)", "kx"),
    ("x(x^2)", "x^3"), ("x^2(x)", "x^3"), ("x^{2}(3)", "3x^2"), ("x{(2)}", "2x"), ("\\pi(2)", "2\\pi"),
    ("\\ln 2 \\cdot 3", "\\ln 6"), ("\\ln 2 \\cdot 3", "3\\ln 2"), ("\\ln 2x", "x\\ln 2"), ("\\ln 2/3", "\\frac{\\ln 2}{3}"),
    ("\\ln 2^3", "3\\ln 2"), ("\\ln 4", "2\\ln 2"), ("\\ln 1", "0"), ("\\ln(2)\\cdot 3", "3\\ln 2"),
    ("-\\ln 2", "\\ln\\frac{1}{2}"), ("\\ln 2 + \\ln 3", "\\ln 6"), ("\\ln 2 - \\ln 3", "\\ln 2 - \\ln 3"),
    ("\\ln{2}", "\\ln(2)"), ("\\ln 3", "1"), ("\\ln(x)", "\\ln x"), ("0.1x+0.2x", "0.3x"), ("0.25\\pi", "\\frac{\\pi}{4}"),
    ("2\\pi", "6.28"), ("2\\pi", "6.283185"), ("\\frac{x}{3}", "0.333333x"), ("0.5x", "\\frac{x}{2}"), ("1.5x", "x"),
    ("0.5x+0.5x", "x"), ("(0.5x+1)^2", "0.25x^2+x+1"), ("\\frac{0.5}{x}", "\\frac{1}{2x}"), ("2.75^{2}", "7.5625"),
    ("1.5\\sqrt{2}", "\\frac{3\\sqrt{2}}{2}"), ("0.125\\pi x", "\\frac{\\pi x}{8}"), ("0.2x", "\\frac{x}{5}"),
    ("(x+1)(x-1)", "x^2-1"), ("(x)(2)", "2x"), ("(2)(3)", "6"), ("(2)(3)", "5"), ("-(2)(3)(4)", "-9"), ("(2)(3x)", "6x"), ("x(2)(3)", "6x"), ("\\sqrt{2}(x)", "\\sqrt{2}x"),
    ("\\frac{d}{dx}", "1"), ("x_1", "x_1"), ("\\alpha", "\\alpha"), ("|x|", "x"), ("x'", "x"),
]


def labelled(pairs: list[tuple[str, str]]) -> list[dict]:
    items = [(B % a, g, "expression") for a, g in pairs]
    verdicts = V.slow_verdicts(items, framed=False)
    return [dict(response=r, gold=g, kind=k, expected=v, source="algebra", note="symbolic pair")
            for (r, g, k), v in zip(items, verdicts)]


def check(n: int, seed: int) -> int:
    """Fresh random pairs: print the disagreements of the fast path with math-verify and the undecided share."""
    rows = labelled(generated_pairs(random.Random(seed), n))
    fast = V.fast_verdicts([(r["response"], r["gold"], r["kind"]) for r in rows])
    bad = [(r["response"], r["gold"], r["expected"], f) for r, f in zip(rows, fast)
           if f != V.UNDECIDED and (f == V.EQUIVALENT) != r["expected"]]
    for b in bad:
        print("DISAGREE", b)
    undecided = sum(f == V.UNDECIDED for f in fast)
    print(f"{n} pairs (seed {seed}): {len(bad)} disagreements, {undecided / n:.1%} undecided, "
          f"{sum(r['expected'] for r in rows)} equivalent")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", type=int, default=0, metavar="N")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    V.configure(timeout=5.0)  # labels, not latency: a slow sympy simplify must not count as "wrong"
    if args.check:
        return check(args.check, args.seed)
    rows = [dict(r, note="math-verify quirk") for r in labelled(QUIRKS)]
    rows += labelled(generated_pairs(random.Random(20261121), 240))
    existing = {(e["response"], e["gold"], e["kind"]) for e in map(json.loads, SUITE.read_text().splitlines())}
    new = [r for r in rows if (r["response"], r["gold"], r["kind"]) not in existing]
    with open(SUITE, "a") as handle:
        for row in new:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"appended {len(new)} of {len(rows)} rows ({sum(r['expected'] for r in new)} equivalent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
