#!/usr/bin/env bash
# Start `spice train` with the Megatron backend on this node; run the same command on every node.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 examples/torchrun_multinode.sh examples/megatron_multinode.yaml [key=value ...]
# One node: examples/torchrun_multinode.sh examples/megatron_8xh100.yaml (GPUS_PER_NODE=4 there).
# The rendezvous (c10d) is at MASTER_ADDR:MASTER_PORT; torchrun exports RANK / WORLD_SIZE / LOCAL_RANK /
# MASTER_ADDR, which the backend reads to join NCCL and build Megatron's TP x PP x DP groups.
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG.yaml [key=value ...]}
shift
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-spice}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export CUDA_DEVICE_MAX_CONNECTIONS=1   # Megatron's TP communication/computation overlap wants this
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1  # the current name (NCCL_ASYNC_ERROR_HANDLING is deprecated)

if [ "$NNODES" -gt 1 ]; then
  RDZV=(--nnodes "$NNODES" --node_rank "$NODE_RANK" --rdzv_id "$RDZV_ID" --rdzv_backend c10d
        --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT")
else
  RDZV=(--standalone --nnodes 1)
fi

exec torchrun "${RDZV[@]}" --nproc_per_node "$GPUS_PER_NODE" \
  -m spice.cli train --config "$CONFIG" train.backend=megatron "$@"
