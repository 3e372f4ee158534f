// CUDA kernel of the fused scoring: one launch computes the per-task rewards and advantages and the
// [S, L] per-token advantages. Every block first counts the correct answers of all tasks into shared
// memory (integers: order-free), then grid-strides over tasks for the per-task outputs and over rows
// for the token outputs; a row's advantage is computed once per block by the same function as the CPU
// twin, so the two agree bit for bit.
#include <cuda_runtime.h>

#include "scoring.h"

namespace spice::scoring {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

__global__ void score_kernel(const ScoreParams p) {
  extern __shared__ int32_t counts[];
  __shared__ float row_adv;
  for (int64_t t = threadIdx.x; t < p.tasks; t += blockDim.x) counts[t] = correct_count(p, t);
  __syncthreads();

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t t = first; t < p.tasks; t += stride) {
    p.challenger_rewards[t] = challenger_reward(p, counts, t);
    p.challenger_advantages[t] = challenger_advantage(p, counts, t);
  }
  for (int64_t k = first; k < p.tasks * p.group_size; k += stride) {
    const int64_t t = k / p.group_size, g = k % p.group_size;
    p.reasoner_rewards[k] = reasoner_reward(p, t, g);
    p.reasoner_advantages[k] = reasoner_advantage(p, counts, t, g);
  }

  for (int64_t s = blockIdx.x; s < p.sequences; s += gridDim.x) {
    if (threadIdx.x == 0) row_adv = source_advantage(p, counts, p.sequence_source[s]);
    __syncthreads();
    const float adv = row_adv;
    const float* mask = p.loss_mask + s * p.tokens;
    float* out = p.token_advantages + s * p.tokens;
    for (int64_t l = threadIdx.x; l < p.tokens; l += blockDim.x) out[l] = f_mul(adv, mask[l]);
    __syncthreads();
  }
}

}  // namespace

const char* score_cuda(const ScoreParams& p, uintptr_t stream) {
  int64_t blocks = p.sequences;
  const int64_t task_blocks = (p.tasks * p.group_size + kThreads - 1) / kThreads;
  if (task_blocks > blocks) blocks = task_blocks;
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  const size_t shared = static_cast<size_t>(p.tasks > 0 ? p.tasks : 1) * sizeof(int32_t);
  score_kernel<<<static_cast<unsigned>(blocks), kThreads, shared, reinterpret_cast<cudaStream_t>(stream)>>>(p);
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace spice::scoring
