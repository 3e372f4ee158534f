// CUDA kernels of the fused scoring, three launches on one stream, each O(its output):
//   1. one block per task (grid-stride): correct count (integer atomics in shared memory, order-free),
//      challenger reward, the G reasoner rewards and advantages;
//   2. one thread per challenger group: mean (and std) of its rewards, summed in task order;
//   3. grid-stride over tasks for challenger advantages, one block per row (grid-stride) for the
//      per-token advantages, every thread computing its row's O(1) source advantage itself.
// The per-element functions are the CPU twin's (scoring.h), so both agree bit for bit. No shared
// memory scales with T or G, so any T the API accepts launches; every CUDA call is checked.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>

#include "scoring.h"

namespace spice::scoring {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;

__global__ void task_kernel(const ScoreParams p) {
  __shared__ int32_t count;
  for (int64_t t = blockIdx.x; t < p.tasks; t += gridDim.x) {
    if (threadIdx.x == 0) count = 0;
    __syncthreads();
    int32_t mine = 0;
    for (int64_t g = threadIdx.x; g < p.group_size; g += blockDim.x) mine += p.verdicts[t * p.group_size + g] == 1;
    if (mine) atomicAdd(&count, mine);
    __syncthreads();
    if (threadIdx.x == 0) {
      p.counts[t] = count;
      p.challenger_rewards[t] = challenger_reward(p, t);
    }
    __syncthreads();  // counts[t] is read below by every thread of this block
    for (int64_t g = threadIdx.x; g < p.group_size; g += blockDim.x) {
      const int64_t k = t * p.group_size + g;
      p.reasoner_rewards[k] = reasoner_reward(p, t, g);
      p.reasoner_advantages[k] = reasoner_advantage(p, t, g);
    }
  }
}

__global__ void group_kernel(const ScoreParams p) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t grp = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; grp < p.groups; grp += stride) {
    group_statistics(p, grp);
  }
}

__global__ void finish_kernel(const ScoreParams p) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < p.tasks; t += stride) {
    p.challenger_advantages[t] = challenger_advantage(p, t);
  }
  for (int64_t s = blockIdx.x; s < p.sequences; s += gridDim.x) {
    const float adv = source_advantage(p, p.sequence_source[s]);
    const float* mask = p.loss_mask + s * p.tokens;
    float* out = p.token_advantages + s * p.tokens;
    for (int64_t l = threadIdx.x; l < p.tokens; l += blockDim.x) out[l] = f_mul(adv, mask[l]);
  }
}

unsigned blocks_for(int64_t work) { return static_cast<unsigned>(std::clamp<int64_t>(work, 1, kMaxBlocks)); }

thread_local char error_message[256];

const char* failed(const char* what, cudaError_t err) {
  std::snprintf(error_message, sizeof(error_message), "%s: %s", what, cudaGetErrorString(err));
  return error_message;
}

}  // namespace

const char* score_cuda(const ScoreParams& p, int device, uintptr_t stream_handle) {
  int previous = 0;
  cudaError_t err = cudaGetDevice(&previous);
  if (err != cudaSuccess) return failed("cudaGetDevice", err);
  if (previous != device && (err = cudaSetDevice(device)) != cudaSuccess) return failed("cudaSetDevice", err);
  const char* result = nullptr;
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  if ((err = cudaGetLastError()) != cudaSuccess) {  // an earlier asynchronous error would be misattributed
    result = failed("pending error before the scoring launch", err);
  }
  if (result == nullptr && p.tasks > 0) {
    task_kernel<<<blocks_for(p.tasks), 128, 0, stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess) result = failed("task_kernel launch", err);
  }
  if (result == nullptr && p.groups > 0) {
    group_kernel<<<blocks_for((p.groups + 127) / 128), 128, 0, stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess) result = failed("group_kernel launch", err);
  }
  if (result == nullptr && (p.tasks > 0 || p.sequences > 0)) {
    const int64_t work = std::max(p.sequences, (p.tasks + kThreads - 1) / kThreads);
    finish_kernel<<<blocks_for(work), kThreads, 0, stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess) result = failed("finish_kernel launch", err);
  }
  if (previous != device && (err = cudaSetDevice(previous)) != cudaSuccess && result == nullptr) {
    result = failed("cudaSetDevice (restore)", err);
  }
  return result;
}

}  // namespace spice::scoring
