"""Colocated weight sync: bucketed `/update_weights_from_tensor`, with the servers' memory released
while the trainer uses the same GPUs.

With CUDA tensors the payload is SGLang's own: each bucket is a list of `(name, tensor)` pickled with
torch's multiprocessing reducers (CUDA IPC handles, no copy), the device index replaced by the GPU's
UUID as SGLang's `monkey_patch_torch_reductions` expects, base64 text, one entry per tensor-parallel
rank, each pickled on its own (SGLang 0.5.23 `tp_worker.deserialize_own_rank`: every rank opens only its
entry, and a shared entry breaks the producer side's CUDA-IPC reference counting). The buckets run
inside a weight-update session (`weight_update_session`). Only handles cross HTTP; the tensors must stay alive until the server answers, which `push`
guarantees by holding each bucket until its request returns. With CPU tensors (the `spice serve`
stand-in) the payload is safetensors bytes in base64 with `load_format: "spice_safetensors"`: a
safe format, which SGLang itself does not accept.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable
from multiprocessing.reduction import ForkingPickler

import torch
import torch.multiprocessing  # noqa: F401  (registers torch's reducers with ForkingPickler)
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.multiprocessing import reductions

from spice.rollout.weight_sync.base import WeightSyncError, buckets, post_all, weight_update_session

SAFETENSORS_FORMAT = "spice_safetensors"


def _reduce_with_device_uuid(tensor: torch.Tensor):
    """torch's tensor reducer, with the CUDA device index swapped for the device UUID so that a
    receiver with another CUDA_VISIBLE_DEVICES opens the right GPU (what SGLang's patch reads)."""
    rebuild, args = reductions.reduce_tensor(tensor)
    if rebuild is reductions.rebuild_cuda_tensor:
        device = args[6]
        args = args[:6] + (str(torch.cuda.get_device_properties(device).uuid),) + args[7:]
    return rebuild, args


class _IPCPickler(ForkingPickler):
    _extra_reducers = dict(ForkingPickler._extra_reducers)


_IPCPickler.register(torch.Tensor, _reduce_with_device_uuid)
_IPCPickler.register(torch.nn.Parameter, _reduce_with_device_uuid)


def serialize_cuda_ipc(named_tensors: list[tuple[str, torch.Tensor]]) -> str:
    """SGLang's `MultiprocessingSerializer.serialize(..., output_str=True)` format for one rank."""
    buffer = io.BytesIO()
    _IPCPickler(buffer).dump(named_tensors)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def serialize_safetensors(named_tensors: list[tuple[str, torch.Tensor]]) -> str:
    """The stand-in's safe payload: one safetensors blob in base64."""
    data = {name: t.detach().to("cpu").contiguous() for name, t in named_tensors}
    return base64.b64encode(save_safetensors(data)).decode("ascii")


def deserialize_safetensors(payload: str) -> list[tuple[str, torch.Tensor]]:
    """Inverse of `serialize_safetensors`; raises ValueError on anything that is not such a blob."""
    try:
        raw = base64.b64decode(payload, validate=True)
        return list(load_safetensors(raw).items())
    except Exception as error:  # binascii.Error, SafetensorError: both mean a bad payload
        raise ValueError(f"not a base64 safetensors payload: {error}") from error


class TensorWeightSync:
    """Push buckets of tensors with `/update_weights_from_tensor`; flush only after the last one."""

    name = "tensor"

    def __init__(self, *, bucket_bytes: int = 512 << 20, tp_size: int = 1, api_key: str | None = None,
                 timeout: float = 600.0) -> None:
        self.bucket_bytes = bucket_bytes
        self.tp_size = tp_size
        self.api_key = api_key
        self.timeout = timeout

    def _payload(self, bucket: list[tuple[str, torch.Tensor]], version: int, last: bool) -> dict:
        if all(t.is_cuda for _, t in bucket):
            serialized = [serialize_cuda_ipc(bucket) for _ in range(self.tp_size)]
            load_format = None
        elif not any(t.is_cuda for _, t in bucket):
            serialized = [serialize_safetensors(bucket)]
            load_format = SAFETENSORS_FORMAT
        else:
            raise WeightSyncError("update_weights_from_tensor: a bucket mixes CUDA and CPU tensors")
        return {"serialized_named_tensors": serialized, "load_format": load_format,
                "flush_cache": last, "weight_version": str(version)}

    def push(self, urls: list[str], named_tensors: Iterable[tuple[str, torch.Tensor]], version: int,
             skip: Callable[[str], bool] = lambda url: False) -> int:
        """Stream the tensors bucket by bucket (at most two buckets alive) inside one session."""
        sent = 0
        pending = None
        with weight_update_session(urls, api_key=self.api_key, timeout=self.timeout, skip=skip):
            for bucket in buckets(named_tensors, self.bucket_bytes):
                if pending is not None:
                    post_all(urls, "/update_weights_from_tensor", self._payload(pending, version, False),
                             api_key=self.api_key, timeout=self.timeout, skip=skip)
                pending = bucket
                sent += sum(t.numel() * t.element_size() for _, t in bucket)
            if pending is not None:
                post_all(urls, "/update_weights_from_tensor", self._payload(pending, version, True),
                         api_key=self.api_key, timeout=self.timeout, skip=skip)
        return sent

    def reset(self) -> None:
        """Nothing per server: every push is self-contained."""

    def close(self) -> None:
        """Nothing held between pushes."""
