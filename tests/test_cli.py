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


def _one_error_line(capsys, argv):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("spice: ")
    return lines[0]


def test_unusable_config_files_are_one_line_naming_the_file(capsys, tmp_path):
    assert "missing.yaml does not exist" in _one_error_line(capsys, ["train", "--config",
                                                                     str(tmp_path / "missing.yaml")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("run:\n  iterations: 3\n  seed: [unclosed\n")
    line = _one_error_line(capsys, ["train", "--config", str(broken)])
    assert "broken.yaml line" in line and "not valid YAML" in line
    listed = tmp_path / "list.yaml"
    listed.write_text("- run\n- model\n")
    assert "list.yaml: expected a mapping" in _one_error_line(capsys, ["train", "--config", str(listed)])
    assert "is a folder" in _one_error_line(capsys, ["train", "--config", str(tmp_path)])


def test_out_of_range_values_are_one_line_naming_the_key(capsys):
    assert "run.checkpoint_every: must be at least 1, got 0" in _one_error_line(
        capsys, ["train", "run.checkpoint_every=0"])
    assert "optim.betas" in _one_error_line(capsys, ["train", "optim.betas=[0.9]"])


def test_missing_model_and_corpus_are_one_line_before_any_model_loads(capsys, tmp_path, tiny_model):
    run = f"run.dir={tmp_path / 'run'}"
    line = _one_error_line(capsys, ["train", run, f"model.path={tmp_path / 'no_model_here'}"])
    assert "no_model_here" in line and "does not exist" in line
    line = _one_error_line(capsys, ["train", run, f"model.path={tiny_model}", f"corpus.path={tmp_path / 'nope.jsonl'}"])
    assert "nope.jsonl" in line and "does not exist" in line
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    line = _one_error_line(capsys, ["train", run, f"model.path={tiny_model}", f"corpus.path={empty}"])
    assert "empty.jsonl" in line and "no usable documents" in line
    unusable = tmp_path / "wrong_field.jsonl"
    unusable.write_text('{"body": "a document under another field"}\n')
    line = _one_error_line(capsys, ["train", run, f"model.path={tiny_model}", f"corpus.path={unusable}"])
    assert "wrong_field.jsonl" in line and "'text'" in line
    assert "is not a run folder" in _one_error_line(capsys, ["train", "--resume", str(tmp_path / "nothing")])


def test_internal_errors_keep_their_traceback(monkeypatch):
    import spice.run

    def broken(config, resume=False):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(spice.run, "train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "run.iterations=1"])
