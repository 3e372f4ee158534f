"""SGLang engine pieces that need no server: flags, request payloads, response parsing, bucketing,
the tensor payload formats, and clear errors from a fake server that misbehaves."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from spice.config import SGLangConfig
from spice.rollout.base import SamplingParams, per_prompt
from spice.rollout.sglang import (
    SGLangRequestError,
    SGLangRolloutEngine,
    _Request,
    _Transient,
    parse_generate_response,
    sampling_payloads,
)
from spice.rollout.sglang_servers import ServerLaunchError, ServerPool, server_flags
from spice.rollout.weight_sync.base import buckets
from spice.rollout.weight_sync.tensor import (
    deserialize_safetensors,
    serialize_cuda_ipc,
    serialize_safetensors,
)


def test_server_flags_use_sglang_names():
    flags = server_flags({"tp_size": 2, "enable_memory_saver": True, "disable_radix_cache": False,
                          "mem_fraction_static": 0.7, "cuda_graph_bs": [1, 2], "json_model_override_args": {"a": 1},
                          "chunked_prefill_size": None})
    assert flags == ["--tp-size", "2", "--enable-memory-saver", "--mem-fraction-static", "0.7",
                     "--cuda-graph-bs", "1", "2", "--json-model-override-args", '{"a": 1}']


def test_launch_command_adds_gpu_offsets_only_for_sglang(tmp_path):
    config = SGLangConfig(num_servers=2, server_args={"tp_size": 4})
    pool = ServerPool(config, "/models/m", log_dir=tmp_path)
    command = pool._command(1, 30001)
    assert command[:3] == ["python", "-m", "sglang.launch_server"]
    assert command[command.index("--base-gpu-id") + 1] == "4"
    assert command[command.index("--host") + 1] == "127.0.0.1"  # loopback unless configured
    shifted = ServerPool(SGLangConfig(server_args={"tp_size": 2, "base_gpu_id": 4}), "/m", log_dir=tmp_path)
    assert shifted._command(1, 30001)[shifted._command(1, 30001).index("--base-gpu-id") + 1] == "6"
    stand_in = ServerPool(SGLangConfig(launch_command="spice serve", api_key="k"), "/m", log_dir=tmp_path)
    command = stand_in._command(0, 30000)
    assert "--base-gpu-id" not in command and command[command.index("--api-key") + 1] == "k"


def test_sampling_payloads_batch_n_unless_deterministic_inference_honours_seeds():
    schema = json.dumps({"type": "object"})
    [(params, n)] = sampling_payloads(SamplingParams(n=4, temperature=0.7, json_schema=schema, seed=5))
    assert n == 4 and params == {"n": 4, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 256,
                                 "json_schema": schema}  # sampling_seed would be ignored: not sent
    [(by_regex, _)] = sampling_payloads(SamplingParams(n=2, regex="(yes|no)"))
    assert by_regex["regex"] == "(yes|no)" and "json_schema" not in by_regex
    seeded = sampling_payloads(SamplingParams(n=3, seed=100), deterministic=True)
    seeds = [p["sampling_seed"] for p, _ in seeded]
    assert len(set(seeds)) == 3 and all(0 <= s < 2**63 for s in seeds)
    assert all(p["n"] == 1 and n == 1 for p, n in seeded)
    assert seeds == [p["sampling_seed"] for p, _ in sampling_payloads(SamplingParams(n=3, seed=100), True)]
    [(unseeded, n)] = sampling_payloads(SamplingParams(n=2), deterministic=True)
    assert n == 2 and unseeded["n"] == 2 and "sampling_seed" not in unseeded


def test_per_prompt_sampling_gives_each_prompt_its_own_seed():
    shared = per_prompt(SamplingParams(n=2, seed=7), 3)
    assert len({p.seed for p in shared}) == 3 and shared == per_prompt(SamplingParams(n=2, seed=7), 3)
    assert per_prompt(SamplingParams(n=2), 2) == [SamplingParams(n=2)] * 2
    with pytest.raises(ValueError, match="2 SamplingParams for 3 prompts"):
        per_prompt([SamplingParams(), SamplingParams()], 3)


def _output(ids, version="default", finish="stop", output_ids=None):
    return {"text": "x", "output_ids": ids if output_ids is None else output_ids,
            "meta_info": {"finish_reason": {"type": finish}, "weight_version": version,
                          "output_token_logprobs": [[-0.5, t, None] for t in ids]}}


def test_parse_response_single_list_and_trimmed_eos():
    request = _Request(0, 5, [1, 2], {}, 2)
    completions = parse_generate_response([_output([7, 2]), _output([8, 2], output_ids=[8])], request, 0, 0)
    assert [c.token_ids for c in completions] == [[7, 2], [8, 2]]
    assert all(c.prompt_index == 5 and c.weight_version == 0 and c.logprobs == [-0.5, -0.5] for c in completions)
    [single] = parse_generate_response(_output([3], version="4", finish="length"), _Request(0, 0, [1], {}, 1), 4, 0)
    assert single.finish_reason == "length" and single.weight_version == 4
    assert not single.masked_logprobs and not any(c.masked_logprobs for c in completions)
    [constrained] = parse_generate_response(_output([3]), _Request(0, 0, [1], {"json_schema": "{}"}, 1), 0, 0)
    assert constrained.masked_logprobs  # SGLang's logprobs under a grammar are the masked distribution's
    [by_regex] = parse_generate_response(_output([3]), _Request(0, 0, [1], {"regex": "a"}, 1), 0, 0)
    assert by_regex.masked_logprobs


@pytest.mark.parametrize("body, needle", [
    ([_output([1])], "expected 2 outputs"),
    ([{"text": "x"}, {"text": "y"}], "meta_info"),
    ([_output([1], finish="abort"), _output([1])], "aborted"),
    ([_output([1], version="3"), _output([1], version="3")], "weight version '3'"),
    ([_output([1], output_ids=[5, 6, 7]), _output([1])], "disagree"),
    ([{"text": "x", "meta_info": {"finish_reason": {"type": "stop"}}}] * 2, "output_token_logprobs"),
])
def test_parse_response_rejects_malformed(body, needle):
    with pytest.raises(_Transient, match=needle):
        parse_generate_response(body, _Request(0, 0, [1], {}, 2), 1, 0)


def test_buckets_respect_size_and_order():
    tensors = [(f"t{i}", torch.zeros(10)) for i in range(5)]  # 40 bytes each
    groups = list(buckets(tensors, 100))
    assert [[n for n, _ in g] for g in groups] == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert [len(g) for g in buckets([("big", torch.zeros(100))], 10)] == [1]


def test_safetensors_payload_round_trip_and_rejects_garbage():
    tensors = [("a", torch.randn(3, 2)), ("b", torch.arange(4, dtype=torch.int64))]
    back = dict(deserialize_safetensors(serialize_safetensors(tensors)))
    assert sorted(back) == ["a", "b"] and all(torch.equal(back[name], t) for name, t in tensors)
    with pytest.raises(ValueError, match="safetensors"):
        deserialize_safetensors("bm90IHNhZmV0ZW5zb3Jz")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ipc_payload_carries_device_uuid():
    import base64
    import pickle

    tensor = torch.arange(6, dtype=torch.float32, device="cuda")

    class Peek(pickle.Unpickler):
        def find_class(self, module, name):
            if name == "rebuild_cuda_tensor":
                return lambda *args: args
            return super().find_class(module, name)

    import io

    [(name, args)] = Peek(io.BytesIO(base64.b64decode(serialize_cuda_ipc([("w", tensor)])))).load()
    assert name == "w" and args[6] == str(torch.cuda.get_device_properties(0).uuid)


class _Fake(BaseHTTPRequestHandler):
    """Answers /health and /flush_cache; /generate misbehaves as the test asks."""

    mode = "garbage"
    generate_calls = 0
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, data: bytes):
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout case)

    def do_GET(self):
        self._send(200, b"")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/generate":
            self._send(200, b"{}")
            return
        type(self).generate_calls += 1
        mode = type(self).mode
        if mode == "slow":
            time.sleep(2.0)
            self._send(200, b"{}")
        elif mode == "garbage":
            self._send(200, b"<html>not json")
        elif mode == "no_meta":
            self._send(200, json.dumps({"text": "hi", "output_ids": [1]}).encode())
        elif mode == "503":
            self._send(503, b"overloaded")
        elif mode == "400":
            self._send(400, b"bad sampling params")


@pytest.fixture(scope="module")
def fake_engine(tmp_path_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    config = SGLangConfig(urls=[url], max_retries=2, request_timeout=0.5)
    engine = SGLangRolloutEngine(config, tmp_path_factory.mktemp("m"), work_dir=tmp_path_factory.mktemp("w"),
                                 backoff=0.01, max_backoff=0.05)
    yield engine, url
    engine.close()
    server.shutdown()


@pytest.mark.parametrize("mode, needle", [
    ("garbage", "not JSON"), ("no_meta", "meta_info"), ("503", "HTTP 503"), ("slow", "TimeoutError")])
def test_transient_errors_retry_then_name_server_and_request(fake_engine, mode, needle):
    engine, url = fake_engine
    _Fake.mode, _Fake.generate_calls = mode, 0
    with pytest.raises(SGLangRequestError) as caught:
        engine.generate([[1, 2, 3]], SamplingParams(n=1, max_new_tokens=4))
    message = str(caught.value)
    assert url in message and "prompt 0 (3 tokens" in message and "after 3 attempts" in message
    assert needle in message
    assert _Fake.generate_calls == 3  # max_retries = 2: one try and two retries, no more


def test_client_errors_are_not_retried(fake_engine):
    engine, url = fake_engine
    _Fake.mode, _Fake.generate_calls = "400", 0
    with pytest.raises(SGLangRequestError, match="HTTP 400: bad sampling params"):
        engine.generate([[1, 2]], SamplingParams())
    assert _Fake.generate_calls == 1


def test_launch_failure_names_server_and_log(tmp_path):
    config = SGLangConfig(launch_command=f"{sys.executable} -c 'raise SystemExit(3)'", base_port=31877)
    with pytest.raises(ServerLaunchError, match=r"server 0 at http://127.0.0.1:31877 exited with code 3.*server_0.log"):
        SGLangRolloutEngine(config, tmp_path, work_dir=tmp_path)


def test_servers_get_no_torchrun_variables_and_a_non_generating_health(monkeypatch, tmp_path):
    from spice.rollout.sglang_servers import server_env

    torchrun = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8", "GROUP_RANK": "0",
                "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x",
                "TORCHELASTIC_RESTART_COUNT": "0", "CUDA_DEVICE_MAX_CONNECTIONS": "1", "ROLE_RANK": "0"}
    env = server_env({**torchrun, "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert not set(torchrun) & set(env) and env["PATH"] == "/bin" and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION"] == "0" and env["SGLANG_RETURN_ORIGINAL_LOGPROB"] == "1"
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    pool = ServerPool(SGLangConfig(), "/m", log_dir=tmp_path)
    assert "RANK" not in pool.env and "MASTER_PORT" not in pool.env


def test_deterministic_inference_and_tp_size_names(tmp_path):
    seeded = ServerPool(SGLangConfig(deterministic_inference=True), "/m", log_dir=tmp_path)
    assert "--enable-deterministic-inference" in seeded._command(0, 30000)
    assert "--enable-deterministic-inference" not in ServerPool(SGLangConfig(), "/m", log_dir=tmp_path)._command(0, 1)
    alias = ServerPool(SGLangConfig(num_servers=2, server_args={"tensor_parallel_size": 2}), "/m", log_dir=tmp_path)
    assert alias.tp_size() == 2 and alias._command(1, 1)[alias._command(1, 1).index("--base-gpu-id") + 1] == "2"


class _Old(BaseHTTPRequestHandler):
    """A server before 0.5.6: /model_info and /server_info are 404, the /get_ names answer."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        found = self.path in ("/get_model_info", "/get_server_info")
        data = json.dumps({"version": "0.5.5"}).encode() if found else b'{"detail":"Not Found"}'
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_info_falls_back_to_deprecated_names_and_old_servers_get_no_router_polling(served_by=_Old):
    from spice.rollout.sglang_servers import info, router_health_flags

    server = ThreadingHTTPServer(("127.0.0.1", 0), served_by)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert info(url, "server_info", None) == {"version": "0.5.5"}
        assert router_health_flags(url, None) == ["--disable-health-check"]
    finally:
        server.shutdown()


def test_session_helper_opens_and_closes_or_tolerates_404():
    from spice.rollout.weight_sync.base import weight_update_session

    calls = []

    class _Sessions(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            calls.append((self.server.server_address[1], self.path))
            status = 404 if self.server.server_address[1] == old_port else 200
            data = b'{"success": true, "message": "Success"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    new, old = (ThreadingHTTPServer(("127.0.0.1", 0), _Sessions) for _ in range(2))
    old_port = old.server_address[1]
    for server in (new, old):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in (new, old)]
    try:
        with weight_update_session(urls) as opened:
            assert opened == urls[:1]
        with pytest.raises(RuntimeError, match="bucket failed"):
            with weight_update_session(urls[:1]):
                raise RuntimeError("bucket failed")
    finally:
        for server in (new, old):
            server.shutdown()
    port = new.server_address[1]
    assert [path for p, path in calls if p == port] == ["/begin_weight_update", "/end_weight_update"] * 2
    assert [path for p, path in calls if p == old_port] == ["/begin_weight_update"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ipc_payload_is_pickled_once_per_tp_rank():
    from spice.rollout.weight_sync.tensor import TensorWeightSync

    bucket = [("w", torch.ones(4, device="cuda"))]
    payload = TensorWeightSync(tp_size=3)._payload(bucket, 1, last=True)
    entries = payload["serialized_named_tensors"]
    assert len(entries) == 3 and len({id(e) for e in entries}) == 3 and payload["load_format"] is None
