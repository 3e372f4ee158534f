"""`spice serve` answers SGLang's native API fields; run in-process on loopback (no startup cost)."""

from __future__ import annotations

import argparse
import threading

import pytest
import requests
import torch

from spice.rollout.weight_sync.tensor import serialize_safetensors
from spice.serve import StandIn, _Server, add_arguments

KEY = "k3y"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tiny_model):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model-path", str(tiny_model), "--api-key", KEY, "--port", "0",
                              "--device", "cpu"])
    app = StandIn(args)
    server = _Server(("127.0.0.1", 0), app, KEY)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", app
    server.shutdown()
    server.server_close()


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


def test_tensor_update_sets_version_and_weights(served):
    url, app = served
    name, param = next(iter(app.engine.model.named_parameters()))
    new = torch.full_like(param, 0.125)
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
    assert torch.equal(dict(app.engine.model.named_parameters())[name], new)
    out = _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}}).json()
    assert out["meta_info"]["weight_version"] == "7" and app.engine.weight_version == 7


def test_disk_update_and_memory_release(served, tmp_path):
    url, app = served
    missing = _post(url, "/update_weights_from_disk", {"model_path": str(tmp_path / "nope")})
    assert missing.status_code == 400 and "no .safetensors" in missing.json()["message"]
    assert _post(url, "/release_memory_occupation", {}).json()["success"]
    refused = _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}})
    assert refused.status_code == 400 and "released" in refused.json()["error"]
    assert _post(url, "/resume_memory_occupation", {"tags": ["weights"]}).status_code == 200
    assert _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}}).status_code == 400
    _post(url, "/resume_memory_occupation", {"tags": ["kv_cache"]})
    assert _post(url, "/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}}).status_code == 200
    assert _post(url, "/flush_cache", {}).status_code == 200
    assert requests.get(url + "/nope", headers=AUTH, timeout=30).status_code == 404
