"""Append real reasoner outputs of the embedded model to the agreement suite: each response from a
`spice eval` JSON file, paired with the benchmark's gold answer and with its own extracted answer,
and labelled by the authority (math-verify in the hang-proof pool, without the fast path).

    python tests/data/verify_agreement_real.py runs/eval/smollm2-gsm8k.json [...]
"""

import json
import sys
from pathlib import Path

from spice.verify import extract_answer, slow_verdicts

SUITE = Path(__file__).with_name("verify_agreement.jsonl")


def main(paths: list[str]) -> None:
    rows = []
    for path in paths:
        for name, bench in json.loads(Path(path).read_text())["benchmarks"].items():
            for record in bench["records"]:
                for sample in record["samples"]:
                    response, kind = sample["response"], record["kind"]
                    rows.append((response, record["gold"], kind, f"{name}/{record['id']}"))
                    own = extract_answer(response, kind)
                    if own and own != record["gold"]:
                        rows.append((response, own, kind, f"{name}/{record['id']} own answer"))
    verdicts = slow_verdicts([(r, g, k) for r, g, k, _ in rows])
    existing = {(e["response"], e["gold"], e["kind"]) for e in map(json.loads, SUITE.read_text().splitlines())}
    with open(SUITE, "a") as handle:
        for (response, gold, kind, note), verdict in zip(rows, verdicts):
            if (response, gold, kind) not in existing:
                handle.write(json.dumps({"response": response, "gold": gold, "kind": kind, "expected": verdict,
                                         "source": "smollm2", "note": note}) + "\n")
    print(f"appended {len(rows)} rows ({sum(verdicts)} equivalent)")


if __name__ == "__main__":
    main(sys.argv[1:])
