"""Evaluation on benchmarks: loaders (bundled and local jsonl), scoring through the reasoner prompt and
the project's verifier, the runner used by `spice eval` and by training, and the co-evolution check."""

from spice.eval.benchmarks import Benchmark, BenchmarkError, Item, available, load_benchmark, load_jsonl
from spice.eval.runner import evaluate, evaluate_during_training, format_table

__all__ = ["Benchmark", "BenchmarkError", "Item", "available", "evaluate", "evaluate_during_training",
           "format_table", "load_benchmark", "load_jsonl"]
