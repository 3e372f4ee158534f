"""The SGLang engine over real HTTP on loopback, against `spice serve` stand-ins: one server (disk
weight sync) and two behind sglang-router (colocated tensor sync, API key). Both fleets start once
for the module, side by side."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch

from spice.config import SGLangConfig
from spice.rollout.base import SamplingParams
from spice.rollout.hf import HFRolloutEngine
from spice.rollout.sglang import SGLangRequestError, SGLangRolloutEngine
from spice.rollout.sglang_servers import free_port, port_is_free
from spice.rollout.weight_sync import DistributedWeightSync

LAUNCH = f"{sys.executable} -m spice.serve --max-running-requests 16 --num-threads 1"
KEY = "test-key"
PROMPTS = [[1, 504, 2683, 28], [17, 9, 4], [250, 251, 252, 253, 254], [88]]


def _free_ports(count: int) -> int:
    for _ in range(100):
        base = free_port()
        if all(port_is_free("127.0.0.1", base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports")


@pytest.fixture(scope="module")
def engines(tiny_model, tmp_path_factory):
    """(one server, disk sync) and (two servers behind the router, tensor sync, API key)."""
    one = SGLangConfig(num_servers=1, base_port=_free_ports(1), launch_command=LAUNCH, weight_sync="disk",
                       max_retries=6, request_timeout=120)
    two = SGLangConfig(num_servers=2, base_port=_free_ports(2), router_port=free_port(), launch_command=LAUNCH,
                       weight_sync="tensor", api_key=KEY, max_retries=6, request_timeout=120,
                       bucket_megabytes=1)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(SGLangRolloutEngine, config, tiny_model, work_dir=tmp_path_factory.mktemp(name),
                               backoff=0.2, max_backoff=2.0) for config, name in ((one, "one"), (two, "two"))]
        started = [f.result() for f in futures]  # a launch error surfaces here
    yield started
    for engine in started:
        engine.close()


@pytest.fixture(scope="module")
def reference(tiny_model):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stand-ins: no thread contention on a small, shared machine
    yield HFRolloutEngine(tiny_model, batch_size=16, device="cpu")
    torch.set_num_threads(threads)


def _info(url: str, path: str = "/get_model_info") -> dict:
    return requests.get(url + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()


def _greedy(engine, prompts=PROMPTS):
    return [[c.token_ids for c in group] for group in engine.generate(prompts, SamplingParams(
        n=1, temperature=0.0, max_new_tokens=12))]


def _perturbed(reference: HFRolloutEngine, seed: int) -> list[tuple[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(name, p.detach() + 0.05 * torch.randn(p.shape, generator=generator))
            for name, p in reference.model.named_parameters()]


def test_both_roles_in_one_pool(engines):
    for engine in engines:
        challenger, reasoner = engine.generate_many([
            (PROMPTS[:2], SamplingParams(n=2, temperature=1.0, max_new_tokens=10)),
            (PROMPTS[1:], SamplingParams(n=3, temperature=0.8, top_p=0.9, max_new_tokens=6)),
        ])
        assert [len(g) for g in challenger] == [2, 2] and [len(g) for g in reasoner] == [3, 3, 3]
        for groups in (challenger, reasoner):
            for index, group in enumerate(groups):
                for c in group:
                    assert c.prompt_index == index and c.weight_version == 0
                    assert len(c.token_ids) == len(c.logprobs) > 0 and all(lp <= 0 for lp in c.logprobs)
                    assert c.finish_reason in ("stop", "length")
    served = [_info(url, "/get_server_info")["requests_served"] for url in engines[1].pool.server_urls]
    assert sum(served) >= 5 and engines[1].pool.router_url is not None  # one request per prompt
    # The router polls /health every 2 s; with SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=0 none generates.
    assert [_info(url, "/server_info")["health_generations"] for url in engines[1].pool.server_urls] == [0, 0]
    assert {s.version for engine in engines for s in engine.pool.servers} == {"0.5.23"}


def test_greedy_matches_in_process_engine(engines, reference):
    expected = [[c.token_ids for c in g] for g in reference.generate(PROMPTS, SamplingParams(
        n=1, temperature=0.0, max_new_tokens=12))]
    for engine in engines:
        assert _greedy(engine) == expected


def test_api_key_is_required(engines):
    url = engines[1].pool.server_urls[0]
    response = requests.post(url + "/generate", json={"input_ids": [1, 2], "sampling_params": {}}, timeout=30)
    assert response.status_code == 401


def test_weight_update_tags_new_version_and_matches_in_process(engines, reference):
    weights = _perturbed(reference, seed=1)
    reference.update_weights(weights, 1)
    expected = [[c.token_ids for c in g] for g in reference.generate(PROMPTS, SamplingParams(
        n=1, temperature=0.0, max_new_tokens=12))]
    for engine in engines:
        sync = engine.update_weights(weights, 1)
        assert sync["version"] == 1 and sync["gigabytes"] > 0 and sync["seconds"] > 0
        assert sync["gigabytes_per_second"] > 0
        sampled = engine.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=8))
        assert {c.weight_version for g in sampled for c in g} == {1}
        assert _greedy(engine) == expected
        assert {_info(url)["weight_version"] for url in engine.pool.server_urls} == {"1"}


def test_colocated_release_then_update_resumes(engines, reference):
    engine = engines[1]
    engine.release_memory()
    with pytest.raises(SGLangRequestError, match="memory is released"):
        engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))
    weights = _perturbed(reference, seed=2)
    engine.update_weights(weights, 2)
    reference.update_weights(weights, 2)
    assert not engine.released
    assert [c.weight_version for c in engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2))[0]] == [2]


def test_distributed_transport_over_gloo(engines, reference):
    engine = engines[0]
    weights = _perturbed(reference, seed=3)
    transport = DistributedWeightSync(master_address="127.0.0.1", master_port=free_port(), tp_sizes=[1],
                                      backend="gloo", bucket_bytes=64 << 10)
    try:
        sent = transport.push(engine.pool.server_urls, weights, 3)
        assert sent == sum(t.numel() * t.element_size() for _, t in weights)
        assert _info(engine.pool.server_urls[0])["weight_version"] == "3"
    finally:
        transport.close()
    reference.update_weights(weights, 3)
    engine.update_weights(weights, 3)  # the engine's own record of the version (disk, same tensors)
    expected = [[c.token_ids for c in g] for g in reference.generate(PROMPTS, SamplingParams(
        n=1, temperature=0.0, max_new_tokens=12))]
    assert _greedy(engine) == expected


def test_older_release_without_sessions(tiny_model, reference, tmp_path):
    """The tensor and distributed transports on a 0.5.20 server (no session endpoints: 404), with
    memory released and resumed between rollouts as in the colocated layout."""
    config = SGLangConfig(num_servers=1, base_port=_free_ports(1), launch_command=LAUNCH + " --emulate 0.5.20",
                          weight_sync="tensor", max_retries=6, request_timeout=120, bucket_megabytes=1)
    engine = SGLangRolloutEngine(config, tiny_model, work_dir=tmp_path, backoff=0.2, max_backoff=2.0)
    try:
        assert engine.pool.servers[0].version == "0.5.20"
        engine.release_memory()
        weights = _perturbed(reference, seed=4)
        engine.update_weights(weights, 1)
        assert not engine.released and _info(engine.pool.server_urls[0], "/model_info")["weight_version"] == "1"
        transport = DistributedWeightSync(master_address="127.0.0.1", master_port=free_port(), tp_sizes=[1],
                                          backend="gloo", bucket_bytes=64 << 10)
        try:
            transport.push(engine.pool.server_urls, weights, 2)
        finally:
            transport.close()
        assert _info(engine.pool.server_urls[0], "/model_info")["weight_version"] == "2"
    finally:
        engine.close()


def test_distributed_bucket_refused_outside_a_session_fails_at_once(engines):
    """0.5.23 refuses an update outside a session before joining the broadcast: the trainer reports the
    server's answer instead of waiting in the broadcast until the group's timeout."""
    from spice.rollout.weight_sync import WeightSyncError

    urls = engines[0].pool.server_urls
    transport = DistributedWeightSync(master_address="127.0.0.1", master_port=free_port(), tp_sizes=[1],
                                      backend="gloo", timeout=30, group_name="refused")
    transport._ensure_group(urls)
    started = time.monotonic()
    with pytest.raises(WeightSyncError, match="between begin_weight_update"):  # 64 MB: the send blocks
        transport._send_bucket(urls, [("w", torch.zeros(16 << 20))], 9, last=True)
    assert time.monotonic() - started < 15 and transport.group is None


@pytest.mark.parametrize("which", [0, 1])
def test_killed_server_is_restarted_and_nothing_is_lost(engines, which, caplog):
    engine = engines[which]
    victim = engine.pool.servers[-1]
    prompts = [[5 + i, 60 + i, 700 + i] for i in range(16)]
    outcome: dict = {}

    def work():
        try:
            outcome["result"] = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=16))
        except BaseException as error:
            outcome["error"] = error

    caplog.set_level(logging.WARNING)
    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 60
    while sum(engine._inflight.values()) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(victim.process.pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert [len(g) for g in result] == [2] * len(prompts)
    assert {c.weight_version for g in result for c in g} == {engine.weight_version}
    assert victim.ready.wait(300) and victim.restarts == 1
    assert _info(victim.url)["weight_version"] == str(engine.weight_version)  # resynchronised
    assert "restarting" in caplog.text


def test_full_spice_iteration_through_the_router(engines, tiny_model, tmp_path):
    """Rollouts for both roles, one policy step, weight sync: the loop's own stages on this engine."""
    from spice import loop
    from spice.tasks import Task
    from spice.train.torch_backend import TorchBackend
    from tests.scripted import ScriptedChallengerEngine
    from tests.test_loop import config_for, make_corpus

    engine = engines[1]
    corpus, corpus_path = make_corpus(tmp_path)
    config = config_for(tmp_path, corpus_path, tiny_model)
    scripted = ScriptedChallengerEngine(engine, corpus.documents)
    backend = TorchBackend(config, tiny_model)
    iteration, batch = loop.run_rollouts(scripted, scripted.tokenizer, corpus, config, 0)
    assert sum(isinstance(s.result, Task) for s in iteration.trained) == 2
    assert [len(group) for group in iteration.answers] == [2, 2]
    assert {c.weight_version for group in iteration.answers for c in group} == {engine.weight_version}
    assert loop.update_policy(backend, batch)["grad_norm"] > 0
    version = engine.weight_version + 1
    sync = loop.sync_weights(backend, scripted, version)
    assert sync["version"] == version and sync["gigabytes"] > 0
    trained = HFRolloutEngine(tiny_model, device="cpu")
    trained.update_weights(backend.named_weights(), version)
    expected = [[c.token_ids for c in g] for g in trained.generate(PROMPTS, SamplingParams(
        n=1, temperature=0.0, max_new_tokens=12))]
    assert _greedy(engine) == expected
    answers = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=4))
    assert {c.weight_version for g in answers for c in g} == {version}
