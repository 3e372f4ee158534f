"""Writes tests/data/verify_agreement.jsonl: hand-written edge cases plus realistic reasoner outputs made
from templates (seeded). `expected` is the true verdict. Run from the repository root:
    python tests/data/verify_agreement_make.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

B = "\\boxed{%s}"

EDGE: list[tuple[str, str, str, bool, str]] = [
    # fractions
    (B % "\\frac{1}{2}", "0.5", "float", True, "fraction"),
    (B % "\\dfrac{3}{4}", "3/4", "float", True, "fraction"),
    (B % "\\tfrac{2}{4}", "1/2", "float", True, "fraction"),
    (B % "6/8", "3/4", "float", True, "fraction"),
    (B % "\\frac{1}{3}", "0.33", "float", False, "fraction"),
    (B % "\\frac12", "0.5", "float", True, "fraction"),
    (B % "-\\frac{1}{2}", "-0.5", "float", True, "fraction"),
    (B % "\\frac{-1}{2}", "-1/2", "float", True, "fraction"),
    (B % "\\frac{1}{-2}", "-0.5", "float", True, "fraction"),
    (B % "2\\frac{1}{2}", "5/2", "float", True, "mixed number"),
    (B % "2 \\frac{1}{2}", "2.5", "float", True, "mixed number"),
    (B % "3\\frac{1}{4}", "3.25", "float", True, "mixed number"),
    (B % "-2\\frac{1}{2}", "-2.5", "float", True, "mixed number"),
    (B % "\\frac{7}{2}", "3.5", "float", True, "fraction"),
    (B % "\\frac{1}{2}", "2", "float", False, "fraction"),
    (B % "\\frac{2}{1}", "2", "integer", True, "fraction"),
    (B % "\\frac{10}{4}", "\\frac{5}{2}", "expression", True, "fraction"),
    (B % "\\frac{3}{4}", "\\frac{4}{3}", "expression", False, "fraction"),
    (B % "\\frac{1.5}{2}", "0.75", "float", True, "fraction"),
    (B % "1.5/3", "0.5", "float", True, "fraction"),
    (B % "\\frac{22}{7}", "3.14", "float", False, "fraction close to gold"),
    (B % "\\frac{1}{3}", "0.333333", "float", True, "fraction to six places"),
    (B % "\\frac{1}{3}", "0.3333", "float", False, "fraction vs short decimal"),
    # decimals
    (B % ".5", "0.5", "float", True, "decimal"),
    (B % "5.0", "5", "integer", True, "decimal"),
    (B % "5.00", "5", "integer", True, "decimal"),
    (B % "3.14", "3.14159", "float", False, "decimal"),
    (B % "2.50", "2.5", "float", True, "decimal"),
    (B % "0.1", "1/10", "float", True, "decimal"),
    (B % "1.5", "3/2", "float", True, "decimal"),
    (B % "0.75", "0.7", "float", False, "decimal"),
    (B % "12.5", "12.50", "float", True, "decimal"),
    (B % "-0.25", "-1/4", "float", True, "decimal"),
    (B % "0.001", "0.0011", "float", False, "decimal"),
    (B % "100.5", "100.05", "float", False, "decimal"),
    (B % "007", "7", "integer", True, "leading zeros"),
    (B % "+5", "5", "integer", True, "plus sign"),
    # thousands separators
    (B % "1,234", "1234", "integer", True, "thousands"),
    (B % "1{,}234", "1234", "integer", True, "thousands"),
    (B % "1\\,234", "1234", "integer", True, "thousands"),
    (B % "1 234", "1234", "integer", True, "thousands"),
    (B % "1,000,000", "1000000", "integer", True, "thousands"),
    (B % "12,345.67", "12345.67", "float", True, "thousands"),
    (B % "1,234", "1243", "integer", False, "thousands"),
    (B % "1,000", "100", "integer", False, "thousands"),
    (B % "5\\,000", "5,000", "integer", True, "thousands"),
    (B % "2{,}500{,}000", "2500000", "integer", True, "thousands"),
    ("The total is 1,250 dollars, so the answer is 1,250.", "1250", "integer", True, "thousands no box"),
    # LaTeX wrappers and spacing
    (B % "\\left( 5 \\right)", "5", "integer", True, "wrapper"),
    (B % "\\text{5}", "5", "integer", True, "wrapper"),
    (B % "\\mathrm{5}", "5", "integer", True, "wrapper"),
    (B % "$5$", "5", "integer", True, "wrapper"),
    (B % "\\displaystyle \\frac{1}{2}", "0.5", "float", True, "wrapper"),
    (B % "\\!5", "5", "integer", True, "wrapper"),
    (B % "5.", "5", "integer", True, "trailing punctuation"),
    (B % "\\textbf{7}", "7", "integer", True, "wrapper"),
    (B % "\\mathbf{12}", "12", "integer", True, "wrapper"),
    (B % " 42 ", "42", "integer", True, "spacing"),
    (B % "\\boxed{8}", "8", "integer", True, "nested box"),
    ("\\fbox{19}", "19", "integer", True, "fbox"),
    ("$\\boxed{64}$.", "64", "integer", True, "wrapper"),
    ("\\[\\boxed{\\dfrac{5}{6}}\\]", "5/6", "float", True, "display math"),
    # units, degrees, percent, currency
    (B % "5 \\text{ cm}", "5", "integer", True, "unit"),
    (B % "5\\text{ cm}", "5", "integer", True, "unit"),
    (B % "12 \\text{ meters}", "12", "integer", True, "unit"),
    (B % "3\\text{ kg}", "4", "integer", False, "unit"),
    (B % "10^\\circ", "10", "integer", True, "degrees"),
    (B % "45^{\\circ}", "45", "integer", True, "degrees"),
    (B % "30\u00b0", "30", "integer", True, "degrees"),
    (B % "60^\\circ", "30", "integer", False, "degrees"),
    (B % "50\\%", "50", "integer", True, "percent"),
    (B % "50\\%", "0.5", "float", True, "percent"),
    (B % "25\\%", "25\\%", "float", True, "percent"),
    (B % "20\\%", "25", "integer", False, "percent"),
    (B % "\\$5", "5", "integer", True, "currency"),
    (B % "\\$1{,}000", "1000", "integer", True, "currency"),
    (B % "\\$12.50", "12.5", "float", True, "currency"),
    # sets and intervals
    (B % "\\{1,2\\}", "\\{2,1\\}", "expression", True, "set"),
    (B % "(1,2)", "(1,2)", "expression", True, "interval"),
    (B % "[1,2)", "[1,2]", "expression", False, "interval"),
    (B % "(0, \\infty)", "(0,\\infty)", "expression", True, "interval"),
    (B % "1, 2", "2, 1", "expression", True, "set list"),
    (B % "\\{1,2,3\\}", "\\{1,2\\}", "expression", False, "set"),
    (B % "[-1, 3]", "[-1,3]", "expression", True, "interval"),
    (B % "(-\\infty, 2]", "(-\\infty, 2)", "expression", False, "interval"),
    # expressions
    (B % "x^2+1", "1+x^2", "expression", True, "expression"),
    (B % "\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", "expression", True, "expression"),
    (B % "\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}", "expression", True, "expression identical"),
    (B % "\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", "expression", True, "expression"),
    (B % "2\\pi", "6.28", "expression", False, "expression numeric approx"),
    (B % "\\pi/2", "\\frac{\\pi}{2}", "expression", True, "expression"),
    (B % "x=5", "5", "integer", True, "assignment"),
    (B % "y = -3", "-3", "integer", True, "assignment"),
    (B % "(x+1)^2", "x^2+2x+1", "expression", True, "expression"),
    (B % "2x", "x \\cdot 2", "expression", True, "expression"),
    (B % "\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}", "expression", True, "expression"),
    (B % "3\\sqrt{2}", "\\sqrt{18}", "expression", True, "expression"),
    (B % "2\\sqrt{3}", "3\\sqrt{2}", "expression", False, "expression"),
    (B % "x^2-1", "(x-1)(x+1)", "expression", True, "expression"),
    (B % "a+b", "a-b", "expression", False, "expression"),
    (B % "10^6", "1000000", "integer", True, "power"),
    (B % "2^{10}", "1024", "integer", True, "power"),
    (B % "e^{2}", "e^2", "expression", True, "expression"),
    (B % "\\ln(2)", "\\ln 2", "expression", True, "expression"),
    # MCQ variants
    (B % "B", "B", "mcq", True, "mcq box"),
    (B % "(B)", "B", "mcq", True, "mcq box"),
    (B % "(B) cats", "B", "mcq", True, "mcq box with text"),
    (B % "B) cats", "B", "mcq", True, "mcq box with text"),
    (B % "\\text{B}", "B", "mcq", True, "mcq box wrapper"),
    (B % "b", "B", "mcq", True, "mcq lowercase"),
    (B % "E", "B", "mcq", False, "mcq other letter"),
    (B % "42", "A", "mcq", False, "mcq box not a letter"),
    (B % "C", "(C)", "mcq", True, "mcq gold in parens"),
    ("The answer is (C).", "C", "mcq", True, "mcq phrase"),
    ("Answer: D", "D", "mcq", True, "mcq phrase"),
    ("The answer is B", "C", "mcq", False, "mcq phrase"),
    ("Option (A) is wrong because of X. So the right one is (D).", "D", "mcq", False, "mcq last paren (hand: no stated answer)"),
    ("I first thought A) but it is actually C)", "C", "mcq", False, "mcq last close paren (hand: no stated answer)"),
    ("The answer is option C.", "C", "mcq", True, "mcq option word"),
    ("Final answer: choice B", "B", "mcq", True, "mcq choice word"),
    ("B", "B", "mcq", True, "mcq bare letter"),
    ("D.", "D", "mcq", True, "mcq bare letter"),
    ("None of the options makes sense to me.", "A", "mcq", False, "mcq no letter"),
    ("   ", "A", "mcq", False, "mcq empty"),
    ("Answer: (B)\nWait, let me reconsider. \\boxed{C}", "C", "mcq", True, "mcq box wins"),
    ("The answer is (B) because (A) is too small.", "B", "mcq", True, "mcq phrase before other parens"),
    # no box
    ("The answer is 42.", "42", "integer", True, "no box phrase"),
    ("So we get 7 apples in total.", "7", "integer", True, "no box last number"),
    ("Adding 3 and 4 gives 8.", "7", "integer", False, "no box last number"),
    ("Therefore, the final answer is: 3/4.", "0.75", "float", True, "no box phrase"),
    ("The answer is $\\frac{1}{2}$.", "1/2", "float", True, "no box phrase"),
    ("the answer is Paris.", "Paris", "string", True, "no box phrase string"),
    ("I am not sure what the answer could be", "5", "expression", False, "no answer"),
    ("Answer: -12", "-12", "integer", True, "no box phrase"),
    ("The result is 2.5 meters", "2.5", "float", True, "no box last number"),
    # several boxes
    ("First \\boxed{3}, wait, actually \\boxed{4}.", "4", "integer", False, "several boxes (hand: they disagree)"),
    ("First \\boxed{3}, wait, actually \\boxed{4}.", "3", "integer", False, "several boxes"),
    ("\\boxed{2} and then \\boxed{5", "2", "integer", True, "last box unclosed"),
    ("\\boxed{\\frac{1}{2}} or \\boxed{\\frac{1}{3}}", "1/3", "float", False, "several boxes (hand: a hedge)"),
    # empty
    ("", "5", "integer", False, "empty"),
    (B % "", "5", "integer", False, "empty box"),
    ("", "Paris", "string", False, "empty"),
    ("", "x+1", "expression", False, "empty"),
    # strings
    (B % "Paris", "paris", "string", True, "string case"),
    (B % "The Nile", "Nile", "string", True, "string article"),
    (B % "U.S.A.", "USA", "string", True, "string punctuation"),
    (B % "London", "Paris", "string", False, "string"),
    (B % "new york city", "New York", "string", False, "string"),
    (B % "\\text{mitochondria}", "Mitochondria", "string", True, "string wrapper"),
    (B % "ab", "ba", "string", False, "string anagram"),
    ("The answer is photosynthesis.", "Photosynthesis", "string", True, "string phrase"),
    (B % "New-York", "new york", "string", True, "string hyphen"),
    (B % "Marie Curie", "Curie", "string", False, "string partial"),
    (B % "42", "42", "string", True, "string number"),
    (B % "\\text{Jupiter}", "jupiter.", "string", True, "string wrapper"),
    (B % "oxygen", "Oxygen gas", "string", False, "string"),
    (B % "S\u00e3o Paulo", "S\u00e3o Paulo", "string", True, "string non-ascii"),
    (B % "1945", "1944", "string", False, "string year"),
    # big and pathological numbers
    (B % "123456789012345678901234567890", "123456789012345678901234567890", "integer", True, "big identical"),
    (B % "123456789012345678901234567890", "123456789012345678901234567891", "integer", False, "big differs"),
    (B % "9^{9^{9^{9}}}", "5", "integer", False, "pathological power"),
    (B % "1e3", "1000", "integer", False, "scientific e is not read"),
    (B % "-5", "-5", "integer", True, "negative"),
    (B % "-5", "5", "integer", False, "negative"),
    (B % "\u22125", "-5", "integer", True, "unicode minus"),
    (B % "- 7", "-7", "integer", True, "negative spaced"),
]

NAMES = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun"]
ITEMS = ["apples", "books", "coins", "marbles", "stamps", "tickets", "pencils", "cards"]
ENTITIES = [("Paris", "paris"), ("Mount Everest", "mount everest"), ("The Pacific Ocean", "Pacific Ocean"),
            ("Photosynthesis", "photosynthesis"), ("Isaac Newton", "Isaac Newton"), ("Mars", "mars"),
            ("Nitrogen", "nitrogen"), ("The Amazon", "Amazon"), ("Shakespeare", "shakespeare"),
            ("Mitochondria", "mitochondria"), ("Canberra", "canberra"), ("Oxygen", "OXYGEN")]
WRONG_ENTITIES = ["London", "K2", "Atlantic Ocean", "respiration", "Albert Einstein", "Venus", "helium", "Nile",
                  "Marlowe", "ribosome", "Sydney", "carbon"]
EXPRESSIONS = [("\\frac{\\sqrt{3}}{2}", ["\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"],
                ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{2}"]),
               ("2\\pi", ["2\\pi", "2 \\pi", "\\pi \\cdot 2"], ["\\pi", "4\\pi"]),
               ("x^2+1", ["x^2+1", "1+x^2", "x^{2} + 1"], ["x^2-1", "x^2"]),
               ("\\frac{3}{4}", ["\\frac{3}{4}", "0.75", "3/4"], ["\\frac{4}{3}", "0.7"]),
               ("3\\sqrt{2}", ["3\\sqrt{2}", "\\sqrt{18}", "3 \\sqrt 2"], ["2\\sqrt{3}", "\\sqrt{6}"]),
               ("\\frac{\\pi}{4}", ["\\frac{\\pi}{4}", "\\pi/4", "0.25\\pi"], ["\\frac{\\pi}{2}", "\\pi"]),
               ("(x+1)^2", ["(x+1)^2", "x^2+2x+1", "(1+x)^2"], ["x^2+1", "(x-1)^2"]),
               ("\\ln 2", ["\\ln 2", "\\ln(2)", "\\ln{2}"], ["\\ln 3", "2"])]

OPENERS = ["Let's think step by step.", "We need to find the value asked for.", "First, let us read the problem.",
           "To solve this, consider the information given.", "Okay, so the question is asking for a quantity."]
CLOSERS = ["Therefore, the final answer is {b}.", "So the answer is {b}.", "Thus we get {b}.",
           "The final answer is {b}", "Hence, {b}.", "**Final Answer**\n{b}"]


def steps(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 90), rng.randint(2, 90), rng.randint(2, 9)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    return (f"{rng.choice(OPENERS)} {name} has {a} {item} and buys {b} more, so {name} has {a} + {b} = {a + b} "
            f"{item}. Splitting them into {c} groups gives {(a + b) / c:.2f} per group.")


def reasoner(rng: random.Random, boxed: str | None, phrase: str | None = None) -> str:
    text = steps(rng)
    if rng.random() < 0.3:
        text += "\n\nLet me double-check: " + steps(rng)
    if boxed is not None:
        text += "\n\n" + rng.choice(CLOSERS).format(b="\\boxed{" + boxed + "}")
    elif phrase is not None:
        text += f"\n\nThe answer is {phrase}."
    return text


def integer_case(rng: random.Random) -> tuple[str, str, str, bool, str]:
    gold = rng.choice([rng.randint(0, 99), rng.randint(100, 9999), rng.randint(10000, 2000000), -rng.randint(1, 50)])
    correct = rng.random() < 0.55
    value = gold if correct else gold + rng.choice([-10, -2, -1, 1, 2, 3, 100])
    spelled = f"{value:,}" if abs(value) >= 1000 and rng.random() < 0.4 else str(value)
    form = rng.random()
    if form < 0.75:
        text = reasoner(rng, spelled + rng.choice(["", "", "", " \\text{ " + rng.choice(ITEMS) + "}"]))
    elif form < 0.9:
        text = reasoner(rng, None, spelled)
    else:
        text = reasoner(rng, None)  # no final answer: the last number in the reasoning is taken
        last = re.findall(r"-?[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?", text)[-1].replace(",", "")
        return text, str(gold), "integer", float(last) == gold, "template integer no final answer"
    return text, str(gold), "integer", correct, "template integer"


def float_case(rng: random.Random) -> tuple[str, str, str, bool, str]:
    num, den = rng.randint(1, 30), rng.choice([2, 4, 5, 8, 10, 20, 25])
    gold_value = num / den
    gold = rng.choice([f"{gold_value:g}", f"\\frac{{{num}}}{{{den}}}", f"{num}/{den}"])
    correct = rng.random() < 0.55
    if correct:
        answer = rng.choice([f"{gold_value:g}", f"\\frac{{{num}}}{{{den}}}", f"\\dfrac{{{num * 2}}}{{{den * 2}}}",
                             f"{gold_value:.3f}", f"{num}/{den}"])
    else:
        answer = rng.choice([f"{gold_value + rng.choice([0.5, 1, -0.25, 2]):g}", f"\\frac{{{den}}}{{{num}}}"
                             if num != den else "7.5", f"{gold_value * 10:g}"])
    return reasoner(rng, answer), gold, "float", correct, "template float"


def mcq_case(rng: random.Random) -> tuple[str, str, str, bool, str]:
    gold = rng.choice("ABCD")
    correct = rng.random() < 0.5
    letter = gold if correct else rng.choice([c for c in "ABCD" if c != gold])
    body = steps(rng) + " Comparing the options, (A) and (B) look plausible at first."
    form = rng.choice(["box", "boxparen", "boxtext", "phrase", "colon", "paren"])
    tail = {"box": f"\\boxed{{{letter}}}", "boxparen": f"\\boxed{{({letter})}}",
            "boxtext": f"\\boxed{{{letter}) the second statement}}", "phrase": f"The answer is ({letter}).",
            "colon": f"Answer: {letter}", "paren": f"So the correct choice is ({letter})."}[form]
    return body + "\n\n" + tail, gold, "mcq", correct, f"template mcq {form}"


def string_case(rng: random.Random) -> tuple[str, str, str, bool, str]:
    i = rng.randrange(len(ENTITIES))
    gold, right = ENTITIES[i]
    correct = rng.random() < 0.55
    answer = right if correct else WRONG_ENTITIES[i]
    if rng.random() < 0.3:
        answer = "\\text{" + answer + "}"
    if rng.random() < 0.8:
        return reasoner(rng, answer), gold, "string", correct, "template string"
    return reasoner(rng, None, answer), gold, "string", correct, "template string phrase"


def expression_case(rng: random.Random) -> tuple[str, str, str, bool, str]:
    gold, rights, wrongs = rng.choice(EXPRESSIONS)
    correct = rng.random() < 0.55
    answer = rng.choice(rights if correct else wrongs)
    return reasoner(rng, answer), gold, "expression", correct, "template expression"


def main() -> None:
    rng = random.Random(20261121)
    rows = [dict(response=r, gold=g, kind=k, expected=e, source="edge", note=n) for r, g, k, e, n in EDGE]
    makers = [integer_case] * 30 + [mcq_case] * 25 + [string_case] * 20 + [float_case] * 15 + [expression_case] * 10
    for _ in range(440):
        r, g, k, e, n = rng.choice(makers)(rng)
        rows.append(dict(response=r, gold=g, kind=k, expected=e, source="template", note=n))
    out = Path(__file__).with_name("verify_agreement.jsonl")
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"{out}: {len(rows)} cases ({len(EDGE)} hand-written)")


if __name__ == "__main__":
    main()
