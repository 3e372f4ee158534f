"""`spice bench gpu OUT_DIR`: the one-shot GPU validation of issue 18, for a bare GPU machine.

Installs carried wheels (megatron-core, liger-kernel, cut-cross-entropy: `--wheels`) and the project
with `pip install --no-deps --no-build-isolation -e .` (no network), then runs every gpu-marked test,
`spice bench loss` at N in {4096, 16384} against the reference and the baselines, `spice bench scoring`
and `spice bench train` (megatron-core, local spec, distributed optimizer, TP=1, the ~1B Llama preset),
each step in its own process with its own timeout inside one overall budget (8 minutes by default).
A preflight step first records the versions, the device and its measured ceilings, and refuses a
spice._C built without CUDA. Writes gpu_check.json, gpu_check.md, steps.log and each step's own JSON
(at most 8 files) to OUT_DIR. Without a CUDA
device it stops at the first GPU step with a one-line reason (exit 2); `--dry-run` prints the plan.
Uses only the standard library and torch, so it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Step:
    """One stage of the check: a command, its time limit, and whether it needs a CUDA device."""

    name: str
    command: list[str]
    timeout: int
    needs_gpu: bool
    status: str = "not run"
    seconds: float = 0.0
    tail: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench gpu`."""
    parser.add_argument("out", type=Path, help="folder for gpu_check.json, gpu_check.md and the logs")
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl",
                        help="folder of wheels to install first, offline (default: .whl beside the tree)")
    parser.add_argument("--skip-install", action="store_true", help="the project is installed already")
    parser.add_argument("--budget", type=int, default=480, help="seconds for all steps together")
    parser.add_argument("--dry-run", action="store_true", help="print the steps and their limits, run nothing")


def gpu_test_files() -> list[str]:
    """Test files holding gpu-marked tests (found by their marker, so new ones join by themselves)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text(encoding="utf-8"))


def plan(args: argparse.Namespace) -> list[Step]:
    """The steps in order; the install steps first, then the GPU steps."""
    py, out = sys.executable, args.out.resolve()
    steps = []
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels.is_dir() else []
    xdist = ["-n", "4"] if importlib.util.find_spec("xdist") is not None else []
    if not args.skip_install:
        if wheels:
            steps.append(Step("wheels", [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                         *map(str, wheels)], 60, False))
        steps.append(Step("install", [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                      "--no-build-isolation", "-e", str(REPO)], 300, False))
    steps += [
        Step("preflight", [py, "-c", "from spice.bench.gpu import preflight; "
                                     f"preflight({str(out / 'preflight.json')!r})"], 60, True),
        # four pytest-xdist workers (when installed) compile the many Triton variants in parallel
        Step("gpu-tests", [py, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider", *xdist,
                           "--continue-on-collection-errors", "--timeout=150", f"--junitxml={out / 'gpu_tests.xml'}",
                           *gpu_test_files()], 200, True),
        Step("bench-loss", [py, "-m", "spice.bench.loss", "--device", "cuda", "--tokens", "4096", "16384",
                            "--warmup", "1", "--repeats", "3", "--json", str(out / "bench_loss.json")], 200, True),
        Step("bench-scoring", [py, "-m", "spice.bench.scoring", "--json", str(out / "bench_scoring.json")], 60, True),
        Step("bench-train", [py, "-m", "spice.bench.train", "--preset", "1b", "--tp", "1", "--transformer-impl",
                             "local", "--steps", "3", "--warmup", "2", "--json", str(out / "bench_train.json")],
             240, True),
    ]
    return steps


def preflight(path: str) -> None:
    """Versions, the device, spice._C's CUDA build, and the two ceilings (bf16 matmul, copy bandwidth)."""
    import torch
    import triton
    from triton.testing import do_bench

    from spice import _C

    props = torch.cuda.get_device_properties(0)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    matmul_ms = do_bench(lambda: a @ a, warmup=50, rep=300, return_mode="median")
    src = torch.randn(2**29, device="cuda", dtype=torch.float32)  # 2 GiB
    dst = torch.empty_like(src)
    copy_ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__,
            "device": props.name, "sms": props.multi_processor_count,
            "l2_bytes": getattr(props, "L2_cache_size", None), "memory_bytes": props.total_memory,
            "spice_C_with_cuda": bool(_C.built_with_cuda()),
            "bf16_matmul_tflops": 2 * 8192**3 / matmul_ms / 1e9, "copy_tb_per_s": 2 * src.nbytes / copy_ms / 1e9}
    Path(path).write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    if not info["spice_C_with_cuda"]:
        raise SystemExit("preflight: spice._C was built without its CUDA sources (CMake found no nvcc)")


def _run(step: Step, limit: int, log: Path) -> None:
    """Run one step in its own process group (killed whole at the limit), appending its output to log."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if shutil.which("nvcc") is None and Path("/usr/local/cuda/bin/nvcc").exists():
        env["CUDACXX"] = "/usr/local/cuda/bin/nvcc"  # CMake's CUDA check looks on PATH and here
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as sink:
        sink.write(f"\n===== {step.name} (limit {limit} s): {' '.join(step.command)}\n")
        sink.flush()
        proc = subprocess.Popen(step.command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            step.status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            step.status = f"timed out after {limit} s"
    step.seconds = time.monotonic() - started
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    step.tail = "\n".join(lines[-15:])


def _cuda_missing() -> str | None:
    """Why no GPU step can run here, or None when torch sees a CUDA device."""
    try:
        import torch
    except ImportError as err:
        return f"torch does not import ({err})"
    if not torch.cuda.is_available():
        return (f"no CUDA device visible to torch {torch.__version__} (CUDA build {torch.version.cuda}); "
                "the remaining steps need one")
    return None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _test_counts(path: Path) -> dict | None:
    """passed/failed/errors/skipped of the junit report, with the failing test names."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = {"passed": 0, "failed": [], "errors": [], "skipped": 0}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            counts["failed"].append(name)
        elif case.find("error") is not None:
            counts["errors"].append(name)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def targets(results: dict) -> list[dict]:
    """Issue 18's targets, each with its measured value and verdict (None when not measured)."""
    checks = []
    rows = {(r["implementation"], r["N"]): r for r in (results.get("loss") or {}).get("results", [])
            if r.get("status") == "ok"}
    fused, ref = rows.get(("fused", 16384)), rows.get(("reference", 16384))
    ratio = fused["peak_bytes"] / ref["peak_bytes"] if fused and ref and ref.get("peak_bytes") else None
    checks.append({"target": "fused peak extra memory <= 1/10 of the reference (N=16384)",
                   "value": ratio, "met": None if ratio is None else ratio <= 0.1})
    liger = [rows[k]["seconds"] for k in (("liger-grpo", 16384), ("liger-flce", 16384)) if k in rows]
    speed = fused["seconds"] / min(liger) if fused and liger else None
    checks.append({"target": "fused time <= 0.9 x liger-kernel's best path (N=16384)",
                   "value": speed, "met": None if speed is None else speed <= 0.9})
    mfu = (results.get("train") or {}).get("mfu")
    checks.append({"target": "training step MFU >= 0.40 (1B, TP=1)", "value": mfu,
                   "met": None if mfu is None else mfu >= 0.40})
    small = [r for r in (results.get("scoring") or {}).get("results", []) if (r["T"], r["G"]) == (128, 8)]
    speedup = small[0].get("speedup") if small else None
    equal = small[0].get("bitwise_equal") if small else None
    checks.append({"target": "scoring kernel >= 10x its CPU twin at 128 x 8, bitwise equal", "value": speedup,
                   "met": None if speedup is None else bool(speedup >= 10 and equal)})
    return checks


def _markdown(report: dict) -> str:
    lines = [f"# GPU check, {report['date']}", "", f"- machine: {report['machine']}",
             f"- command: `{report['command']}`", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.0f} |" for s in report["steps"]]
    pre = report["results"].get("preflight")
    if pre:
        lines += ["", f"Device: {pre['device']}, {pre['sms']} SMs, L2 {pre['l2_bytes']} B; torch {pre['torch']} "
                  f"(CUDA {pre['cuda']}), triton {pre['triton']}; measured ceilings: bf16 matmul "
                  f"{pre['bf16_matmul_tflops']:.0f} TFLOP/s, copy {pre['copy_tb_per_s']:.2f} TB/s"]
    tests = report["results"].get("tests")
    if tests:
        lines += ["", f"GPU tests: {tests['passed']} passed, {len(tests['failed'])} failed, "
                  f"{len(tests['errors'])} errors, {tests['skipped']} skipped"]
        lines += [f"- failed: {name}" for name in tests["failed"] + tests["errors"]]
    loss = report["results"].get("loss")
    if loss:
        lines += ["", "| loss implementation | N | ms | peak extra MiB | loss | grad W norm | status |",
                  "|---|---|---|---|---|---|---|"]
        for r in loss["results"]:
            ms = f"{r['seconds'] * 1e3:.1f}" if "seconds" in r else "-"
            mib = f"{r['peak_bytes'] / 2**20:.0f}" if r.get("peak_bytes") is not None else "-"
            value = f"{r['loss']:.6g} | {r['grad_weight_norm']:.6g}" if "loss" in r else "- | -"
            lines.append(f"| {r['implementation']} | {r['N']} | {ms} | {mib} | {value} | {r['status']} |")
    scoring = report["results"].get("scoring")
    if scoring:
        lines += ["", "| scoring T x G | CPU twin ms | CUDA ms | speed-up | bitwise |", "|---|---|---|---|---|"]
        lines += [f"| {r['T']} x {r['G']} | {r['cpu_seconds'] * 1e3:.3f} | {r['cuda_seconds'] * 1e3:.3f} | "
                  f"{r['speedup']:.1f}x | {r['bitwise_equal']} |" for r in scoring["results"] if "cuda_seconds" in r]
    train = report["results"].get("train")
    if train:
        lines += ["", f"Training step: {train.get('seconds_per_step', 0):.3f} s, "
                  f"{train.get('tokens_per_second', 0):.0f} tokens/s, MFU {train.get('mfu')}"]
    lines += ["", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {c['target']} | {'-' if c['value'] is None else format(c['value'], '.3g')} | {c['met']} |"
              for c in report["targets"]]
    if report.get("stopped"):
        lines += ["", f"Stopped: {report['stopped']}"]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    try:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        gpus = "nvidia-smi not available"
    return f"{platform.node()}, Python {platform.python_version()}, {gpus or 'no GPU listed'}"


def run(args: argparse.Namespace) -> int:
    """Run the plan within the budget; 0 when every step passed, 2 when stopped for want of a GPU, else 1."""
    steps = plan(args)
    if args.dry_run:
        for step in steps:
            print(f"{step.name:>14} ({step.timeout:>3} s{', GPU' if step.needs_gpu else ''}): {' '.join(step.command)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "steps.log"
    log.write_text("")
    deadline = time.monotonic() + args.budget
    stopped = None
    for step in steps:
        remaining = int(deadline - time.monotonic())
        if stopped or remaining < 10:
            step.status = "skipped: " + ("an earlier step stopped the check" if stopped else "the budget is spent")
            continue
        if step.needs_gpu and (why := _cuda_missing()):
            stopped = why
            step.status = f"stopped: {why}"
            print(f"spice bench gpu: step '{step.name}' needs a CUDA device: {why}", file=sys.stderr)
            continue
        _run(step, min(step.timeout, remaining), log)
        print(f"{step.name}: {step.status} ({step.seconds:.0f} s)", flush=True)
        if step.name in ("wheels", "install", "preflight") and step.status != "ok":
            stopped = f"step '{step.name}' {step.status}; see steps.log"
    out = args.out
    results = {"preflight": _read_json(out / "preflight.json"), "tests": _test_counts(out / "gpu_tests.xml"),
               "loss": _read_json(out / "bench_loss.json"),
               "scoring": _read_json(out / "bench_scoring.json"), "train": _read_json(out / "bench_train.json")}
    report = {"date": datetime.date.today().isoformat(), "machine": _machine(),
              "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "budget_seconds": args.budget, "stopped": stopped,
              "steps": [dataclasses.asdict(s) for s in steps], "results": results, "targets": targets(results)}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    summary = _markdown(report)
    (out / "gpu_check.md").write_text(summary)
    print(summary)
    if stopped and any(s.status.startswith("stopped") for s in steps):
        return 2
    return 0 if all(s.status == "ok" for s in steps) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m spice.bench.gpu`."""
    parser = argparse.ArgumentParser(prog="spice bench gpu", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
