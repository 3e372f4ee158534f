"""`spice report RUN_DIR`: one self-contained HTML page a person can read: curves (inline SVG), the
guard's events, sample tasks with their documents, provenance and the audit status."""

from __future__ import annotations

import argparse
import math
from html import escape
from pathlib import Path

from spice.guard.audit import audit
from spice.guard.records import CHAIN_KEY, audit_key, current_rows, read_rows
from spice.guard.rollback import checkpoint_events

CURVES = (
    ("Challenger reward", ("challenger_reward_mean",)),
    ("Valid tasks and accuracy", ("valid_task_rate", "reasoner_accuracy")),
    ("Gradient norm", ("grad_norm",)),
    ("Completion lengths", ("challenger_length_mean", "reasoner_length_mean")),
    ("Duplicates and leaks", ("duplicate_rate", "answer_leak_rate", "evaluator_disagreement")),
    ("Policy drift (KL from the initial model)", ("policy_kl",)),
)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
.ok{color:#080;font-weight:bold}.bad{color:#b00;font-weight:bold}.curves{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}figcaption{font-size:.85em}.doc{white-space:pre-wrap;font-size:.8em;background:#f6f6f6;padding:.5em}
.task{border:1px solid #ddd;padding:.5em;margin:.5em 0}"""


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def svg_curve(title: str, series: dict[str, list[tuple[float, float]]], width: int = 360, height: int = 180) -> str:
    """Line chart of (x, y) series as inline SVG, with its value range on the axis."""
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, top, right, bottom = 50, 10, width - 10, height - 30

    def at(x: float, y: float) -> str:
        return f"{left + (x - x0) / (x1 - x0) * (right - left):.1f},{bottom - (y - y0) / (y1 - y0) * (bottom - top):.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 10}" font-size="10" text-anchor="end">{y1:.3g}</text>',
             f'<text x="{left - 4}" y="{bottom}" font-size="10" text-anchor="end">{y0:.3g}</text>',
             f'<text x="{left}" y="{bottom + 14}" font-size="10">{x0:g}</text>',
             f'<text x="{right}" y="{bottom + 14}" font-size="10" text-anchor="end">{x1:g}</text>']
    legend = []
    for colour, (name, values) in zip(COLOURS, series.items()):
        if not values:
            continue
        line = " ".join(at(x, y) for x, y in values)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>')
        parts.extend(f'<circle cx="{at(x, y).split(",")[0]}" cy="{at(x, y).split(",")[1]}" r="2" fill="{colour}"/>'
                     for x, y in values)
        legend.append(f'<span style="color:{colour}">&#9632; {escape(name)}</span>')
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}<figcaption><b>{escape(title)}</b> {' '.join(legend)}</figcaption></figure>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _curves(metrics: list[dict], manifests: list[dict]) -> str:
    signals = {m["iteration"]: m.get("signals", {}) for m in manifests}
    rows = [{**signals.get(m.get("iteration"), {}), **m} for m in metrics]
    evals = sorted({k for r in rows for k in r if k.startswith("eval/")})
    figures = [*CURVES, *((("Benchmarks", tuple(evals[:4])),) if evals else ())]
    out = []
    for title, keys in figures:
        series = {k: [(r["iteration"] + 1, float(r[k])) for r in rows if _finite(r.get(k))] for k in keys}
        out.append(svg_curve(title, {k: v for k, v in series.items() if v}))
    return f'<div class="curves">{"".join(out)}</div>'


def _events(events: list[dict]) -> str:
    shown = [e for e in events if e.get("event") != "checkpoint"]
    rows = []
    for e in shown:
        what = e.get("detail") or "; ".join(e.get("reasons", [])) or e.get("by") or e.get("to") or ""
        iteration = e.get("iteration", e.get("next_iteration", ""))
        rows.append([escape(str(e.get("event"))), escape(str(iteration)), escape(str(e.get("rule", ""))),
                     escape(str(e.get("action", ""))), escape(str(what))])
    return _table(["event", "iteration", "rule", "action", "detail"], rows) if rows else "<p>No events.</p>"


def _tasks(tasks: list[dict], documents: dict[str, dict], count: int) -> str:
    valid = [t for t in tasks if t.get("status") == "valid"][-count:]
    out = []
    for t in valid:
        options = "".join(f"<li>{escape(str(o))}</li>" for o in t.get("options") or [])
        answers = ", ".join(f"{escape(str(r.get('answer')))} ({r.get('reward')})" for r in t.get("reasoner", []))
        doc = documents.get(t["document_id"], {})
        out.append(f'<div class="task"><b>Iteration {t["iteration"] + 1}, {escape(t.get("kind", ""))}:</b> '
                   f'{escape(t["question"])}<ol type="A">{options}</ol><p>Gold: <b>{escape(str(t["answer"]))}</b>; '
                   f'quote: <i>{escape(str(t.get("quote", "")))}</i>; reasoner: {answers or "-"}</p>'
                   f'<details><summary>Document {escape(t["document_id"])} ({escape(str(doc.get("source", "")))})'
                   f'</summary><div class="doc">{escape(doc.get("text", "(not recorded)"))}</div></details></div>')
    return "".join(out) or "<p>No valid tasks.</p>"


def _provenance(manifests: list[dict], checkpoints: dict[str, dict]) -> str:
    rows = [[str(m["iteration"] + 1), str(m.get("weight_version")), str(m.get("seed")),
             escape(str(m.get("config_sha256", ""))[:16]), escape(str(m.get("code", {}).get("commit", ""))[:12]),
             str(len(m.get("documents", []))), str(len(m.get("tasks", {}).get("sha256", []))),
             escape(", ".join(m.get("firings", [])))] for m in manifests]
    table = _table(["iteration", "weights", "seed", "config sha256", "commit", "documents", "task rows", "firings"],
                   rows)
    ckpt = _table(["checkpoint", "next iteration", "passed every rule", "sha256"],
                  [[escape(n), str(e["next_iteration"]), "yes" if e["clean"] else "no", escape(e["sha256"][:16])]
                   for n, e in sorted(checkpoints.items())])
    return table + "<h3>Checkpoints</h3>" + ckpt


def build_report(run_dir: Path, tasks_shown: int = 8) -> str:
    """The HTML page of a run."""
    result = audit(run_dir, audit_key())
    metrics = [{k: v for k, v in r.items() if k != CHAIN_KEY} for r in current_rows(run_dir, "metrics.jsonl")]
    manifests = current_rows(run_dir, "manifests.jsonl")
    events = read_rows(run_dir / "events.jsonl")
    documents = {d["id"]: d for d in read_rows(run_dir / "documents.jsonl")}
    tasks = current_rows(run_dir, "tasks.jsonl")
    status = (f'<p class="ok">Audit: {escape(result.summary())}</p>' if result.ok
              else f'<p class="bad">Audit: {escape(result.summary())}</p>')
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>spice run {escape(run_dir.name)}"
            f"</title><style>{STYLE}</style></head><body><h1>spice run {escape(str(run_dir))}</h1>{status}"
            f"<p>{len(metrics)} iterations, {len(tasks)} task rows, {len(events)} events.</p>"
            f"<h2>Curves</h2>{_curves(metrics, manifests)}<h2>Guard events</h2>{_events(events)}"
            f"<h2>Sample tasks</h2>{_tasks(tasks, documents, tasks_shown)}"
            f"<h2>Provenance</h2>{_provenance(manifests, checkpoint_events(run_dir, abandoned_too=True))}"
            "</body></html>")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--output", help="HTML file (default RUN_DIR/report.html)")
    parser.add_argument("--tasks", type=int, default=8, help="sample tasks shown")


def run(args: argparse.Namespace) -> int:
    import sys

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        print(f"spice report: {run_dir} is not a run folder (no config.yaml)", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else run_dir / "report.html"
    output.write_text(build_report(run_dir, args.tasks), encoding="utf-8")
    print(f"spice report: wrote {output}")
    return 0
