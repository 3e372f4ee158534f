"""Hash-chained records: intact files verify, any changed byte or dropped row is named; signatures;
the head catches dropped last rows; a resume-style truncation re-anchors; no pickle is loaded."""

import json
import os
import pickle

import pytest
import torch

from spice.guard import records
from spice.guard.records import append_rows, chain_tail, reanchor, verify_file


def _write(run_dir, n=5, key=None, name="tasks.jsonl"):
    append_rows(run_dir, name, [{"iteration": i, "question": f"q{i} é", "x": 0.1 * i} for i in range(n)], key)
    return run_dir / name


def test_intact_chain_verifies_and_rows_read_back(tmp_path):
    path = _write(tmp_path)
    assert verify_file(path, None)[2] is None
    rows = records.read_rows(path)
    assert [r["iteration"] for r in rows] == list(range(5))
    assert chain_tail(path)[:2] == (5, rows[-1]["chain"]["hash"])
    append_rows(tmp_path, "tasks.jsonl", [{"iteration": 5}])
    assert verify_file(path, None)[:1] == (6,)


@pytest.mark.parametrize("row", [0, 2, 4])
def test_a_changed_byte_names_the_row(tmp_path, row):
    path = _write(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    lines[row] = lines[row].replace(f"q{row}", f"Q{row}")
    path.write_text("".join(lines))
    problem = verify_file(path, None)[2]
    assert problem.startswith(f"tasks.jsonl row {row + 1}:"), problem


def test_a_dropped_row_names_the_next_row(tmp_path):
    path = _write(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[3:]))
    assert verify_file(path, None)[2].startswith("tasks.jsonl row 3:")


def test_signed_rows_need_the_key(tmp_path):
    path = _write(tmp_path, key=b"secret")
    assert verify_file(path, b"secret")[2] is None
    assert "signature" in verify_file(path, b"other")[2]
    assert "SPICE_AUDIT_KEY" in verify_file(path, None)[2]
    unsigned = _write(tmp_path / "u")
    assert "row 1: signature" in verify_file(unsigned, b"secret")[2]


def test_unterminated_tail_is_dropped_before_appending(tmp_path, capsys):
    path = _write(tmp_path, n=2)
    with open(path, "a") as handle:
        handle.write('{"iteration": 9, "half')
    append_rows(tmp_path, "tasks.jsonl", [{"iteration": 2}])
    assert "unterminated" in capsys.readouterr().err
    assert verify_file(path, None)[2] is None and verify_file(path, None)[0] == 3


def test_truncation_to_a_checkpoint_size_keeps_the_chain(tmp_path):
    path = _write(tmp_path, n=3)
    size = path.stat().st_size
    append_rows(tmp_path, "tasks.jsonl", [{"iteration": 3}, {"iteration": 4}])
    with open(path, "r+b") as handle:
        handle.truncate(size)
    reanchor(tmp_path)
    head = json.loads((tmp_path / records.HEAD).read_text())["files"]["tasks.jsonl"]
    assert head["rows"] == 3
    append_rows(tmp_path, "tasks.jsonl", [{"iteration": 3}])
    assert verify_file(path, None)[:1] == (4,) and verify_file(path, None)[2] is None


def test_a_row_may_not_bring_its_own_link(tmp_path):
    with pytest.raises(ValueError, match="chain"):
        append_rows(tmp_path, "tasks.jsonl", [{"chain": 1}])


def test_content_hash_ignores_the_link(tmp_path):
    path = _write(tmp_path, n=1)
    row = records.read_rows(path)[0]
    assert records.content_hash(row) == records.content_hash({k: v for k, v in row.items() if k != "chain"})


def test_a_pickle_payload_in_a_checkpoint_is_refused(tmp_path):
    from spice.checkpoint import load_tensors_safely

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "optimizer.pt", "wb") as handle:
        pickle.dump({"state": Payload()}, handle, protocol=2)
    with pytest.raises(RuntimeError, match="optimizer.pt: refused to load"):
        load_tensors_safely(tmp_path / "optimizer.pt")
    assert not marker.exists()


def test_optimizer_state_loads_with_weights_only(tmp_path):
    from spice.checkpoint import load_tensors_safely

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(load_tensors_safely(tmp_path / "optimizer.pt"))
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_rng_state_round_trips_through_json_and_safetensors():
    import random

    import numpy as np

    from spice.checkpoint import rng_state, set_rng_state

    plain, tensors = rng_state()
    plain = json.loads(json.dumps(plain))
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(plain, tensors)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
