"""`spice serve` answers SGLang's native API fields and refuses what SGLang 0.5.23 refuses (and, with
`--emulate`, what 0.5.20 and 0.5.3 do); run in-process on loopback (no startup cost)."""

from __future__ import annotations

import argparse
import contextlib
import threading

import pytest
import requests
import torch

from spice.rollout.weight_sync.tensor import serialize_safetensors
from spice.serve import StandIn, _Server, add_arguments

KEY = "k3y"
AUTH = {"Authorization": f"Bearer {KEY}"}


@contextlib.contextmanager
def _serve(model, *extra: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model-path", str(model), "--api-key", KEY, "--port", "0", "--device", "cpu",
                              *extra])
    app = StandIn(args)
    server = _Server(("127.0.0.1", 0), app, KEY)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", app
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(tiny_model):
    with _serve(tiny_model) as pair:
        yield pair


def _post(url, path, body, headers=AUTH):
    return requests.post(url + path, json=body, headers=headers, timeout=120)


def test_health_is_open_and_the_rest_needs_the_key(served):
    url, _ = served
    assert requests.get(url + "/health", timeout=30).status_code == 200
    assert requests.get(url + "/get_model_info", timeout=30).status_code == 401
    info = requests.get(url + "/get_model_info", headers=AUTH, timeout=30).json()
    assert info["is_generation"] is True and info["weight_version"] == "default"
    assert info["architectures"] == ["LlamaForCausalLM"]


def test_generate_fields_single_and_batch(served):
    url, app = served
    single = _post(url, "/generate", {"input_ids": [1, 2, 3], "return_logprob": True,
                                      "sampling_params": {"temperature": 0, "max_new_tokens": 5}}).json()
    assert isinstance(single, dict) and len(single["output_ids"]) == 5
    meta = single["meta_info"]
    assert meta["finish_reason"] == {"type": "length", "length": 5} and meta["completion_tokens"] == 5
    assert [t for _, t, _ in meta["output_token_logprobs"]] == single["output_ids"]
    # A batch of two prompts with n = 2 answers prompt-major: [p0 s0, p0 s1, p1 s0, p1 s1].
    batch = _post(url, "/generate", {"input_ids": [[1, 2, 3], [9, 8]],
                                     "sampling_params": {"n": 2, "temperature": 0, "max_new_tokens": 5}}).json()
    assert len(batch) == 4 and batch[0]["output_ids"] == batch[1]["output_ids"] == single["output_ids"]
    assert batch[2]["output_ids"] == batch[3]["output_ids"] and "output_token_logprobs" not in batch[0]["meta_info"]
    text = _post(url, "/generate", {"text": "Hello", "sampling_params": {"max_new_tokens": 2}}).json()
    assert text["meta_info"]["prompt_tokens"] == len(app.engine.tokenizer("Hello")["input_ids"])


@pytest.mark.parametrize("body, needle", [
    ({"input_ids": [1], "sampling_params": {"stop": ["x"]}}, "['stop'] are not supported"),
    ({"sampling_params": {}}, "give input_ids or text"),
    ({"input_ids": [[]]}, "input_ids must be"),
    ({"input_ids": [1], "sampling_params": {"temperature": "hot"}}, "sampling_params"),
])
def test_bad_generate_requests_are_400_naming_the_problem(served, body, needle):
    url, _ = served
    response = _post(url, "/generate", body)
    assert response.status_code == 400 and needle in response.json()["error"]


def test_json_schema_is_applied(served):
    url, _ = served
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}'
    out = _post(url, "/generate", {"input_ids": [1, 2], "sampling_params": {
        "json_schema": schema, "max_new_tokens": 24, "temperature": 1.0}}).json()
    assert out["text"].lstrip().startswith("{")


def test_regex_is_applied_and_two_grammars_are_refused(served):
    """SGLang compiles `regex` with xgrammar and refuses json_schema and regex together (SamplingParams.verify)."""
    url, _ = served
    out = _post(url, "/generate", {"input_ids": [1, 2], "sampling_params": {
        "regex": "(yes|no)", "max_new_tokens": 8, "temperature": 1.0}}).json()
    assert out["text"] in ("yes", "no")
    both = _post(url, "/generate", {"input_ids": [1, 2], "sampling_params": {
        "regex": "(yes|no)", "json_schema": '{"type": "object"}', "max_new_tokens": 8}})
    assert both.status_code == 400 and "Only one of json_schema, regex" in both.json()["error"]


def test_tensor_update_sets_version_and_weights(served):
    url, app = served
    name, param = next(iter(app.engine.model.named_parameters()))
    new = torch.full_like(param, 0.125)
    payload = {"serialized_named_tensors": [serialize_safetensors([(name, new)])], "load_format": "spice_safetensors"}
    outside = _post(url, "/update_weights_from_tensor", payload)
    assert outside.status_code == 400 and "between begin_weight_update() and end_weight_update()" in \
        outside.json()["message"]
    assert _post(url, "/end_weight_update", {}).status_code == 400  # none open
    assert _post(url, "/begin_weight_update", {}).json() == {"success": True, "message": "Success"}
    assert "already open" in _post(url, "/begin_weight_update", {}).json()["message"]
    bad = _post(url, "/update_weights_from_tensor", {"serialized_named_tensors": ["eA=="], "load_format": None})
    assert bad.status_code == 400 and "spice_safetensors" in bad.json()["message"]
    unknown = _post(url, "/update_weights_from_tensor", {
        "serialized_named_tensors": [serialize_safetensors([("no.such.weight", new)])],
        "load_format": "spice_safetensors"})
    assert unknown.status_code == 400 and "no.such.weight" in unknown.json()["message"]
    ok = _post(url, "/update_weights_from_tensor", {
        "serialized_named_tensors": [serialize_safetensors([(name, new)])], "load_format": "spice_safetensors",
        "weight_version": "7"})
    assert ok.json()["success"] is True
    assert _post(url, "/end_weight_update", {}).status_code == 200 and not app.session_open
    assert torch.equal(dict(app.engine.model.named_parameters())[name], new)
    out = _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}}).json()
    assert out["meta_info"]["weight_version"] == "7" and app.engine.weight_version == 7


def test_disk_update_and_memory_release(served, tmp_path):
    url, app = served
    missing = _post(url, "/update_weights_from_disk", {"model_path": str(tmp_path / "nope")})
    assert missing.status_code == 400 and "no .safetensors" in missing.json()["message"]
    released = _post(url, "/release_memory_occupation", {})
    assert released.status_code == 200 and released.json() is None  # SGLang's answer: null
    assert app.released == {"weights", "kv_cache", "cuda_graph"}  # no tags: all of 0.5.23's types
    refused = _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}})
    assert refused.status_code == 400 and "released" in refused.json()["error"]
    assert _post(url, "/resume_memory_occupation", {"tags": ["weights"]}).status_code == 200
    again = _post(url, "/resume_memory_occupation", {"tags": ["weights"]})  # not released any more
    assert again.status_code == 400 and again.json() == {"error": {"message": "'weights'"}}
    assert _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}}).status_code == 400
    _post(url, "/resume_memory_occupation", {"tags": ["kv_cache"]})
    assert _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}}).status_code == 400
    _post(url, "/resume_memory_occupation", {"tags": ["cuda_graph"]})
    assert _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}}).status_code == 200
    assert _post(url, "/flush_cache", {}).status_code == 200
    assert requests.get(url + "/nope", headers=AUTH, timeout=30).status_code == 404


def test_flush_cache_is_refused_while_a_request_runs(served):
    url, app = served
    with app.lock:  # hold the forward pass: the request below stays running
        thread = threading.Thread(target=_post, args=(url, "/generate", {
            "input_ids": [1], "sampling_params": {"max_new_tokens": 1}}))
        thread.start()
        while not app.running:
            thread.join(0.01)
        busy = _post(url, "/flush_cache", {})
        assert busy.status_code == 400 and "failed" in busy.text.lower()
    thread.join(60)
    assert _post(url, "/flush_cache", {}).status_code == 200


def test_health_generates_a_token_unless_switched_off(tiny_model, monkeypatch):
    with _serve(tiny_model) as (url, app):
        assert requests.get(url + "/health", timeout=60).status_code == 200 and app.health_generations == 1
        _post(url, "/release_memory_occupation", {})
        assert requests.get(url + "/health", timeout=60).status_code == 503  # a forward pass on freed memory
    monkeypatch.setenv("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION", "0")
    with _serve(tiny_model) as (url, app):
        _post(url, "/release_memory_occupation", {})
        assert requests.get(url + "/health", timeout=60).status_code == 200 and app.health_generations == 0
        assert requests.get(url + "/health_generate", timeout=60).status_code == 503  # always generates
    with _serve(tiny_model, "--emulate", "0.5.3") as (url, app):  # no switch before 0.5.6
        assert requests.get(url + "/health", timeout=60).status_code == 200 and app.health_generations == 1


@pytest.mark.parametrize("release", ["0.5.20", "0.5.3"])
def test_older_releases_have_no_sessions(tiny_model, release):
    with _serve(tiny_model, "--emulate", release) as (url, app):
        assert _post(url, "/begin_weight_update", {}).status_code == 404
        name, param = next(iter(app.engine.model.named_parameters()))
        update = _post(url, "/update_weights_from_tensor", {
            "serialized_named_tensors": [serialize_safetensors([(name, param.detach() + 1)])],
            "load_format": "spice_safetensors", "weight_version": "3"})
        assert update.status_code == 200 and app.weight_version == "3"
        info = requests.get(url + "/model_info", headers=AUTH, timeout=30)
        assert info.status_code == (404 if release == "0.5.3" else 200)
        assert requests.get(url + "/get_server_info", headers=AUTH, timeout=30).json()["version"] == release
        _post(url, "/release_memory_occupation", {})
        expected = {"weights", "kv_cache"} if release == "0.5.3" else {"weights", "kv_cache", "cuda_graph"}
        assert app.released == expected
        # named tags are kept as given, so resuming ["kv_cache", "cuda_graph"] works on 0.5.3 too
        _post(url, "/resume_memory_occupation", {})
        _post(url, "/release_memory_occupation", {"tags": ["weights", "kv_cache", "cuda_graph"]})
        for tags in (["weights"], ["kv_cache", "cuda_graph"]):
            assert _post(url, "/resume_memory_occupation", {"tags": tags}).status_code == 200
        assert not app.released
