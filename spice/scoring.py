"""Scoring of one SPICE iteration in one call: the verdict matrix [T, G] and task validity become the
reasoner and challenger rewards, Dr. GRPO advantages of both roles and the per-token advantages of the
padded [S, L] training batch. `score_iteration` runs the compiled CPU twin or the CUDA kernel (csrc/),
`score_iteration_reference` is the plain-Python specification both must match bit for bit.

"Identical" means bitwise equal float32 outputs: every quantity is float32, computed in one fixed
order (group sums in task order), with IEEE round-to-nearest operations and no fused multiply-add on
either side; the challenger's Gaussian is taken from `spice.rewards.challenger_reward` (double) for each
possible count of correct answers and rounded to float32 once, so all three agree exactly.

Cost is O(T*G + S*L) on both sides: challenger groups are made dense here (torch.unique) and listed
group by group in task order, so each group's sum is one pass in the order the reference sums it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from spice.rewards import INVALID_TASK_PENALTY, challenger_reward

try:
    from spice import _C
except ImportError:
    _C = None

DEFAULT_EPS = 1e-6


class Scores(NamedTuple):
    """Everything the loss needs from one iteration's verdicts (float32 tensors)."""

    reasoner_rewards: torch.Tensor  # [T, G], 0 for invalid tasks
    challenger_rewards: torch.Tensor  # [T], the Gaussian of p(1-p), or the penalty for invalid tasks
    reasoner_advantages: torch.Tensor  # [T, G], reward minus the mean over the task's G answers
    challenger_advantages: torch.Tensor  # [T], reward minus the mean over the task's challenger group
    token_advantages: torch.Tensor  # [S, L], the source advantage of each sequence times its loss mask


def challenger_table(group_size: int) -> np.ndarray:
    """float32 challenger reward of a valid task for each count 0..G of correct answers."""
    return np.array([challenger_reward([1] * c + [0] * (group_size - c)) for c in range(group_size + 1)],
                    dtype=np.float32)


def _check(verdicts: torch.Tensor, task_valid: torch.Tensor, challenger_group: torch.Tensor,
           sequence_source: torch.Tensor, loss_mask: torch.Tensor) -> tuple[int, int, int, int]:
    if verdicts.dim() != 2:
        raise ValueError(f"score_iteration: verdicts must be [T, G], got shape {tuple(verdicts.shape)}")
    if loss_mask.dim() != 2:
        raise ValueError(f"score_iteration: loss_mask must be [S, L], got shape {tuple(loss_mask.shape)}")
    t, g = verdicts.shape
    s, n_tokens = loss_mask.shape
    for name, x, shape in (("task_valid", task_valid, (t,)), ("challenger_group", challenger_group, (t,)),
                           ("sequence_source", sequence_source, (s,))):
        if tuple(x.shape) != shape:
            raise ValueError(f"score_iteration: {name} must have shape {shape}, got {tuple(x.shape)}")
    devices = {x.device for x in (verdicts, task_valid, challenger_group, sequence_source, loss_mask)}
    if len(devices) != 1:
        raise ValueError(f"score_iteration: all inputs must be on one device, got {sorted(map(str, devices))}")
    if t > 0 and g < 1:
        raise ValueError("score_iteration: verdicts need at least one answer per task (G >= 1)")
    if s > 0 and sequence_source.numel() and (int(sequence_source.min()) < -1
                                              or int(sequence_source.max()) >= t + t * g):
        raise ValueError(f"score_iteration: sequence_source values must lie in [-1, {t + t * g}) "
                         f"(T + T*G sources), got [{int(sequence_source.min())}, {int(sequence_source.max())}]")
    return t, g, s, n_tokens


def _dense_groups(challenger_group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense group index [T], task ids ordered by group (task order inside a group) [T], offsets [groups + 1]."""
    _, index = torch.unique(challenger_group, return_inverse=True)
    groups = int(index.max()) + 1 if index.numel() else 0
    members = torch.sort(index, stable=True).indices
    offsets = torch.zeros(groups + 1, dtype=torch.int64, device=index.device)
    offsets[1:] = torch.cumsum(torch.bincount(index, minlength=groups), 0)
    return tuple(x.to(torch.int32).contiguous() for x in (index, members, offsets))


def score_iteration(verdicts: torch.Tensor, task_valid: torch.Tensor, challenger_group: torch.Tensor,
                    sequence_source: torch.Tensor, loss_mask: torch.Tensor,
                    invalid_penalty: float = INVALID_TASK_PENALTY, std_normalize: bool = False,
                    eps: float = DEFAULT_EPS) -> Scores:
    """Rewards and advantages of one iteration in one fused call: the CUDA kernel for CUDA tensors (on
    the current stream), the compiled CPU twin otherwise. Inputs: verdicts int8 [T, G] (1 correct),
    task_valid bool [T], challenger_group int32 [T], sequence_source int64 [S] (index into
    concat(challenger_advantages[T], reasoner_advantages[T*G] row-major) or -1), loss_mask float32 [S, L]."""
    if _C is None:
        raise RuntimeError("score_iteration: spice._C is not built; install the package (pip install -e .)")
    t, g, s, n_tokens = _check(verdicts, task_valid, challenger_group, sequence_source, loss_mask)
    device = verdicts.device
    v = verdicts.to(torch.int8).contiguous()
    valid = task_valid.to(torch.bool).contiguous()
    group = challenger_group.to(torch.int32).contiguous()
    source = sequence_source.to(torch.int64).contiguous()
    mask = loss_mask.to(torch.float32).contiguous()
    out = Scores(*(torch.empty(shape, dtype=torch.float32, device=device)
                   for shape in ((t, g), (t,), (t, g), (t,), (s, n_tokens))))
    table = challenger_table(g).tolist()
    index, members, offsets = _dense_groups(group)
    if device.type == "cuda":
        # scratch on the launch stream: the caching allocator reuses it only after these kernels
        scratch = (torch.empty(t, dtype=torch.int32, device=device),
                   *(torch.empty(offsets.numel() - 1, dtype=torch.float32, device=device) for _ in range(2)))
        with torch.cuda.device(device):  # the kernels launch on the inputs' GPU, whichever is current
            stream = torch.cuda.current_stream(device).cuda_stream
            _C.score_iteration_cuda(v.data_ptr(), valid.data_ptr(), index.data_ptr(), members.data_ptr(),
                                    offsets.data_ptr(), source.data_ptr(), mask.data_ptr(),
                                    *(x.data_ptr() for x in out), *(x.data_ptr() for x in scratch), t, g, s,
                                    n_tokens, offsets.numel() - 1, table, float(invalid_penalty),
                                    bool(std_normalize), float(eps), device.index, stream)
    elif device.type == "cpu":
        _C.score_iteration_cpu(v.numpy(), valid.view(torch.uint8).numpy(), index.numpy(), members.numpy(),
                               offsets.numpy(), source.numpy(), mask.numpy(), table, *(x.numpy() for x in out),
                               float(invalid_penalty), bool(std_normalize), float(eps))
    else:
        raise ValueError(f"score_iteration: unsupported device {device}")
    return out


def score_iteration_reference(verdicts: torch.Tensor, task_valid: torch.Tensor, challenger_group: torch.Tensor,
                              sequence_source: torch.Tensor, loss_mask: torch.Tensor,
                              invalid_penalty: float = INVALID_TASK_PENALTY, std_normalize: bool = False,
                              eps: float = DEFAULT_EPS) -> Scores:
    """Plain-Python specification of `score_iteration`: `spice.rewards.challenger_reward` for the
    challenger, a group-mean baseline per role (Dr. GRPO), float32 scalars in a fixed order."""
    t, g, s, n_tokens = _check(verdicts, task_valid, challenger_group, sequence_source, loss_mask)
    f32, eps32 = np.float32, np.float32(eps)
    v = verdicts.cpu().numpy().astype(np.int8)
    valid = task_valid.cpu().numpy().astype(bool)
    group = challenger_group.cpu().numpy().astype(np.int64)
    rr = np.zeros((t, g), np.float32)
    ra = np.zeros((t, g), np.float32)
    cr = np.zeros(t, np.float32)
    for i in range(t):
        correct = [int(x == 1) for x in v[i]]
        cr[i] = f32(challenger_reward(correct, bool(valid[i]), invalid_penalty))
        if not valid[i]:
            continue
        mean = f32(sum(correct)) / f32(g)
        std = np.sqrt(mean * (f32(1.0) - mean))
        for j in range(g):
            rr[i, j] = f32(correct[j])
            ra[i, j] = rr[i, j] - mean
            if std_normalize:
                ra[i, j] = ra[i, j] / (std + eps32)
    ca = np.zeros(t, np.float32)
    for i in range(t):
        members = [u for u in range(t) if group[u] == group[i]]
        total = f32(0.0)
        for u in members:
            total = total + cr[u]
        mean = total / f32(len(members))
        ca[i] = cr[i] - mean
        if std_normalize:
            sq = f32(0.0)
            for u in members:
                d = cr[u] - mean
                sq = sq + d * d
            ca[i] = ca[i] / (np.sqrt(sq / f32(len(members))) + eps32)
    sources = np.concatenate([ca, ra.reshape(-1)])
    mask = loss_mask.cpu().numpy().astype(np.float32)
    src = sequence_source.cpu().numpy()
    tok = np.zeros((s, n_tokens), np.float32)
    for k in range(s):
        adv = sources[src[k]] if src[k] >= 0 else f32(0.0)
        tok[k] = adv * mask[k]
    return Scores(*(torch.from_numpy(x) for x in (rr, cr, ra, ca, tok)))
