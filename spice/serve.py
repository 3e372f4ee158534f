"""`spice serve`: a CPU stand-in for an SGLang server, on the in-process transformers engine.

It answers the subset of SGLang's native HTTP API that spice uses, with SGLang's request and response
fields (https://docs.sglang.io/basic_usage/native_api.html): `/generate` (input_ids or text;
sampling_params n, temperature, top_p, max_new_tokens, json_schema, regex, sampling_seed; return_logprob),
`/health`, `/get_model_info`, `/get_server_info`, `/flush_cache`, `/update_weights_from_disk`,
`/update_weights_from_tensor`, `/init_weights_update_group`, `/update_weights_from_distributed`,
`/destroy_weights_update_group`, `/release_memory_occupation`, `/resume_memory_occupation`.
Concurrent `/generate` requests are batched. It refuses what SGLang refuses (read from the 0.5.23,
0.5.20 and 0.5.3 wheels): tensor and distributed updates outside a `/begin_weight_update` ..
`/end_weight_update` session (0.5.21+), `/flush_cache` while a request runs (400), resuming a memory tag
that is not released; `/health` runs a one-token generation unless SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION
is false (0.5.6+), and release/resume answer `null`. `--emulate 0.5.20` or `0.5.3` behaves as those
releases (no session endpoints; 0.5.3: no `cuda_graph` tag, no `/model_info`, `/health` always generates).
Differences from SGLang: `/update_weights_from_tensor` takes `load_format: "spice_safetensors"` (base64
safetensors bytes) instead of pickled CUDA IPC handles, the process group for
`/update_weights_from_distributed` may use gloo, and `/generate` on released memory is refused (400)
where SGLang would run on freed memory. Useful for CI and for trying a config on a laptop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("spice.serve")

SAMPLING_KEYS = {"n", "temperature", "top_p", "max_new_tokens", "json_schema", "regex", "sampling_seed",
                 "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim"}
BATCH_WINDOW = 0.02  # seconds the batcher waits for more requests before it runs a batch
DTYPE_NAMES = {"float32", "bfloat16", "float16", "auto", "float", "half"}


class BadRequest(ValueError):
    """The request is malformed or asks for something the stand-in does not do (HTTP 400)."""


@dataclass(frozen=True)
class Release:
    """How one supported SGLang release behaves where spice depends on it (read from its wheel)."""

    version: str
    sessions: bool  # /begin_weight_update and /end_weight_update; tensor/distributed updates need one (0.5.21+)
    memory_tags: tuple[str, ...]  # what a release or resume without tags covers (GPU_MEMORY_ALL_TYPES)
    health_switch: bool  # SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION can stop /health generating (0.5.6+)
    info_names: bool  # /model_info and /server_info besides the deprecated /get_* names (0.5.6+)


RELEASES = {
    "0.5.23": Release("0.5.23", True, ("kv_cache", "weights", "cuda_graph"), True, True),
    "0.5.20": Release("0.5.20", False, ("kv_cache", "weights", "cuda_graph"), True, True),
    "0.5.3": Release("0.5.3", False, ("weights", "kv_cache"), False, False),
}


def _env_true(name: str, default: bool) -> bool:
    """SGLang's EnvBool reading of an environment variable."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "y", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options under SGLang's own names where they exist."""
    parser.add_argument("--model-path", required=True, help="local Hugging Face model folder")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--api-key", default=None, help="require `Authorization: Bearer <key>`")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPE_NAMES))
    parser.add_argument("--max-running-requests", type=int, default=16,
                        help="sequences generated together (the engine's batch size)")
    parser.add_argument("--random-seed", type=int, default=0)
    parser.add_argument("--weight-version", default="default")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--num-threads", type=int, default=None,
                        help="torch CPU threads (1 keeps several stand-ins on a small machine fast)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--emulate", default="0.5.23", choices=sorted(RELEASES),
                        help="behave as this SGLang release (sessions, memory tags, endpoints, /health)")


@dataclass
class _Job:
    prompts: list[list[int]]
    sampling: Any  # SamplingParams (with n) shared by the job's prompts
    done: threading.Event = field(default_factory=threading.Event)
    result: list | None = None
    error: BaseException | None = None


class StandIn:
    """The engine plus SGLang's server-side state: weight version, process groups, released memory."""

    def __init__(self, args: argparse.Namespace) -> None:
        from spice.rollout.hf import HFRolloutEngine

        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        dtype = {"auto": "float32", "float": "float32", "half": "float16"}.get(args.dtype, args.dtype)
        self.args = args
        self.engine = HFRolloutEngine(args.model_path, dtype=dtype, batch_size=args.max_running_requests,
                                      seed=args.random_seed, device=args.device)
        self.weight_version = str(args.weight_version)
        self.lock = threading.Lock()  # one forward pass at a time: generation or a weight update
        self.lock_running = threading.Lock()
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.groups: dict[str, Any] = {}
        self.release = RELEASES[getattr(args, "emulate", "0.5.23")]
        self.released: set[str] = set()
        self.session_open = False
        self.running = 0  # requests generating now (health checks included): /flush_cache refuses then
        self.health_generates = not (self.release.health_switch
                                     and not _env_true("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION", True))
        self.requests_served = 0
        self.batches_run = 0  # engine batches: requests in flight together share one
        self.health_generations = 0
        threading.Thread(target=self._batch_loop, name="batcher", daemon=True).start()

    # ----- generation ----------------------------------------------------------------------------
    def _batch_loop(self) -> None:
        """Take every waiting job (those arriving within `BATCH_WINDOW` s of each other), and run them
        all as one batch of the engine, each prompt with its own request's sampling."""
        while True:
            pending = [self.jobs.get()]
            while True:
                try:
                    pending.append(self.jobs.get(timeout=BATCH_WINDOW))
                except queue.Empty:
                    break
            prompts = [p for job in pending for p in job.prompts]
            params = [job.sampling for job in pending for _ in job.prompts]
            try:
                with self.lock:
                    self.batches_run += 1
                    outputs = self.engine.generate(prompts, params)
            except BaseException as error:  # the handler threads report it as HTTP 500
                for job in pending:
                    job.error = error
                    job.done.set()
                continue
            start = 0
            for job in pending:
                job.result = [c for group in outputs[start:start + len(job.prompts)] for c in group]
                start += len(job.prompts)
                job.done.set()

    def generate(self, body: dict[str, Any]) -> Any:
        from spice.rollout.base import GRAMMAR_KEYS, SamplingParams

        if self.released:
            raise BadRequest(f"memory is released ({sorted(self.released)}): call /resume_memory_occupation")
        prompts, single = self._prompts(body)
        params = body.get("sampling_params") or {}
        if not isinstance(params, dict):
            raise BadRequest("sampling_params must be one object (per-prompt lists are not supported)")
        unknown = sorted(set(params) - SAMPLING_KEYS)
        if unknown:
            raise BadRequest(f"sampling_params {unknown} are not supported by spice serve")
        grammars = [key for key in GRAMMAR_KEYS if params.get(key) is not None]
        if len(grammars) > 1:  # SGLang's SamplingParams.verify refuses it the same way
            raise BadRequest("Only one of json_schema, regex, ebnf, or structural_tag can be set.")
        try:
            n = int(params.get("n", 1))
            sampling = SamplingParams(
                n=n, temperature=float(params.get("temperature", 1.0)), top_p=float(params.get("top_p", 1.0)),
                max_new_tokens=int(params.get("max_new_tokens", 128)), json_schema=params.get("json_schema"),
                regex=params.get("regex"),
                seed=None if params.get("sampling_seed") is None else int(params["sampling_seed"]))
        except (TypeError, ValueError) as error:
            raise BadRequest(f"sampling_params: {error}") from error
        if n < 1 or sampling.max_new_tokens < 0:
            raise BadRequest("sampling_params: n must be >= 1 and max_new_tokens >= 0")
        started = time.perf_counter()
        self.requests_served += 1
        job = self._run(_Job(prompts, sampling))
        assert job.result is not None
        outputs = [self._output(c, len(job.prompts[i // n]), sampling, bool(body.get("return_logprob")), started)
                   for i, c in enumerate(job.result)]
        return outputs[0] if single and n == 1 else outputs

    def _run(self, job: _Job) -> _Job:
        """Queue a job for the batcher and wait for it, counted as running meanwhile."""
        with self.lock_running:
            self.running += 1
        try:
            self.jobs.put(job)
            job.done.wait()
        finally:
            with self.lock_running:
                self.running -= 1
        if job.error is not None:
            raise job.error
        return job

    def health(self, generate: bool) -> int:
        """SGLang's `/health`: a one-token greedy generation from token 0 (unless switched off);
        on released memory that generation fails (SGLang would run it on freed memory)."""
        from spice.rollout.base import SamplingParams

        if not generate:
            return 200
        self.health_generations += 1
        if self.released:
            log.warning("/health generated on released memory (%s)", sorted(self.released))
            return 503
        self._run(_Job([[0]], SamplingParams(n=1, temperature=0.0, max_new_tokens=1)))
        return 200

    def flush_cache(self) -> tuple[int, str]:
        """200 when idle; 400 while requests run, as SGLang's scheduler refuses then."""
        if self.running:
            return 400, "Flush cache failed: requests are running.\n"
        return 200, ("Cache flushed.\nPlease check backend logs for more details. (When there are running "
                     "or waiting requests, the operation will not be performed.)\n")

    def release_memory(self, body: dict[str, Any]) -> None:
        """Mark tags released (no tags: every type this release knows); generation refuses meanwhile."""
        if self.running:
            raise BadRequest("release_memory_occupation should be called only when server is idle.")
        tags = body.get("tags") or list(self.release.memory_tags)
        self.released |= set(tags)

    def resume_memory(self, body: dict[str, Any]) -> None:
        """Resume tags in order; one that is not released fails as SGLang's `offload_tags.remove` does."""
        tags = body.get("tags") or list(self.release.memory_tags)
        for tag in tags:
            if tag not in self.released:
                raise BadRequest(repr(tag))
            self.released.remove(tag)

    def begin_session(self) -> dict[str, Any]:
        if self.session_open:
            raise BadRequest("a weight-update session is already open; call end_weight_update() first")
        self.session_open = True
        return {"success": True, "message": "Success"}

    def end_session(self) -> dict[str, Any]:
        if not self.session_open:
            raise BadRequest("no weight-update session is open; call begin_weight_update() first")
        self.session_open = False
        return {"success": True, "message": "Success"}

    def _need_session(self, endpoint: str) -> None:
        if self.release.sessions and not self.session_open:
            raise BadRequest(f"{endpoint} must run between begin_weight_update() and end_weight_update()")

    def _prompts(self, body: dict[str, Any]) -> tuple[list[list[int]], bool]:
        ids, text = body.get("input_ids"), body.get("text")
        if ids is not None:
            single = bool(ids) and isinstance(ids[0], int)
            prompts = [ids] if single else ids
            if not isinstance(prompts, list) or not all(
                    isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompts):
                raise BadRequest("input_ids must be a non-empty list of token ids or a list of such lists")
            return prompts, single
        if text is not None:
            single = isinstance(text, str)
            texts = [text] if single else text
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise BadRequest("text must be a string or a list of strings")
            return [self.engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], single
        raise BadRequest("give input_ids or text")

    def _output(self, completion: Any, prompt_tokens: int, sampling: Any, logprobs: bool,
                started: float) -> dict[str, Any]:
        ids = completion.token_ids
        finish = ({"type": "stop", "matched": ids[-1]} if completion.finish_reason == "stop"
                  else {"type": "length", "length": sampling.max_new_tokens})
        meta = {"id": uuid.uuid4().hex, "finish_reason": finish, "prompt_tokens": prompt_tokens,
                "completion_tokens": len(ids), "cached_tokens": 0, "weight_version": self.weight_version,
                "e2e_latency": time.perf_counter() - started}
        if logprobs:
            meta["input_token_logprobs"] = []
            meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(completion.logprobs, ids)]
        return {"text": completion.text, "output_ids": ids, "meta_info": meta}

    # ----- weights ---------------------------------------------------------------------------------
    def _load(self, named: list[tuple[str, torch.Tensor]], version: Any, flush: bool = True) -> None:
        """Load tensors under `version`; like SGLang 0.5.21+, a flush refused because requests run
        fails the update (after the weights changed)."""
        if "weights" in self.released:
            raise BadRequest("weights are released: resume them before updating")
        names = {n for n, _ in self.engine.model.named_parameters()}
        tied = bool(getattr(self.engine.model.config, "tie_word_embeddings", False))
        named = [(n, t) for n, t in named if not (tied and n == "lm_head.weight" and n not in names)]
        with self.lock:
            try:
                self.engine.update_weights(named, self.engine.weight_version)
            except (KeyError, ValueError) as error:
                raise BadRequest(str(error)) from error
            if version is not None:
                self.weight_version = str(version)
                if self.weight_version.lstrip("-").isdigit():
                    self.engine.weight_version = int(self.weight_version)
        if flush and self.running and self.release.sessions:
            raise BadRequest("Weights were updated, but the cache was not flushed because requests are still "
                             "running or queued. Retract or finish them, then call /flush_cache.")

    def update_from_disk(self, body: dict[str, Any]) -> dict[str, Any]:
        from safetensors.torch import load_file

        path = Path(str(body.get("model_path", "")))
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
        if not files:
            raise BadRequest(f"model_path {str(path)!r} holds no .safetensors files")
        named = [item for f in files for item in load_file(str(f)).items()]
        self._load(named, body.get("weight_version"), bool(body.get("flush_cache", True)))
        return {"success": True, "message": f"loaded {len(named)} tensors from {path}", "num_paused_requests": 0}

    def update_from_tensor(self, body: dict[str, Any]) -> dict[str, Any]:
        from spice.rollout.weight_sync.tensor import SAFETENSORS_FORMAT, deserialize_safetensors

        self._need_session("update_weights_from_tensor")
        if body.get("load_format") != SAFETENSORS_FORMAT:
            raise BadRequest(f"spice serve takes load_format {SAFETENSORS_FORMAT!r} (base64 safetensors), "
                             f"not {body.get('load_format')!r}: CUDA IPC handles need a real SGLang server")
        entries = body.get("serialized_named_tensors")
        if not isinstance(entries, list) or not entries or not isinstance(entries[0], str):
            raise BadRequest("serialized_named_tensors must be a list with one base64 string per TP rank")
        try:
            named = deserialize_safetensors(entries[0])
        except ValueError as error:
            raise BadRequest(f"serialized_named_tensors[0]: {error}") from error
        self._load(named, body.get("weight_version"), bool(body.get("flush_cache", True)))
        return {"success": True, "message": f"loaded {len(named)} tensors"}

    def init_group(self, body: dict[str, Any]) -> dict[str, Any]:
        from spice.rollout.weight_sync.distributed import init_custom_group

        try:
            name = body.get("group_name", "weight_update_group")
            self.groups[name] = init_custom_group(
                backend=body.get("backend", "gloo"), master_address=body["master_address"],
                master_port=int(body["master_port"]), world_size=int(body["world_size"]),
                rank=int(body["rank_offset"]), group_name=name)
        except KeyError as error:
            raise BadRequest(f"init_weights_update_group: missing {error}") from error
        return {"success": True, "message": f"joined group {name}"}

    def update_from_distributed(self, body: dict[str, Any]) -> dict[str, Any]:
        import torch.distributed as dist

        self._need_session("update_weights_from_distributed")
        name = body.get("group_name", "weight_update_group")
        if name not in self.groups:
            raise BadRequest(f"no weight update group {name!r}: call /init_weights_update_group first")
        names, dtypes, shapes = body.get("names"), body.get("dtypes"), body.get("shapes")
        if not (isinstance(names, list) and isinstance(dtypes, list) and isinstance(shapes, list)
                and len(names) == len(dtypes) == len(shapes)):
            raise BadRequest("names, dtypes and shapes must be lists of one length")
        named = []
        for tensor_name, dtype, shape in zip(names, dtypes, shapes):
            tensor = torch.empty(shape, dtype=getattr(torch, dtype))
            dist.broadcast(tensor, src=0, group=self.groups[name])
            named.append((tensor_name, tensor))
        self._load(named, body.get("weight_version"), bool(body.get("flush_cache", True)))
        return {"success": True, "message": f"received {len(named)} tensors"}

    def destroy_group(self, body: dict[str, Any]) -> dict[str, Any]:
        import torch.distributed as dist

        group = self.groups.pop(body.get("group_name", "weight_update_group"), None)
        if group is None:
            raise BadRequest("no such weight update group")
        dist.destroy_process_group(group)
        return {"success": True, "message": "destroyed"}

    def model_info(self) -> dict[str, Any]:
        config = self.engine.model.config
        return {"model_path": self.args.model_path, "tokenizer_path": self.args.model_path,
                "is_generation": True, "preferred_sampling_params": None,
                "weight_version": self.weight_version, "has_image_understanding": False,
                "has_audio_understanding": False, "model_type": config.model_type,
                "architectures": list(config.architectures or [])}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: Any) -> None:
        """A text body as text/plain, anything else as JSON (None is `null`, as SGLang's release answers)."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        key = self.server.api_key
        if not key or self.path.startswith("/health"):
            return True
        if self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self._send(401, {"error": "Unauthorized"})
        return False

    def do_GET(self) -> None:
        self._route(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._send(400, {"error": "request body is not JSON"})
            return
        if not isinstance(body, dict):
            self._send(400, {"error": "request body must be a JSON object"})
            return
        self._route(body)

    def _route(self, body: dict[str, Any] | None) -> None:
        if not self._authorised():
            return
        app = self.server.app
        path = self.path.split("?", 1)[0]
        server_info = lambda: {**vars(app.args), "api_key": None, "weight_version": app.weight_version,  # noqa: E731
                               "requests_served": app.requests_served, "batches_run": app.batches_run,
                               "version": app.release.version,
                               "health_generations": app.health_generations, "stand_in": "spice serve"}
        routes = {
            "/generate": lambda: app.generate(body or {}),
            "/get_model_info": app.model_info, "/get_server_info": server_info,
            "/update_weights_from_disk": lambda: app.update_from_disk(body or {}),
            "/update_weights_from_tensor": lambda: app.update_from_tensor(body or {}),
            "/init_weights_update_group": lambda: app.init_group(body or {}),
            "/update_weights_from_distributed": lambda: app.update_from_distributed(body or {}),
            "/destroy_weights_update_group": lambda: app.destroy_group(body or {}),
        }
        if app.release.info_names:
            routes.update({"/model_info": app.model_info, "/server_info": server_info})
        if app.release.sessions:
            routes.update({"/begin_weight_update": app.begin_session, "/end_weight_update": app.end_session})
        try:
            if path in ("/health", "/health_generate"):
                self._send(app.health(path == "/health_generate" or app.health_generates), "")
            elif path == "/flush_cache":
                self._send(*app.flush_cache())
            elif path in ("/release_memory_occupation", "/resume_memory_occupation"):
                try:
                    (app.release_memory if path.startswith("/release") else app.resume_memory)(body or {})
                except BadRequest as error:  # SGLang's _create_error_response
                    self._send(400, {"error": {"message": str(error)}})
                    return
                self._send(200, None)
            elif path in routes:
                if body is None and path not in ("/get_model_info", "/model_info", "/get_server_info",
                                                 "/server_info"):
                    self._send(405, {"error": f"{path} takes POST"})
                    return
                self._send(200, routes[path]())
            else:
                self._send(404, {"error": f"spice serve has no endpoint {path}"})
        except BadRequest as error:
            self._send(400, {"success": False, "error": str(error), "message": str(error)})
        except Exception as error:  # report, keep serving
            log.exception("%s failed", path)
            self._send(500, {"success": False, "error": f"{type(error).__name__}: {error}",
                             "message": str(error)})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: StandIn, api_key: str | None) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self.api_key = api_key


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve until interrupted."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s spice.serve %(message)s")
    if not Path(args.model_path).is_dir():
        print(f"spice serve: --model-path {args.model_path} is not a folder", file=sys.stderr)
        return 2
    app = StandIn(args)
    server = _Server((args.host, args.port), app, args.api_key)
    print(f"spice serve: {args.model_path} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spice serve", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
