"""Disaggregated weight sync: one process group between a trainer rank and every server GPU, then
bucketed `/update_weights_from_distributed` calls while the trainer broadcasts each tensor.

Protocol (SGLang's native API): the trainer is rank 0 of a group of `1 + sum(tp sizes)` ranks; server
`i` joins with `rank_offset = 1 + sum(tp sizes before i)` through `/init_weights_update_group`. For
each bucket the trainer POSTs the names, dtypes and shapes and, while those requests wait, broadcasts
the tensors from rank 0 in the same order. With pipeline parallelism, rank 0 of every stage builds
its own group (`group_name` differs per stage) and sends the layers it holds. The buckets run inside
a weight-update session (SGLang 0.5.21+ answers success=false outside one, before joining the
broadcast, which would leave the trainer blocked in it until the group timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import torch
import torch.distributed as dist

from spice.rollout.weight_sync.base import WeightSyncError, buckets, post_all, weight_update_session


def init_custom_group(*, backend: str, master_address: str, master_port: int, world_size: int, rank: int,
                      group_name: str, timeout: float = 600.0) -> dist.ProcessGroup:
    """A process group outside the default one, built the way SGLang's `init_custom_process_group`
    builds its side (tcp rendezvous, store prefixed by the group name), so both sides meet."""
    from torch.distributed.distributed_c10d import (
        Backend,
        PrefixStore,
        _new_process_group_helper,
        _world,
        rendezvous,
    )

    delta = timedelta(seconds=timeout)
    init_method = f"tcp://{master_address}:{master_port}"
    store, rank, world_size = next(rendezvous(init_method, rank, world_size, timeout=delta))
    store.set_timeout(delta)
    store = PrefixStore(group_name, store)
    group, _ = _new_process_group_helper(world_size, rank, [], Backend(backend), store,
                                         group_name=group_name, timeout=delta)
    _world.pg_group_ranks[group] = {i: i for i in range(world_size)}
    return group


class DistributedWeightSync:
    """The trainer side of the NCCL (or, on CPU, gloo) weight-update group."""

    name = "distributed"

    def __init__(self, *, master_address: str, master_port: int, tp_sizes: list[int],
                 group_name: str = "spice_weight_update", backend: str | None = None,
                 bucket_bytes: int = 512 << 20, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.master_address = master_address
        self.master_port = master_port
        self.tp_sizes = tp_sizes
        self.group_name = group_name
        self.backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" \
            else torch.device("cpu")
        self.bucket_bytes = bucket_bytes
        self.api_key = api_key
        self.timeout = timeout
        self.group: dist.ProcessGroup | None = None
        self.urls: list[str] = []

    def _ensure_group(self, urls: list[str]) -> None:
        if self.group is not None and urls == self.urls:
            return
        if len(urls) != len(self.tp_sizes):
            raise WeightSyncError(f"distributed weight sync: {len(urls)} servers but tp sizes {self.tp_sizes}")
        self.reset()
        world_size = 1 + sum(self.tp_sizes)
        offsets = [1 + sum(self.tp_sizes[:i]) for i in range(len(urls))]

        def payload(index: int) -> dict:
            return {"master_address": self.master_address, "master_port": self.master_port,
                    "rank_offset": offsets[index], "world_size": world_size,
                    "group_name": self.group_name, "backend": self.backend}

        with ThreadPoolExecutor(max_workers=1) as pool:
            joined = pool.submit(post_all, urls, "/init_weights_update_group", payload,
                                 api_key=self.api_key, timeout=self.timeout)
            try:
                self.group = init_custom_group(backend=self.backend, master_address=self.master_address,
                                               master_port=self.master_port, world_size=world_size, rank=0,
                                               group_name=self.group_name, timeout=self.timeout)
            except Exception as error:
                raise WeightSyncError(f"distributed weight sync: could not form group {self.group_name!r} "
                                      f"at {self.master_address}:{self.master_port}: {error}") from error
            joined.result()
        self.urls = list(urls)

    def _send_bucket(self, urls: list[str], bucket: list[tuple[str, torch.Tensor]], version: int,
                     last: bool) -> None:
        payload = {
            "names": [name for name, _ in bucket],
            "dtypes": [str(t.dtype).removeprefix("torch.") for _, t in bucket],
            "shapes": [list(t.shape) for _, t in bucket],
            "group_name": self.group_name, "flush_cache": last, "weight_version": str(version),
        }
        with ThreadPoolExecutor(max_workers=1) as pool:
            received = pool.submit(post_all, urls, "/update_weights_from_distributed", payload,
                                   api_key=self.api_key, timeout=self.timeout)
            sent = [tensor.detach().to(self.device).contiguous() for _, tensor in bucket]
            works = [dist.broadcast(tensor, src=0, group=self.group, async_op=True) for tensor in sent]
            while not all(work.is_completed() for work in works):
                if received.done() and received.exception() is not None:
                    # A server refused before joining the broadcast, which would never finish: report it
                    # now. The group is dropped; its pending broadcast ends at the group's timeout.
                    self.group, self.urls = None, []
                    raise WeightSyncError(f"distributed weight sync: {received.exception()}") from received.exception()
                time.sleep(0.002)
            for work in works:
                work.wait()
            received.result()

    def push(self, urls: list[str], named_tensors: Iterable[tuple[str, torch.Tensor]], version: int,
             skip: Callable[[str], bool] = lambda url: False) -> int:
        """Every server must take part in each broadcast, so none can be skipped: a failure raises."""
        self._ensure_group(urls)
        sent = 0
        pending = None
        with weight_update_session(urls, api_key=self.api_key, timeout=self.timeout):
            for bucket in buckets(named_tensors, self.bucket_bytes):
                if pending is not None:
                    self._send_bucket(urls, pending, version, last=False)
                pending = bucket
                sent += sum(t.numel() * t.element_size() for _, t in bucket)
            if pending is not None:
                self._send_bucket(urls, pending, version, last=True)
        return sent

    def reset(self) -> None:
        """Tear the group down (e.g. after a server restart); the next push builds a new one."""
        if self.group is None:
            return
        try:
            post_all(self.urls, "/destroy_weights_update_group", {"group_name": self.group_name},
                     api_key=self.api_key, timeout=30.0, skip=lambda url: True)
        finally:
            dist.destroy_process_group(self.group)
            self.group = None
            self.urls = []

    def close(self) -> None:
        self.reset()
