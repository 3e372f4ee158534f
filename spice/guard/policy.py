"""The guard's policy: YAML rules (config `guard.rules`) from monitor signals to actions.

    guard:
      rules:
        - {monitor: challenger_reward_mean, zscore: 4, window: 10, action: rollback}
        - {monitor: duplicate_rate, above: 0.5, consecutive: 2, action: pause}
        - {monitor: valid_task_rate, below: 0.05, action: stop}

A rule names one monitor signal (see `spice.guard.core.SIGNALS`, or any numeric metrics.jsonl key) and
exactly one condition: `above` / `below` a threshold (on `consecutive` iterations in a row), `zscore`
(|value - mean| / std of the last `window` values, std at least `min_std`) or `ratio` (value / mean of
the last `window` values). Actions: log | pause (wait for approval) | stop (checkpoint, exit 0) |
rollback (restore the last checkpoint that passed every rule; `then: continue | stop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from spice.config import ConfigError
from spice.guard import monitors

ACTIONS = ("log", "pause", "stop", "rollback")
CONDITIONS = ("above", "below", "zscore", "ratio")
SEVERITY = {"log": 0, "pause": 1, "rollback": 2, "stop": 3}


@dataclass(frozen=True)
class Rule:
    name: str
    monitor: str
    condition: str  # above | below | zscore | ratio
    threshold: float
    action: str = "log"
    window: int = 10  # past values for zscore / ratio
    min_history: int = 3  # zscore / ratio stay silent until this many past values exist
    min_std: float = 0.0  # floor of the std in a z-score (a flat history makes any change infinite)
    consecutive: int = 1  # above / below: iterations in a row the condition must hold
    then: str = "continue"  # after a rollback: continue | stop


@dataclass(frozen=True)
class Firing:
    rule: Rule
    value: float
    detail: str


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _integer(where: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{where}: expected an integer of at least {least}, got {value!r}")
    return value


def parse_rule(raw: Any, index: int) -> Rule:
    """One rule from its YAML mapping; errors name `guard.rules[index].key`."""
    where = f"guard.rules[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    known = {"name", "monitor", "action", "window", "min_history", "min_std", "consecutive", "then", *CONDITIONS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown rule key (known: {', '.join(sorted(known))})")
    monitor = raw.get("monitor")
    if not isinstance(monitor, str) or not monitor:
        raise ConfigError(f"{where}.monitor: expected the name of a monitor signal, got {monitor!r}")
    conditions = [c for c in CONDITIONS if c in raw]
    if len(conditions) != 1:
        raise ConfigError(f"{where}: needs exactly one of {', '.join(CONDITIONS)}, got {conditions or 'none'}")
    condition = conditions[0]
    threshold = _number(f"{where}.{condition}", raw[condition])
    if condition in ("zscore", "ratio") and threshold <= 0:
        raise ConfigError(f"{where}.{condition}: must be positive, got {threshold}")
    action = raw.get("action", "log")
    if action not in ACTIONS:
        raise ConfigError(f"{where}.action: {action!r} is not one of {', '.join(ACTIONS)}")
    then = raw.get("then", "continue")
    if then not in ("continue", "stop"):
        raise ConfigError(f"{where}.then: {then!r} is not one of continue, stop")
    min_std = _number(f"{where}.min_std", raw.get("min_std", 0.0))
    if min_std < 0:
        raise ConfigError(f"{where}.min_std: must be non-negative, got {min_std}")
    name = raw.get("name") or f"{monitor} {condition} {raw[condition]}"
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: expected a string, got {name!r}")
    return Rule(name=name, monitor=monitor, condition=condition, threshold=threshold, action=action,
                window=_integer(f"{where}.window", raw.get("window", 10), 1),
                min_history=_integer(f"{where}.min_history", raw.get("min_history", 3), 1),
                min_std=min_std, consecutive=_integer(f"{where}.consecutive", raw.get("consecutive", 1), 1),
                then=then)


def parse_rules(raw: list[Any]) -> list[Rule]:
    rules = [parse_rule(item, index) for index, item in enumerate(raw)]
    names = [r.name for r in rules]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"guard.rules[{index}].name: {name!r} is used by an earlier rule")
    return rules


def _past(rule: Rule, history: list[dict]) -> list[float]:
    values = [row.get(rule.monitor) for row in history]
    finite = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)]
    return finite[-rule.window:]


def _holds(rule: Rule, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    return value > rule.threshold if rule.condition == "above" else value < rule.threshold


def check(rule: Rule, signals: dict, history: list[dict]) -> Firing | None:
    """Whether `rule` fires on this iteration's `signals` given the signals of earlier iterations."""
    value = signals.get(rule.monitor)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    if rule.condition in ("above", "below"):
        recent = [row.get(rule.monitor) for row in history[len(history) - rule.consecutive + 1:]] \
            if rule.consecutive > 1 else []
        if len(recent) < rule.consecutive - 1 or not all(_holds(rule, v) for v in [*recent, value]):
            return None
        word = ">" if rule.condition == "above" else "<"
        run = f" for {rule.consecutive} iterations" if rule.consecutive > 1 else ""
        return Firing(rule, float(value), f"{rule.monitor} = {value:.4g} {word} {rule.threshold:g}{run}")
    past = _past(rule, history)
    if len(past) < rule.min_history:
        return None
    if rule.condition == "zscore":
        z = monitors.zscore(value, past, rule.min_std)
        if math.isnan(z) or abs(z) <= rule.threshold:
            return None
        return Firing(rule, float(value), f"{rule.monitor} = {value:.4g} is {z:+.1f} std from the mean of the "
                                          f"last {len(past)} iterations (limit {rule.threshold:g})")
    ratio = monitors.ratio_to_mean(value, past)
    if math.isnan(ratio) or ratio <= rule.threshold:
        return None
    return Firing(rule, float(value), f"{rule.monitor} = {value:.4g} is {ratio:.2f}x the mean of the last "
                                      f"{len(past)} iterations (limit {rule.threshold:g}x)")


def evaluate(rules: list[Rule], signals: dict, history: list[dict]) -> list[Firing]:
    """Every rule that fires, most severe action first."""
    firings = [f for f in (check(rule, signals, history) for rule in rules) if f is not None]
    return sorted(firings, key=lambda f: -SEVERITY[f.rule.action])
