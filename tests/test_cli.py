import pytest

from spice.cli import BENCHMARKS, COMMANDS, main


@pytest.mark.parametrize("argv", [["train"], *([name] for name in COMMANDS), *(["bench", b] for b in BENCHMARKS)])
def test_every_subcommand_has_a_working_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spice " + " ".join(argv))
    assert "unavailable" not in out


def test_config_errors_are_reported_not_raised(capsys):
    assert main(["train", "run.iteratons=3"]) == 2
    assert "unknown config key run.iteratons" in capsys.readouterr().err
