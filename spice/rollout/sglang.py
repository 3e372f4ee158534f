"""SGLang rollout engine: both roles' prompts go to one pool of SGLang servers over SGLang's native
HTTP API (`/generate` with `return_logprob`), and the trainer's weights arrive in place after every
step through the configured transport (disk, colocated tensors, or an NCCL group).

Request and response fields follow https://docs.sglang.io/basic_usage/native_api.html and
https://docs.sglang.io/basic_usage/sampling_params.html.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import torch

from spice.config import SGLangConfig, SpiceConfig
from spice.rollout.base import GRAMMAR_KEYS, Completion, SamplingParams, per_prompt, sample_seed
from spice.rollout.sglang_servers import Server, ServerPool, free_port
from spice.rollout.weight_sync import DiskWeightSync, DistributedWeightSync, TensorWeightSync, WeightSync
from spice.rollout.weight_sync.base import WeightSyncError, headers, post_all
from spice.rollout.weight_sync.disk import ShardWriter

# SGLang's GPU memory tags (GPU_MEMORY_ALL_TYPES in 0.5.20-0.5.23; 0.5.3 knows only the first two).
MEMORY_TAGS = ("weights", "kv_cache", "cuda_graph")


def _tee(named_tensors: Iterable[tuple[str, torch.Tensor]],
         writer: ShardWriter | None) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass the tensors through, also handing each to `writer` (the restart copy) when there is one."""
    for name, tensor in named_tensors:
        if writer is not None:
            writer.add(name, tensor)
        yield name, tensor

log = logging.getLogger(__name__)


class SGLangRequestError(RuntimeError):
    """A generation request failed for good; the message names the server, the request and the cause."""


class _Transient(Exception):
    """A failure worth retrying: 5xx, 429, a malformed body, an aborted or stale-weights answer."""


@dataclass
class _Request:
    batch: int  # which (prompts, sampling) pair of the call
    prompt_index: int
    input_ids: list[int]
    sampling_params: dict[str, Any]
    n: int

    def describe(self) -> str:
        return (f"/generate for prompt {self.prompt_index} ({len(self.input_ids)} tokens, "
                f"n={self.n}, max_new_tokens={self.sampling_params.get('max_new_tokens')})")


def sampling_payloads(sampling: SamplingParams, deterministic: bool = False) -> list[tuple[dict[str, Any], int]]:
    """SGLang `sampling_params` for one prompt, with how many samples each request returns: one request
    with `n`. SGLang honours `sampling_seed` only under `--enable-deterministic-inference`
    (`deterministic`), and there the `n` samples of one seed would be one sample repeated: a seeded
    prompt then becomes `n` single requests with distinct seeds."""
    base: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                            "max_new_tokens": sampling.max_new_tokens}
    if sampling.grammar is not None:
        key, value = sampling.grammar
        base[key] = value
    if sampling.seed is None or not deterministic:
        return [({**base, "n": sampling.n}, sampling.n)]
    return [({**base, "n": 1, "sampling_seed": sample_seed(sampling.seed, j)}, 1) for j in range(sampling.n)]


def parse_generate_response(body: Any, request: _Request, weight_version: int,
                            initial_version: int) -> list[Completion]:
    """Check and convert one `/generate` answer (a dict, or a list of `n` dicts) into Completions;
    raise _Transient naming what is wrong."""
    outputs = body if isinstance(body, list) else [body]
    if len(outputs) != request.n:
        raise _Transient(f"expected {request.n} outputs, got {len(outputs)}")
    completions = []
    for output in outputs:
        if not isinstance(output, dict) or not isinstance(output.get("meta_info"), dict):
            raise _Transient(f"output without meta_info: {str(output)[:200]}")
        meta = output["meta_info"]
        finish = meta.get("finish_reason")
        kind = finish.get("type") if isinstance(finish, dict) else finish
        if kind == "abort":
            raise _Transient(f"request aborted by the server: {finish}")
        if kind not in ("stop", "length"):
            raise _Transient(f"meta_info.finish_reason is {finish!r}, not stop or length")
        entries = meta.get("output_token_logprobs")
        if not isinstance(entries, list):
            raise _Transient("meta_info.output_token_logprobs is missing (was return_logprob sent?)")
        try:
            logprobs = [float(entry[0]) for entry in entries]
            token_ids = [int(entry[1]) for entry in entries]
        except (TypeError, ValueError, IndexError) as error:
            raise _Transient(f"meta_info.output_token_logprobs is malformed: {error}") from error
        output_ids = output.get("output_ids")
        if output_ids is not None and output_ids != token_ids and output_ids != token_ids[:-1]:
            raise _Transient(f"output_ids ({len(output_ids)}) disagree with output_token_logprobs "
                             f"({len(token_ids)})")
        served = meta.get("weight_version")
        if served is not None and str(served) != str(weight_version) \
                and not (served == "default" and weight_version == initial_version):
            raise _Transient(f"served by weight version {served!r}, expected {weight_version}")
        text = output.get("text")
        if not isinstance(text, str):
            raise _Transient("output has no text")
        completions.append(Completion(prompt_index=request.prompt_index, text=text, token_ids=token_ids,
                                      logprobs=logprobs, finish_reason=kind, weight_version=weight_version,
                                      masked_logprobs=any(k in request.sampling_params for k in GRAMMAR_KEYS)))
    return completions


class SGLangRolloutEngine:
    """RolloutEngine over SGLang servers that this engine launches (or `config.urls`, already running).
    `config` is the `rollout.sglang` section, or the whole config (then logs and weight folders go
    under `run.dir/sglang`)."""

    def __init__(self, config: SGLangConfig | SpiceConfig, model_path: str | Path, *,
                 work_dir: str | Path | None = None, initial_version: int = 0, startup_timeout: float = 900.0,
                 backoff: float = 0.5, max_backoff: float = 8.0) -> None:
        if isinstance(config, SpiceConfig):
            work_dir = work_dir if work_dir is not None else Path(config.run.dir) / "sglang"
            config = config.rollout.sglang
        self.config = config
        self.model_path = Path(model_path)
        self.progress: Callable[[int], None] | None = None  # called with sequences finished (progress bars)
        self._tokenizer = None
        self._tmp = None if work_dir is not None else tempfile.TemporaryDirectory(prefix="spice-sglang-")
        self.work_dir = Path(work_dir if work_dir is not None else self._tmp.name)
        self.weight_version = initial_version
        self.initial_version = initial_version
        self.startup_timeout = startup_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.last_sync: dict[str, Any] = {}
        self.released: set[str] = set()  # memory tags released on the servers
        self._update_lock = threading.RLock()
        self._resync_dir: tuple[int, Path] | None = None
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[str, int] = defaultdict(int)
        self.waves = 0  # generate calls: each sends all its requests at once and waits for the last
        self.pool = ServerPool(config, str(self.model_path), log_dir=self.work_dir / "logs",
                               on_restart=self._resync, startup_timeout=startup_timeout)
        self.pool.start()
        try:
            self.transport = self._make_transport()
        except BaseException:
            self.pool.close()
            raise

    @classmethod
    def from_config(cls, config: SpiceConfig, **kwargs: Any) -> SGLangRolloutEngine:
        """Build from the whole config: model path (resolved), run folder, SGLang section."""
        from spice.embedded import resolve_model_path

        return cls(config, resolve_model_path(config.model.path), **kwargs)

    @property
    def tokenizer(self):
        """The served model's tokenizer (loaded on first use), for building prompts."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            if self._tokenizer.pad_token_id is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    def _make_transport(self) -> WeightSync:
        c = self.config
        bucket = c.bucket_megabytes << 20
        if c.weight_sync == "disk":
            return DiskWeightSync(self.work_dir / "weights", model_dir=self.model_path, api_key=c.api_key,
                                  timeout=c.request_timeout)
        if c.weight_sync == "tensor":
            return TensorWeightSync(bucket_bytes=bucket, tp_size=self.pool.tp_size(), api_key=c.api_key,
                                    timeout=c.request_timeout)
        if c.weight_sync == "distributed":
            return DistributedWeightSync(master_address=c.host, master_port=free_port(c.host),
                                         tp_sizes=[self.pool.tp_size()] * len(self.pool.servers),
                                         bucket_bytes=bucket, api_key=c.api_key, timeout=c.request_timeout)
        raise ValueError(f"rollout.sglang.weight_sync: unknown transport {c.weight_sync!r}")

    # ----- generation --------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Completion]]:
        """`n` completions per prompt, in prompt order, each tagged with its weight version; `sampling`
        shared or one per prompt. Every request of the call is in flight together (one wave)."""
        return self.generate_many([(prompts, sampling)])[0]

    def generate_many(self, batches: list[tuple[list[list[int]], SamplingParams | Sequence[SamplingParams]]]
                      ) -> list[list[list[Completion]]]:
        """Several (prompts, sampling) batches, e.g. both roles, in one pool of concurrent requests."""
        if self._loop.is_closed():
            raise RuntimeError("SGLangRolloutEngine.generate after close()")
        return self._loop.run_until_complete(self._generate_all(batches))

    async def _generate_all(self, batches: list[tuple[list[list[int]], SamplingParams]]) -> list[list[list[Completion]]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrency),
                headers=headers(self.config.api_key))
        limit = asyncio.Semaphore(self.config.max_concurrency)
        deterministic = self.config.deterministic_inference
        requests = [_Request(b, i, list(prompt), params, n)
                    for b, (prompts, sampling) in enumerate(batches)
                    for i, (prompt, one) in enumerate(zip(prompts, per_prompt(sampling, len(prompts))))
                    for params, n in sampling_payloads(one, deterministic)]
        self.waves += 1
        tasks = [asyncio.ensure_future(self._run(request, limit)) for request in requests]
        try:
            answers = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        results: list[list[list[Completion]]] = [[[] for _ in prompts] for prompts, _ in batches]
        for request, completions in zip(requests, answers):
            results[request.batch][request.prompt_index].extend(completions)
        return results

    async def _pick(self) -> str:
        """The router, else the ready server with the fewest requests in flight (waiting if none is)."""
        urls = self.pool.generate_urls()
        if len(urls) == 1 and self.pool.server(urls[0]) is not None and self.pool.is_down(urls[0]):
            await asyncio.to_thread(self.pool.wait_ready, urls[0], self.startup_timeout)
        return min(urls, key=lambda url: self._inflight[url])

    async def _run(self, request: _Request, limit: asyncio.Semaphore) -> list[Completion]:
        attempts = self.config.max_retries + 1
        last = ""
        url = ""
        for attempt in range(1, attempts + 1):
            async with limit:
                url = await self._pick()
                self._inflight[url] += 1
                try:
                    completions = await self._post(url, request)
                    if self.progress is not None:
                        self.progress(len(completions))
                    return completions
                except (_Transient, aiohttp.ClientError, asyncio.TimeoutError) as error:
                    last = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                finally:
                    self._inflight[url] -= 1
            if attempt < attempts:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (1 + 0.25 * random.random())
                log.warning("%s at %s failed (%s); retry %d/%d in %.1f s", request.describe(), url, last,
                            attempt, attempts - 1, delay)
                await asyncio.sleep(delay)
        raise SGLangRequestError(f"{request.describe()} failed after {attempts} attempts; last error from "
                                 f"{url}: {last}")

    async def _post(self, url: str, request: _Request) -> list[Completion]:
        payload = {"input_ids": request.input_ids, "sampling_params": request.sampling_params,
                   "return_logprob": True, "stream": False}
        version = self.weight_version
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout)
        assert self._session is not None
        async with self._session.post(url + "/generate", json=payload, timeout=timeout) as response:
            text = await response.text()
            if response.status >= 500 or response.status == 429:
                raise _Transient(f"HTTP {response.status}: {text[:300]}")
            if response.status >= 400:
                raise SGLangRequestError(f"{request.describe()} at {url}: HTTP {response.status}: {text[:500]}")
        try:
            body = json.loads(text)
        except ValueError as error:
            raise _Transient(f"response is not JSON: {text[:200]!r}") from error
        return parse_generate_response(body, request, version, self.initial_version)

    # ----- weights -----------------------------------------------------------------------------
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> dict:
        """Send HF-named tensors to every server through the transport, flush their caches, and
        return `seconds`, `gigabytes`, `gigabytes_per_second` of the sync."""
        with self._update_lock:
            urls = self.pool.server_urls
            started = time.perf_counter()
            if "weights" in self.released:
                self.resume_memory(["weights"])
            spill = None
            if self.transport.name != "disk" and not self.config.urls:
                # A restarted server is resynchronised from disk: the streamed buckets are written there
                # as they pass (one shard on the host at a time, never the whole model).
                spill = ShardWriter(self.work_dir / "resync" / f"v{version}", model_dir=self.model_path,
                                    shard_bytes=self.config.bucket_megabytes << 20)
            sent = self.transport.push(urls, _tee(named_tensors, spill), version, skip=self.pool.is_down)
            if self.released:
                self.resume_memory()  # kv_cache and cuda_graph, after the weights
            self.flush_cache(urls)
            seconds = time.perf_counter() - started
            self.weight_version = version
            if spill is not None:
                spill.finish()
                previous, self._resync_dir = self._resync_dir, (version, spill.directory)
                if previous is not None and previous[1] != spill.directory:
                    shutil.rmtree(previous[1], ignore_errors=True)
        self.last_sync = {"seconds": seconds, "gigabytes": sent / 1e9,
                          "gigabytes_per_second": sent / 1e9 / max(seconds, 1e-9),
                          "transport": self.transport.name, "version": version}
        log.info("weight sync v%d via %s: %.3f GB in %.2f s (%.2f GB/s)", version, self.transport.name,
                 sent / 1e9, seconds, self.last_sync["gigabytes_per_second"])
        return dict(self.last_sync)

    def flush_cache(self, urls: list[str] | None = None) -> None:
        """Drop every server's prefix (radix) cache: cached KV was computed with the old weights."""
        post_all(urls or self.pool.server_urls, "/flush_cache", {}, api_key=self.config.api_key,
                 timeout=self.config.request_timeout, skip=self.pool.is_down)

    def release_memory(self) -> None:
        """Colocated layout: free the servers' GPU memory before training (`enable_memory_saver`). The
        tags are named: a release without tags frees what the server's release knows (0.5.3 has no
        `cuda_graph`), and resuming a tag that was not released fails (`offload_tags.remove`)."""
        with self._update_lock:
            post_all(self.pool.server_urls, "/release_memory_occupation", {"tags": list(MEMORY_TAGS)},
                     api_key=self.config.api_key, timeout=self.config.request_timeout, skip=self.pool.is_down)
            self.released = set(MEMORY_TAGS)

    def resume_memory(self, tags: list[str] | None = None) -> None:
        """Re-occupy the servers' GPU memory: `tags` (SGLang's "weights", "kv_cache", "cuda_graph"), or
        None for every tag still released."""
        with self._update_lock:
            tags = [tag for tag in MEMORY_TAGS if tag in self.released] if tags is None else list(tags)
            if not tags:
                return
            post_all(self.pool.server_urls, "/resume_memory_occupation", {"tags": tags},
                     api_key=self.config.api_key, timeout=self.config.request_timeout, skip=self.pool.is_down)
            self.released -= set(tags)

    def _resync(self, server: Server) -> None:
        """Called by the pool after restarting `server`: load the latest weights into it from disk."""
        with self._update_lock:
            if self.weight_version == self.initial_version:
                return  # it launched from the initial weights
            if isinstance(self.transport, DiskWeightSync):
                self.transport.load([server.url])
            else:
                if self._resync_dir is None or self._resync_dir[0] != self.weight_version:
                    raise WeightSyncError(f"cannot resync {server.url}: no copy of weights v{self.weight_version}")
                post_all([server.url], "/update_weights_from_disk",
                         {"model_path": str(self._resync_dir[1].resolve()),
                          "weight_version": str(self.weight_version)},
                         api_key=self.config.api_key, timeout=self.config.request_timeout)
                self.transport.reset()
            post_all([server.url], "/flush_cache", {}, api_key=self.config.api_key,
                     timeout=self.config.request_timeout)

    def close(self) -> None:
        """Stop the servers and the router, close the HTTP session and the transport."""
        if self._session is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._session.close())
            self._session = None
        if not self._loop.is_closed():
            self._loop.close()
        try:
            self.transport.close()
        finally:
            self.pool.close()
            if self._tmp is not None:
                self._tmp.cleanup()
