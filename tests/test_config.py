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
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, [override])


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
