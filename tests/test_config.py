import pytest

from spice.cli import build_parser
from spice.config import ConfigError, describe_options, dump_config, load_config


def test_defaults_are_the_paper_settings():
    config = load_config()
    assert config.reasoner.samples == 8
    assert config.run.documents_per_iteration == 128
    assert config.run.iterations == 640
    assert config.optim.lr == 1e-6
    assert config.loss.kl_coef == 0.0
    assert config.loss.invalid_penalty == -0.1


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  iterations: 3\nreasoner:\n  samples: 4\n")
    config = load_config(path, ["run.iterations=7", "loss.tis_cap=2", "challenger.formats=[mcq]",
                                "train.megatron.fp8=hybrid", "rollout.sglang.server_args={tp: 2}"])
    assert config.run.iterations == 7
    assert config.reasoner.samples == 4
    assert config.loss.tis_cap == 2.0
    assert config.challenger.formats == ["mcq"]
    assert config.train.megatron.fp8 == "hybrid"
    assert config.rollout.sglang.server_args == {"tp": 2}


@pytest.mark.parametrize("override, message", [
    ("run.iteratons=3", "unknown config key run.iteratons"),
    ("nope.x=1", "unknown config key nope"),
    ("run.iterations=three", "run.iterations: expected an integer"),
    ("run.iterations=2.5", "run.iterations: expected an integer"),
    ("challenger.constrained_decoding=maybe", "challenger.constrained_decoding: expected true or false"),
    ("loss.aggregation=mean", "loss.aggregation: 'mean' is not one of"),
    ("reasoner.samples=1", "reasoner.samples"),
    ("run.iterations=0", "run.iterations: must be at least 1"),
    ("challenger.formats=[essay]", "challenger.formats"),
    ("iterations", "not of the form key=value"),
    ("run.checkpoint_every=0", "run.checkpoint_every: must be at least 1"),
    ("run.keep_checkpoints=0", "run.keep_checkpoints: must be at least 1"),
    ("loss.normalizer=0", "loss.normalizer: must be > 0"),
    ("loss.normalizer=-512", "loss.normalizer: must be > 0"),
    ("optim.betas=[0.9]", "optim.betas: expected exactly two"),
    ("optim.betas=[0.9,0.99,0.999]", "optim.betas: expected exactly two"),
    ("optim.betas=[0.9,1.0]", r"optim.betas\[1\]: must be in \[0, 1\)"),
    ("optim.lr=0", "optim.lr: must be > 0"),
    ("optim.ppo_epochs=0", "optim.ppo_epochs: must be at least 1"),
    ("reasoner.temperature=0", "reasoner.temperature: must be > 0"),
    ("challenger.temperature=-1", "challenger.temperature: must be > 0"),
    ("challenger.top_p=0", r"challenger.top_p: must be in \(0, 1\]"),
    ("reasoner.top_p=1.01", "reasoner.top_p"),
    ("challenger.attempts_per_document=0", "challenger.attempts_per_document: must be at least 1"),
    ("challenger.max_attempts=2", "challenger.max_attempts: must be at least challenger.attempts_per_document"),
    ("challenger.attempt_selection=best", "challenger.attempt_selection: 'best' is not one of"),
    ("loss.clip_low=1", r"loss.clip_low: must be in \[0, 1\)"),
    ("corpus.limit=0", "corpus.limit"),
    ("eval.temperature=-0.5", "eval.temperature"),
])
def test_errors_name_the_key(override, message):
    if "\\" not in message:
        message = message.replace("[", r"\[")
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_ppo_epochs_only_with_the_torch_backend():
    assert load_config(None, ["optim.ppo_epochs=2"]).optim.ppo_epochs == 2
    with pytest.raises(ConfigError, match="optim.ppo_epochs: 2 epochs are implemented in the torch backend"):
        load_config(None, ["optim.ppo_epochs=2", "train.backend=megatron"])


def test_eval_may_be_greedy_but_training_may_not():
    assert load_config(None, ["eval.temperature=0"]).eval.temperature == 0.0


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_dump_round_trip(tmp_path):
    config = load_config(None, ["run.seed=5", "loss.normalizer=300"])
    dump_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_every_option_is_documented_in_help():
    rows = describe_options()
    keys = [key for key, _, _, _ in rows]
    assert "train.megatron.tensor_model_parallel_size" in keys and "rollout.sglang.weight_sync" in keys
    help_text = build_parser(["train"])._subparsers._group_actions[0].choices["train"].format_help()
    for key in keys:
        assert key in help_text


def test_constrained_decoding_defaults_on_only_for_the_embedded_model():
    from spice.config import constrained_decoding

    assert constrained_decoding(load_config()) is True
    assert constrained_decoding(load_config(None, ["model.path=/models/qwen"])) is False
    assert constrained_decoding(load_config(None, ["model.path=/m", "challenger.constrained_decoding=true"]))
    assert not constrained_decoding(load_config(None, ["challenger.constrained_decoding=false"]))
