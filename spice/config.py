"""One typed configuration tree, loaded from YAML with `key=value` overrides.

Unknown keys and values of the wrong type are errors that name the key. Sections that configure
Megatron-Core or SGLang use those libraries' own option names.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spice.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration key or value is wrong; the message names it."""


@dataclass
class ModelConfig:
    path: str = "embedded"  # a local Hugging Face folder, or "embedded" (SmolLM2-135M-Instruct)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False  # passed to transformers' from_pretrained


@dataclass
class CorpusConfig:
    path: str = "embedded"  # jsonl / parquet file, folder of .txt/.md files, or "embedded"
    text_field: str = "text"  # jsonl/parquet field holding the document text
    max_segment_tokens: int = 512  # documents are cut into pieces of at most this many tokens
    limit: int | None = None  # read at most this many documents


@dataclass
class ChallengerConfig:
    attempts_per_document: int = 4  # challenger group per document: samples per round and trained per document
    max_attempts: int = 64  # paper selection: rounds of attempts_per_document until a valid task (paper: 1024)
    attempt_selection: str = "paper"  # paper (group keeps the valid:invalid ratio) | all_invalid (one round)
    select_format: bool = True  # ask the model for MCQ vs free form first (paper); else pick at random
    prompt_style: str = "paper"  # paper | compact (short prompts for small models on a CPU)
    grounding: str = "fuzzy"  # exact | fuzzy | off: how the task's quote must match the document (spice.tasks)
    constrained_decoding: bool | None = None  # decode task JSON under its schema; None: on for the embedded model
    quote_from_document: bool = True  # constrained: the quote is one of the document's sentences (grounded)
    # MCQ options shown to the reasoner in a seeded random order, the gold letter moved with its option:
    # letter habits of the two roles (golds leaning to A, a reasoner saying A) then earn 1 in 4, no more
    shuffle_options: bool = True
    max_new_tokens: int = 512  # tokens per challenger task
    temperature: float = 1.0  # paper: 1.0 for both roles
    top_p: float = 1.0
    formats: list[str] = field(default_factory=lambda: ["mcq", "free_form"])
    # tools (AgentInstruct; spice.checks, spice.refine, docs/sandbox.md)
    check: str | bool = "off"  # off | optional | required_numeric: a program recomputes the gold answer (sandbox)
    check_sandbox: str = "seccomp"  # seccomp | bwrap | rlimits (weaker: no seccomp; only if chosen explicitly)
    check_timeout: float = 2.0  # wall-clock seconds per check program (CPU seconds: its ceiling)
    refine_rounds: int = 0  # suggester/editor rounds that make each kept task harder, re-validated each round


@dataclass
class ReasonerConfig:
    samples: int = 8  # G: answers per task
    max_new_tokens: int = 512  # tokens per reasoner answer
    temperature: float = 1.0
    top_p: float = 1.0
    # Constrain each reply (regex, spice.schemas.answer_regex) to a short reasoning without braces or
    # backslashes that ends in one \boxed{...}: a letter A-D for multiple choice. For small models that
    # rarely state a final answer in a form the verifier accepts; it changes the format, never the verdict.
    constrained_answer: bool = False


@dataclass
class LossConfig:
    clip_low: float = 0.2  # ratio clipping against the first pass's logprobs; acts only with optim.ppo_epochs > 1
    clip_high: float = 0.2  # > clip_low gives "clip-higher"
    aggregation: str = "token_sum"  # token_sum (Dr. GRPO, / constant) | token_mean | seq_mean
    normalizer: float | None = None  # token_sum's constant; None: the longer max_new_tokens of the roles
    tis_cap: float | None = None  # truncated importance sampling against rollout logprobs
    kl_coef: float = 0.0  # k3 KL coefficient; must be 0 in training (no reference policy is kept; paper: 0)
    std_normalize: bool = False  # divide advantages by the group std (GRPO); off for Dr. GRPO
    invalid_penalty: float = -0.1  # challenger reward for an invalid task
    # auto: the reference loss everywhere until the fused Triton kernel has passed its GPU tests on this
    # project's benchmark machine (it has not run on a GPU yet); fused: the kernel (CUDA only)
    implementation: str = "auto"  # auto | reference | fused; auto = reference until the kernel passes on GPU


@dataclass
class OptimConfig:
    lr: float = 1e-6  # AdamW, constant (paper: 1e-6)
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0  # max gradient norm
    micro_batch_size: int = 4  # sequences per forward/backward; gradients accumulate over the batch
    gradient_checkpointing: bool = False  # recompute activations in backward (torch backend)
    ppo_epochs: int = 1  # optimizer steps per batch; later ones clip against the first pass's logprobs (torch)


@dataclass
class MegatronConfig:
    """Megatron-Core options under Megatron's own names."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = True
    bf16: bool = True
    fp8: str | None = None  # None | e4m3 | hybrid (Transformer Engine)
    fp8_recipe: str = "delayed"  # delayed | tensorwise | mxfp8 | blockwise
    recompute_granularity: str | None = None  # None | full | selective
    recompute_method: str | None = None  # uniform | block
    recompute_num_layers: int | None = None
    transformer_impl: str = "auto"  # auto | transformer_engine | local
    extra: dict[str, Any] = field(default_factory=dict)  # more TransformerConfig fields, passed through


@dataclass
class TrainConfig:
    backend: str = "torch"  # torch (HF model, DDP under torchrun) | megatron (TP/PP, FP8)
    megatron: MegatronConfig = field(default_factory=MegatronConfig)
    distributed_timeout_minutes: float = 30.0  # compute process groups (NCCL/gloo) and megatron's groups
    control_timeout_hours: float = 12.0  # gloo group of the loop's broadcasts: ranks > 0 wait there during rollouts


@dataclass
class SGLangConfig:
    """SGLang servers; `server_args` are passed to `sglang.launch_server` as `--key value`."""

    urls: list[str] = field(default_factory=list)  # use running servers instead of launching
    num_servers: int = 1
    server_args: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    base_port: int = 30000
    router: bool = True  # put sglang-router in front when num_servers > 1
    router_port: int = 29000
    api_key: str | None = None
    weight_sync: str = "disk"  # disk | tensor (colocated) | distributed (NCCL)
    bucket_megabytes: int = 512
    max_concurrency: int = 256
    request_timeout: float = 600.0
    max_retries: int = 3
    launch_command: str = "python -m sglang.launch_server"  # `spice serve` for the CPU stand-in
    deterministic_inference: bool = False  # launch with --enable-deterministic-inference: sampling_seed is honoured only then


@dataclass
class RolloutConfig:
    engine: str = "hf"  # hf (in-process transformers) | sglang
    batch_size: int = 16  # hf: sequences generated together
    sglang: SGLangConfig = field(default_factory=SGLangConfig)


@dataclass
class EvalConfig:
    every: int = 0  # evaluate every N iterations (0: never during training)
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k", "math500", "arc_challenge"])
    limit: int | None = 50  # items per benchmark
    samples: int = 1  # answers per item (mean score); 1 with temperature 0 is greedy
    temperature: float = 0.0
    max_new_tokens: int = 512


def default_guard_rules() -> list[dict[str, Any]]:
    """Guard rules that only log (a run is never stopped or rolled back unless the config asks)."""
    return [
        {"name": "valid-task collapse", "monitor": "valid_task_rate", "below": 0.02, "consecutive": 3},
        {"name": "tasks too easy", "monitor": "reasoner_accuracy", "above": 0.95, "consecutive": 3},
        {"name": "tasks unanswerable", "monitor": "reasoner_accuracy", "below": 0.02, "consecutive": 3},
        {"name": "answer leaks", "monitor": "answer_leak_rate", "above": 0.2},
        {"name": "duplicate questions", "monitor": "duplicate_rate", "above": 0.5},
        {"name": "challenger length explosion", "monitor": "challenger_length_mean", "ratio": 3.0},
        {"name": "reasoner length explosion", "monitor": "reasoner_length_mean", "ratio": 3.0},
        {"name": "reward spike", "monitor": "challenger_reward_mean", "zscore": 6.0, "min_std": 0.05},
        {"name": "gradient spike", "monitor": "grad_norm", "zscore": 6.0, "min_std": 0.1},
        {"name": "policy drift", "monitor": "policy_kl", "above": 20.0},
        {"name": "benchmark regression", "monitor": "eval_regression", "above": 0.05},
        {"name": "wrong gold answers", "monitor": "evaluator_disagreement", "above": 0.5},
    ]


@dataclass
class GuardConfig:
    """Oversight (spice/guard): monitors, the policy's rules, signed records, gated promotion."""

    rules: list[dict[str, Any]] = field(default_factory=default_guard_rules)  # monitor condition -> action (log | pause | stop | rollback); see spice/guard/policy.py
    max_rollbacks: int = 3  # rollbacks in one run; one more firing stops the run instead
    pause_poll_seconds: float = 5.0  # how often a paused run looks for RUN_DIR/APPROVE (or STOP)
    duplicate_threshold: float = 0.8  # MinHash Jaccard of word 3-shingles at which questions are near-duplicates
    duplicate_window: int = 3  # earlier iterations whose questions count for near-duplicates
    drift_every: int = 10  # iterations between KL checks against the initial model on a probe set (0: off)
    drift_probes: int = 8  # probe prompts (corpus documents) for the KL check
    drift_probe_tokens: int = 32  # tokens the initial model samples per probe prompt
    evaluator: str | None = None  # independent evaluator: null (off) | initial (frozen base model) | model path
    evaluator_samples: int = 8  # tasks per iteration it re-answers with the document in view
    evaluator_max_new_tokens: int = 256
    promote_min_delta: dict[str, float] = field(default_factory=lambda: {"mean": 0.0})  # spice promote: score minus base score per benchmark (or mean) must reach this
    tensorboard: bool = True  # TensorBoard event files in RUN_DIR/tensorboard (needs tensorboard)
    wandb: str | None = None  # W&B project to log metrics to (needs wandb installed)
    mlflow: str | None = None  # MLflow experiment to log metrics to (needs mlflow installed)


@dataclass
class RunConfig:
    dir: str = "runs/spice"  # run folder: config.yaml, metrics.jsonl, tasks.jsonl, checkpoints/
    iterations: int = 640  # SPICE iterations (paper: 640)
    documents_per_iteration: int = 128  # documents sampled per iteration (paper: 128)
    seed: int = 0  # seeds document sampling and generation; a resumed run repeats them
    checkpoint_every: int = 1  # iterations between checkpoints (a stop or the end always saves)
    keep_checkpoints: int = 2  # most recent checkpoints kept


@dataclass
class SpiceConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    challenger: ChallengerConfig = field(default_factory=ChallengerConfig)
    reasoner: ReasonerConfig = field(default_factory=ReasonerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)  # oversight: spice/guard


CHOICES: dict[str, tuple[str, ...]] = {
    "model.dtype": ("float32", "bfloat16", "float16"),
    "challenger.prompt_style": ("paper", "compact"),
    "challenger.grounding": ("exact", "fuzzy", "off"),
    "challenger.attempt_selection": ("paper", "all_invalid"),
    "challenger.check_sandbox": ("seccomp", "bwrap", "rlimits"),
    "loss.aggregation": ("token_sum", "token_mean", "seq_mean"),
    "loss.implementation": ("auto", "reference", "fused"),
    "train.backend": ("torch", "megatron"),
    "train.megatron.transformer_impl": ("auto", "transformer_engine", "local"),
    "train.megatron.fp8": ("e4m3", "hybrid"),  # megatron-core 0.13-0.16 TransformerConfig.fp8
    "train.megatron.fp8_recipe": ("delayed", "tensorwise", "mxfp8", "blockwise"),  # megatron.core.enums.Fp8Recipe
    "train.megatron.recompute_granularity": ("full", "selective"),
    "train.megatron.recompute_method": ("uniform", "block"),
    "rollout.engine": ("hf", "sglang"),
    "rollout.sglang.weight_sync": ("disk", "tensor", "distributed"),
}


def _check_value(key: str, value: Any, annotation: Any) -> Any:
    """Return `value` converted to `annotation`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(key, value, option)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_value(f"{key}[{i}]", item, item_type) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name, raw in data.items():
        key = f"{prefix}.{name}" if prefix else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            values[name] = _build(annotation, raw or {}, key)
        else:
            value = _check_value(key, raw, annotation)
            if key in CHOICES and value is not None and value not in CHOICES[key]:
                raise ConfigError(f"{key}: {value!r} is not one of {', '.join(CHOICES[key])}")
            values[name] = value
    return cls(**values)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw != "" else ""


def _set_path(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part} is not a section")
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SpiceConfig:
    """Read YAML at `path` (or the defaults) and apply `key=value` overrides, validating all."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for text in overrides:
        key, value = _parse_override(text)
        _set_path(data, key, value)
    config = _build(SpiceConfig, data, "")
    validate(config)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file; ConfigError naming the file (and line) if it is unusable."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start})") from error
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(error.problem or error.context or "").split())
        raise ConfigError(f"config file {path}{where}: not valid YAML ({problem})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path}: not valid YAML ({' '.join(str(error).split())})") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections (run:, model:, ...), "
                          f"got a {type(data).__name__}")
    return data


def _check_range(key: str, value: float | None, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    """ConfigError naming `key` unless `value` lies in the interval (None passes when `optional`)."""
    if value is None and optional:
        return
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        if high is None:
            raise ConfigError(f"{key}: must be {'>' if low_open else '>='} {low:g}, got {value}")
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{key}: must be in {interval}, got {value}")


def _check_ranges(config: SpiceConfig) -> None:
    """Every numeric option inside its meaningful range, checked at load time before any model loads."""
    run, challenger, reasoner, loss, optim = (config.run, config.challenger, config.reasoner, config.loss,
                                              config.optim)
    at_least_one = {
        "run.checkpoint_every": run.checkpoint_every,
        "run.keep_checkpoints": run.keep_checkpoints,
        "optim.ppo_epochs": optim.ppo_epochs,
        "rollout.batch_size": config.rollout.batch_size,
        "eval.samples": config.eval.samples,
        "eval.max_new_tokens": config.eval.max_new_tokens,
        "train.megatron.tensor_model_parallel_size": config.train.megatron.tensor_model_parallel_size,
        "train.megatron.pipeline_model_parallel_size": config.train.megatron.pipeline_model_parallel_size,
        "rollout.sglang.num_servers": config.rollout.sglang.num_servers,
        "rollout.sglang.bucket_megabytes": config.rollout.sglang.bucket_megabytes,
        "rollout.sglang.max_concurrency": config.rollout.sglang.max_concurrency,
    }
    for key, value in at_least_one.items():
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    for key, value in (("corpus.limit", config.corpus.limit), ("eval.limit", config.eval.limit)):
        if value is not None and value < 1:
            raise ConfigError(f"{key}: must be at least 1 or null (no limit), got {value}")
    if config.eval.every < 0:
        raise ConfigError(f"eval.every: must be 0 (never) or more, got {config.eval.every}")
    if challenger.max_attempts < challenger.attempts_per_document:
        raise ConfigError(f"challenger.max_attempts: must be at least challenger.attempts_per_document "
                          f"({challenger.attempts_per_document}), got {challenger.max_attempts}")
    # sampling of the trained roles: temperature 0 would silently mean greedy (all G answers identical)
    for role, cfg in (("challenger", challenger), ("reasoner", reasoner)):
        _check_range(f"{role}.temperature", cfg.temperature, 0.0, low_open=True)
        _check_range(f"{role}.top_p", cfg.top_p, 0.0, 1.0, low_open=True)
    _check_range("eval.temperature", config.eval.temperature, 0.0)  # 0 is greedy, as benchmarks use
    _check_range("loss.normalizer", loss.normalizer, 0.0, low_open=True, optional=True)
    _check_range("loss.clip_low", loss.clip_low, 0.0, 1.0, high_open=True)
    _check_range("loss.clip_high", loss.clip_high, 0.0)
    _check_range("optim.lr", optim.lr, 0.0, low_open=True)
    _check_range("optim.eps", optim.eps, 0.0, low_open=True)
    _check_range("optim.weight_decay", optim.weight_decay, 0.0)
    _check_range("optim.grad_clip", optim.grad_clip, 0.0, low_open=True)
    if len(optim.betas) != 2:
        raise ConfigError(f"optim.betas: expected exactly two numbers [beta1, beta2], got {optim.betas}")
    for i, beta in enumerate(optim.betas):
        _check_range(f"optim.betas[{i}]", beta, 0.0, 1.0, high_open=True)
    _check_range("rollout.sglang.request_timeout", config.rollout.sglang.request_timeout, 0.0, low_open=True)
    if config.rollout.sglang.max_retries < 0:
        raise ConfigError(f"rollout.sglang.max_retries: must be 0 or more, got {config.rollout.sglang.max_retries}")
    if optim.ppo_epochs > 1 and config.train.backend != "torch":
        raise ConfigError(f"optim.ppo_epochs: {optim.ppo_epochs} epochs are implemented in the torch backend "
                          f"only; train.backend={config.train.backend} takes optim.ppo_epochs=1")


def _check_guard(guard: GuardConfig) -> None:
    """The guard's rules parse (errors name guard.rules[i].key) and its numbers are in range."""
    from spice.guard.policy import parse_rules

    parse_rules(guard.rules)
    for key, value in (("guard.duplicate_window", guard.duplicate_window), ("guard.drift_probes", guard.drift_probes),
                       ("guard.drift_probe_tokens", guard.drift_probe_tokens),
                       ("guard.evaluator_samples", guard.evaluator_samples),
                       ("guard.evaluator_max_new_tokens", guard.evaluator_max_new_tokens)):
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    for key, value in (("guard.max_rollbacks", guard.max_rollbacks), ("guard.drift_every", guard.drift_every)):
        if value < 0:
            raise ConfigError(f"{key}: must be 0 or more, got {value}")
    _check_range("guard.pause_poll_seconds", guard.pause_poll_seconds, 0.0, low_open=True)
    _check_range("guard.duplicate_threshold", guard.duplicate_threshold, 0.0, 1.0, low_open=True)
    for name, value in guard.promote_min_delta.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"guard.promote_min_delta.{name}: expected a number, got {value!r}")
    import importlib.util

    for key, module, asked in (("guard.wandb", "wandb", guard.wandb), ("guard.mlflow", "mlflow", guard.mlflow)):
        if asked and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key}: {asked!r} asks for {module}, which is not installed (pip install {module})")


def _check_tools(challenger: ChallengerConfig) -> None:
    """The check mode is known (YAML reads a bare `off` as false), its limits are in range and its
    sandbox can run on this machine."""
    if challenger.check is False:
        challenger.check = "off"
    if challenger.check not in ("off", "optional", "required_numeric"):
        raise ConfigError(f"challenger.check: {challenger.check!r} is not one of off, optional, required_numeric")
    _check_range("challenger.check_timeout", challenger.check_timeout, 0.0, 60.0, low_open=True)
    _check_range("challenger.refine_rounds", challenger.refine_rounds, 0, 8)
    if challenger.check != "off":
        from spice.sandbox import SandboxError, check_mode

        try:
            check_mode(challenger.check_sandbox)
        except SandboxError as error:
            raise ConfigError(f"challenger.check_sandbox: {error}") from error


def _check_cluster(config: SpiceConfig) -> None:
    """Process-group timeouts in range, and megatron options spice cannot honour refused by name."""
    _check_range("train.distributed_timeout_minutes", config.train.distributed_timeout_minutes, 0.0, low_open=True)
    _check_range("train.control_timeout_hours", config.train.control_timeout_hours, 0.0, low_open=True)
    extra = config.train.megatron.extra
    if extra.get("fp8_param"):
        raise ConfigError("train.megatron.extra.fp8_param: FP8 parameters (TE Float8 tensors) are not supported: "
                          "the HF weight load and export copy plain tensors; leave it false")
    if extra.get("fp8_param_gather"):
        raise ConfigError("train.megatron.extra.fp8_param_gather: needs fp8_param, which is not supported")
    for key in ("fp8", "fp8_recipe", "sequence_parallel", "tensor_model_parallel_size",
                "pipeline_model_parallel_size", "distributed_timeout_minutes"):
        if key in extra:
            raise ConfigError(f"train.megatron.extra.{key}: set it as train.megatron.{key} "
                              "(spice reads it there for padding and process groups)")


def validate(config: SpiceConfig) -> None:
    """Cross-field checks that a type alone cannot express."""
    _check_ranges(config)
    _check_cluster(config)
    _check_guard(config.guard)
    _check_tools(config.challenger)
    positive = {
        "run.iterations": config.run.iterations,
        "run.documents_per_iteration": config.run.documents_per_iteration,
        "challenger.attempts_per_document": config.challenger.attempts_per_document,
        "reasoner.samples": config.reasoner.samples,
        "optim.micro_batch_size": config.optim.micro_batch_size,
        "corpus.max_segment_tokens": config.corpus.max_segment_tokens,
        "challenger.max_new_tokens": config.challenger.max_new_tokens,
        "reasoner.max_new_tokens": config.reasoner.max_new_tokens,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    if config.reasoner.samples < 2:
        raise ConfigError("reasoner.samples: the challenger reward needs at least 2 answers per task")
    for name in config.challenger.formats:
        if name not in ("mcq", "free_form"):
            raise ConfigError(f"challenger.formats: {name!r} is not one of mcq, free_form")
    if not config.challenger.formats:
        raise ConfigError("challenger.formats: needs at least one format")
    if config.loss.kl_coef != 0.0:
        raise ConfigError("loss.kl_coef: the training backends keep no reference policy, so KL is not "
                          "available in training (the paper uses none); the loss functions support it")
    if config.loss.tis_cap is not None and config.loss.tis_cap <= 0:
        raise ConfigError(f"loss.tis_cap: must be positive, got {config.loss.tis_cap}")


def constrained_decoding(config: SpiceConfig) -> bool:
    """Whether the challenger decodes under its JSON schema: as configured, or by default only for the
    small embedded model (the paper leaves format validity to the -0.1 penalty)."""
    if config.challenger.constrained_decoding is None:
        return config.model.path == "embedded"
    return config.challenger.constrained_decoding


def to_dict(config: SpiceConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_config(config: SpiceConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _field_comments(cls: type) -> dict[str, str]:
    """The `# comment` after each field in the class source: the documentation `--help` shows."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+): [^#]*#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def describe_options(cls: type = SpiceConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, comment) for every leaf option: what `spice train --help` prints."""
    rows = []
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            rows.extend(describe_options(annotation, key + "."))
        else:
            type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            rows.append((key, type_name, getattr(default, f.name), comments.get(f.name, "")))
    return rows
