"""Launch and look after SGLang servers (or `spice serve` stand-ins): start N with SGLang's own
options, wait for `/health`, put `sglang-router` in front when N > 1, restart a server that dies and
resynchronise its weights, and shut everything down on exit (atexit, SIGTERM, parent death)."""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from spice.config import SGLangConfig
from spice.rollout.weight_sync.base import headers

log = logging.getLogger(__name__)


class ServerLaunchError(RuntimeError):
    """A server or the router did not come up; the message names it and its log file."""


# What torchrun (and torch.distributed's elastic agent) put in a worker's environment. A server that
# inherits them joins the trainer's rendezvous or reads rank 0's GPU settings, so servers never get them.
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
                      "CUDA_DEVICE_MAX_CONNECTIONS", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_ASYNC_ERROR_HANDLING")
TORCHRUN_PREFIXES = ("TORCHELASTIC_", "PET_")


def server_env(base: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The servers' environment: `base` without torchrun's variables, plus SGLang settings spice relies
    on: logprobs of the unscaled policy, and a `/health` that answers without generating (0.5.6+; by
    default it runs a forward pass, which races weight updates and runs on released memory)."""
    env = {key: value for key, value in base.items()
           if key not in TORCHRUN_VARIABLES and not key.startswith(TORCHRUN_PREFIXES)}
    env.update({"SGLANG_RETURN_ORIGINAL_LOGPROB": "1", "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "0"})
    return {**env, **(extra or {})}


def info(url: str, what: str, api_key: str | None, timeout: float = 30.0) -> dict[str, Any] | None:
    """GET `/model_info` or `/server_info` (`what`), falling back to the deprecated `/get_...` name that
    servers before 0.5.6 have; None when a server has neither."""
    for path in (f"/{what}", f"/get_{what}"):
        try:
            response = requests.get(url + path, headers=headers(api_key), timeout=timeout)
        except requests.RequestException as error:
            raise ServerLaunchError(f"server at {url}: GET {path} failed: {error}") from error
        if response.status_code != 404:
            if response.status_code != 200:
                raise ServerLaunchError(f"server at {url}: GET {path}: HTTP {response.status_code}: "
                                        f"{response.text[:300]}")
            try:
                return response.json()
            except ValueError as error:
                raise ServerLaunchError(f"server at {url}: GET {path} did not answer JSON: "
                                        f"{response.text[:200]!r}") from error
    return None


def router_health_flags(url: str, api_key: str | None) -> list[str]:
    """sglang-router polls `/health`. From 0.5.6 (the release that adds `/model_info`) the servers'
    SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=0 makes it answer without generating; an older server
    (404 for `/model_info`) always generates there, so the router's polling is turned off and the
    pool's own monitor restarts servers that die."""
    try:
        status = requests.get(url + "/model_info", headers=headers(api_key), timeout=30).status_code
    except requests.RequestException as error:
        raise ServerLaunchError(f"server at {url}: GET /model_info failed: {error}") from error
    return ["--disable-health-check"] if status == 404 else []


def server_flags(server_args: dict[str, Any]) -> list[str]:
    """`{"tp_size": 2, "enable_memory_saver": True}` -> `--tp-size 2 --enable-memory-saver`
    (SGLang's own option names; False/None are left out, lists become several values)."""
    flags: list[str] = []
    for key, value in server_args.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            flags.append(flag)
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):
            import json

            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


try:
    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the parent dies (even by SIGKILL)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_healthy(url: str, *, api_key: str | None, timeout: float, process: subprocess.Popen | None = None,
                 what: str = "server", log_path: Path | None = None) -> None:
    """Poll `url/health` until it answers 200; raise naming the server if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerLaunchError(f"{what} at {url} exited with code {process.returncode} while starting"
                                    + (f"; see {log_path}" if log_path else ""))
        try:
            if requests.get(url + "/health", headers=headers(api_key), timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise ServerLaunchError(f"{what} at {url} was not healthy after {timeout:.0f} s"
                            + (f"; see {log_path}" if log_path else ""))


@dataclass
class Server:
    """One launched (or external) server and its lifecycle state."""

    index: int
    url: str
    port: int | None
    command: list[str] = field(default_factory=list)
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    restarts: int = 0
    version: str | None = None  # SGLang's release, from /server_info
    ready: threading.Event = field(default_factory=threading.Event)  # healthy and weights current

    def is_down(self) -> bool:
        """Dead or being restarted: requests to it fail for a while, then it comes back."""
        return not self.ready.is_set() or (self.process is not None and self.process.poll() is not None)


class ServerPool:
    """Owns the server processes and the router; a monitor thread restarts servers that die."""

    def __init__(self, config: SGLangConfig, model_path: str, *, log_dir: str | Path,
                 on_restart: Callable[[Server], None] | None = None, startup_timeout: float = 900.0,
                 env: dict[str, str] | None = None, monitor_interval: float = 0.5) -> None:
        self.config = config
        self.model_path = str(model_path)
        self.log_dir = Path(log_dir)
        self.on_restart = on_restart
        self.startup_timeout = startup_timeout
        self.monitor_interval = monitor_interval
        self.env = server_env(dict(os.environ), env)
        self.servers: list[Server] = []
        self.router: subprocess.Popen | None = None
        self.router_url: str | None = None
        self._router_command: list[str] = []
        self._closing = threading.Event()
        self._monitor: threading.Thread | None = None
        self._restart_lock = threading.Lock()

    # ----- launching -------------------------------------------------------------------------
    def tp_size(self) -> int:
        """Each server's tensor-parallel size, under SGLang's names `tp_size` / `tensor_parallel_size`."""
        args = self.config.server_args
        return int(args.get("tp_size", args.get("tensor_parallel_size", 1)))

    def _command(self, index: int, port: int) -> list[str]:
        args = dict(self.config.server_args)
        launcher = shlex.split(self.config.launch_command)
        if "sglang.launch_server" in self.config.launch_command:
            # `base_gpu_id` names the fleet's first GPU; servers sit side by side from there.
            args["base_gpu_id"] = int(args.get("base_gpu_id", 0)) + index * self.tp_size()
        command = launcher + ["--model-path", self.model_path, "--host", self.config.host, "--port", str(port)]
        if self.config.api_key:
            command += ["--api-key", self.config.api_key]
        if self.config.deterministic_inference:
            args.setdefault("enable_deterministic_inference", True)
        return command + server_flags(args)

    def _popen(self, command: list[str], log_path: Path) -> subprocess.Popen:
        """Start a child in its own process group. Linux delivers the parent-death signal when the
        spawning *thread* exits, so it is asked for only from threads that live as long as the pool."""
        lasting = threading.current_thread() in (threading.main_thread(), self._monitor)
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True, preexec_fn=_die_with_parent if lasting else None)

    def _spawn(self, server: Server) -> None:
        assert server.log_path is not None
        server.process = self._popen(server.command, server.log_path)

    def start(self) -> None:
        """Launch every server (or adopt `config.urls`), wait for health, then the router."""
        _register_for_shutdown(self)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.config.urls:
            self.servers = [Server(index=i, url=url.rstrip("/"), port=None)
                            for i, url in enumerate(self.config.urls)]
        else:
            for index in range(self.config.num_servers):
                port = self.config.base_port + index
                if not port_is_free(self.config.host, port):
                    raise ServerLaunchError(f"server {index}: port {port} on {self.config.host} is in use "
                                            f"(set rollout.sglang.base_port)")
                server = Server(index=index, url=f"http://{self.config.host}:{port}", port=port,
                                command=self._command(index, port),
                                log_path=self.log_dir / f"server_{index}.log")
                log.info("starting server %d: %s", index, shlex.join(server.command))
                self._spawn(server)
                self.servers.append(server)
        try:
            for server in self.servers:
                wait_healthy(server.url, api_key=self.config.api_key, timeout=self.startup_timeout,
                             process=server.process, what=f"server {server.index}", log_path=server.log_path)
                server.ready.set()
                try:
                    server.version = str((info(server.url, "server_info", self.config.api_key) or {}).get("version"))
                    log.info("server %d at %s: SGLang %s", server.index, server.url, server.version)
                except ServerLaunchError as error:  # only for the log: the server is healthy
                    log.warning("%s", error)
            if len(self.servers) > 1 and self.config.router:
                self._start_router()
        except BaseException:
            self.close()
            raise
        if any(s.process is not None for s in self.servers):
            self._monitor = threading.Thread(target=self._watch, name="sglang-monitor", daemon=True)
            self._monitor.start()

    def _start_router(self) -> None:
        port = self.config.router_port
        if not port_is_free(self.config.host, port):
            raise ServerLaunchError(f"router: port {port} on {self.config.host} is in use "
                                    f"(set rollout.sglang.router_port)")
        self._router_command = [
            sys.executable, "-m", "sglang_router.launch_router", "--host", self.config.host,
            "--port", str(port), "--worker-urls", *[s.url for s in self.servers],
            "--policy", "cache_aware", "--prometheus-port", str(free_port(self.config.host)),
            "--prometheus-host", self.config.host, "--health-check-interval-secs", "2",
            *router_health_flags(self.servers[0].url, self.config.api_key),
            "--request-timeout-secs", str(int(self.config.request_timeout)), "--log-level", "warn"]
        if self.config.api_key:
            self._router_command += ["--api-key", self.config.api_key]
        self.router_url = f"http://{self.config.host}:{port}"
        self._launch_router()

    def _launch_router(self) -> None:
        log_path = self.log_dir / "router.log"
        self.router = self._popen(self._router_command, log_path)
        assert self.router_url is not None
        wait_healthy(self.router_url, api_key=self.config.api_key, timeout=120.0, process=self.router,
                     what="sglang-router", log_path=log_path)

    # ----- what clients use ------------------------------------------------------------------
    @property
    def server_urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def generate_urls(self) -> list[str]:
        """Where generation requests go: the router when there is one, else the ready servers."""
        if self.router_url is not None:
            return [self.router_url]
        ready = [s.url for s in self.servers if not s.is_down()]
        return ready or self.server_urls

    def server(self, url: str) -> Server | None:
        return next((s for s in self.servers if s.url == url), None)

    def is_down(self, url: str) -> bool:
        server = self.server(url)
        return server is not None and server.is_down()

    def wait_ready(self, url: str, timeout: float) -> bool:
        """Block until the server behind `url` is back (True at once for the router or unknown urls)."""
        server = self.server(url)
        return True if server is None else server.ready.wait(timeout)

    # ----- restarts --------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._closing.wait(self.monitor_interval):
            for server in self.servers:
                if server.process is not None and server.process.poll() is not None and not self._closing.is_set():
                    self.restart(server)
            if self.router is not None and self.router.poll() is not None and not self._closing.is_set():
                log.warning("sglang-router exited with code %s; restarting", self.router.returncode)
                try:
                    self._launch_router()
                except ServerLaunchError:
                    log.exception("restarting sglang-router failed; will try again")

    def restart(self, server: Server) -> None:
        """Relaunch a dead server on its port, wait for health, resynchronise its weights."""
        with self._restart_lock:
            server.ready.clear()
            code = server.process.returncode if server.process else None
            log.warning("server %d (%s) exited with code %s; restarting", server.index, server.url, code)
            _kill_group(server.process)
            deadline = time.monotonic() + 30
            while server.port is not None and not port_is_free(self.config.host, server.port) \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            self._spawn(server)
            server.restarts += 1
            try:
                wait_healthy(server.url, api_key=self.config.api_key, timeout=self.startup_timeout,
                             process=server.process, what=f"server {server.index}", log_path=server.log_path)
                if self.on_restart is not None:
                    self.on_restart(server)
            except Exception:
                log.exception("restarting server %d failed; will try again", server.index)
                _kill_group(server.process)
                return
            server.ready.set()
            log.warning("server %d is back (restart %d)", server.index, server.restarts)

    # ----- shutdown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the monitor, the router and every launched server (their whole process groups)."""
        self._closing.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=10)
        _kill_group(self.router)
        self.router = None
        for server in self.servers:
            _kill_group(server.process)
            server.ready.clear()


def _kill_group(process: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the process group of a child started with `start_new_session`, then SIGKILL."""
    if process is None or process.poll() is not None:
        if process is not None:
            process.wait()
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


_POOLS: weakref.WeakSet[ServerPool] = weakref.WeakSet()
_SIGNALS_INSTALLED = False


def _shutdown_all() -> None:
    for pool in list(_POOLS):
        pool.close()


def _on_sigterm(signum: int, frame: Any) -> None:
    _shutdown_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _register_for_shutdown(pool: ServerPool) -> None:
    """atexit for normal exits and Ctrl-C; a SIGTERM handler when the program has none of its own."""
    global _SIGNALS_INSTALLED
    _POOLS.add(pool)
    if _SIGNALS_INSTALLED:
        return
    atexit.register(_shutdown_all)
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    _SIGNALS_INSTALLED = True
