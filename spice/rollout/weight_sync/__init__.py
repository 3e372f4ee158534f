"""Weight-sync transports, one per file behind `WeightSync` (base.py): disk, tensor (colocated),
distributed (NCCL group)."""

from spice.rollout.weight_sync.base import WeightSync, WeightSyncError
from spice.rollout.weight_sync.disk import DiskWeightSync
from spice.rollout.weight_sync.distributed import DistributedWeightSync
from spice.rollout.weight_sync.tensor import TensorWeightSync

__all__ = ["DiskWeightSync", "DistributedWeightSync", "TensorWeightSync", "WeightSync", "WeightSyncError"]
