"""Process groups for the Megatron backend: torch.distributed from torchrun's environment, then
Megatron's tensor / pipeline / data-parallel groups. Both steps are idempotent."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from spice.config import MegatronConfig


@dataclass(frozen=True)
class Layout:
    """This rank's place in the TP x PP x DP grid."""

    rank: int
    world_size: int
    tp_size: int
    tp_rank: int
    pp_size: int
    pp_rank: int
    dp_size: int
    dp_rank: int

    @property
    def first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1


def check_world_size(world_size: int, tp: int, pp: int) -> int:
    """The data-parallel size, or a ValueError when the world does not factor into TP x PP x DP."""
    if tp < 1 or pp < 1:
        raise ValueError(f"train.megatron.tensor_model_parallel_size={tp} and pipeline_model_parallel_size={pp} "
                         "must be at least 1")
    if world_size % (tp * pp):
        raise ValueError(f"world size {world_size} does not factor into tensor_model_parallel_size={tp} x "
                         f"pipeline_model_parallel_size={pp} x data parallel; start a multiple of {tp * pp} "
                         "processes (torchrun --nproc_per_node / --nnodes) or change the parallel sizes")
    return world_size // (tp * pp)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_torch_distributed(timeout_minutes: float = 30.0) -> None:
    """Join the process group torchrun (or Slurm through torchrun) describes: NCCL on GPUs, gloo on
    CPU, with `timeout_minutes` (train.distributed_timeout_minutes) on every collective. A single
    process started without torchrun gets a one-rank group on localhost."""
    if dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if cuda else "gloo"
    timeout = timedelta(minutes=timeout_minutes)
    if "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend, timeout=timeout)
    else:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                                timeout=timeout)


def init_parallel(mcfg: MegatronConfig, seed: int, timeout_minutes: float = 30.0) -> Layout:
    """Initialise torch.distributed and Megatron's model-parallel groups (once) and return this
    rank's layout; a second call with other sizes is an error."""
    from megatron.core import parallel_state as ps

    init_torch_distributed(timeout_minutes)
    tp, pp = mcfg.tensor_model_parallel_size, mcfg.pipeline_model_parallel_size
    world = dist.get_world_size()
    dp = check_world_size(world, tp, pp)
    if ps.model_parallel_is_initialized():
        have = (ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size())
        if have != (tp, pp):
            raise RuntimeError(f"megatron parallel state already initialised with TP x PP = {have}, "
                               f"config asks for {(tp, pp)}")
    else:
        # megatron-core 0.13-0.16: the groups it creates get the same timeout (an int in its signature,
        # used as timedelta(minutes=...)).
        ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                     distributed_timeout_minutes=timeout_minutes)
        if torch.cuda.is_available():
            from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

            model_parallel_cuda_manual_seed(seed)
    return Layout(rank=dist.get_rank(), world_size=world, tp_size=tp, tp_rank=ps.get_tensor_model_parallel_rank(),
                  pp_size=pp, pp_rank=ps.get_pipeline_model_parallel_rank(), dp_size=dp,
                  dp_rank=ps.get_data_parallel_rank())
