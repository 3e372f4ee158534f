// Fused scoring of one SPICE iteration: verdict matrix -> rewards, Dr. GRPO advantages of both roles,
// and per-token advantages. The per-element functions below are shared verbatim by the CPU twin
// (scoring_cpu.cpp) and the CUDA kernel (scoring_cuda.cu): float32 throughout, one fixed operation
// order, IEEE round-to-nearest intrinsics on the device and no contraction into FMA on either side,
// so both give bitwise identical results.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define SPICE_HD __host__ __device__ __forceinline__
#else
#define SPICE_HD inline
#endif

namespace spice::scoring {

constexpr int kMaxGroupSize = 512;     // G limit: the challenger reward table travels in the kernel parameters
constexpr int64_t kMaxCudaTasks = 12288;  // T limit on the GPU: per-task correct counts live in shared memory

struct ScoreParams {
  const int8_t* verdicts = nullptr;       // [T, G], 1 correct
  const uint8_t* task_valid = nullptr;    // [T]
  const int32_t* challenger_group = nullptr;  // [T]
  const int64_t* sequence_source = nullptr;   // [S], index into concat(challenger_adv[T], reasoner_adv[T*G]) or -1
  const float* loss_mask = nullptr;       // [S, L]
  float* reasoner_rewards = nullptr;      // [T, G]
  float* challenger_rewards = nullptr;    // [T]
  float* reasoner_advantages = nullptr;   // [T, G]
  float* challenger_advantages = nullptr; // [T]
  float* token_advantages = nullptr;      // [S, L]
  int64_t tasks = 0, group_size = 0, sequences = 0, tokens = 0;
  float invalid_penalty = -0.1f;
  float eps = 1e-6f;
  int std_normalize = 0;
  float challenger_table[kMaxGroupSize + 1] = {};  // challenger reward of a valid task with c correct answers
};

SPICE_HD float f_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
SPICE_HD float f_sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
SPICE_HD float f_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SPICE_HD float f_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
SPICE_HD float f_sqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

SPICE_HD int32_t correct_count(const ScoreParams& p, int64_t t) {
  int32_t c = 0;
  for (int64_t g = 0; g < p.group_size; ++g) c += p.verdicts[t * p.group_size + g] == 1 ? 1 : 0;
  return c;
}

SPICE_HD float challenger_reward(const ScoreParams& p, const int32_t* counts, int64_t t) {
  return p.task_valid[t] ? p.challenger_table[counts[t]] : p.invalid_penalty;
}

// Reward minus the mean over the task's challenger group (tasks summed in index order); optionally
// divided by (population std + eps).
SPICE_HD float challenger_advantage(const ScoreParams& p, const int32_t* counts, int64_t t) {
  const int32_t group = p.challenger_group[t];
  float sum = 0.0f;
  int32_t n = 0;
  for (int64_t u = 0; u < p.tasks; ++u) {
    if (p.challenger_group[u] == group) {
      sum = f_add(sum, challenger_reward(p, counts, u));
      ++n;
    }
  }
  const float mean = f_div(sum, static_cast<float>(n));
  float adv = f_sub(challenger_reward(p, counts, t), mean);
  if (p.std_normalize) {
    float sq = 0.0f;
    for (int64_t u = 0; u < p.tasks; ++u) {
      if (p.challenger_group[u] == group) {
        const float d = f_sub(challenger_reward(p, counts, u), mean);
        sq = f_add(sq, f_mul(d, d));
      }
    }
    adv = f_div(adv, f_add(f_sqrt(f_div(sq, static_cast<float>(n))), p.eps));
  }
  return adv;
}

SPICE_HD float reasoner_reward(const ScoreParams& p, int64_t t, int64_t g) {
  return p.task_valid[t] && p.verdicts[t * p.group_size + g] == 1 ? 1.0f : 0.0f;
}

// Reward minus the mean over the task's G answers (0 for an invalid task); optionally divided by
// (population std + eps), which for 0/1 rewards is sqrt(mean * (1 - mean)).
SPICE_HD float reasoner_advantage(const ScoreParams& p, const int32_t* counts, int64_t t, int64_t g) {
  if (!p.task_valid[t]) return 0.0f;
  const float mean = f_div(static_cast<float>(counts[t]), static_cast<float>(p.group_size));
  float adv = f_sub(reasoner_reward(p, t, g), mean);
  if (p.std_normalize) adv = f_div(adv, f_add(f_sqrt(f_mul(mean, f_sub(1.0f, mean))), p.eps));
  return adv;
}

SPICE_HD float source_advantage(const ScoreParams& p, const int32_t* counts, int64_t src) {
  if (src < 0) return 0.0f;
  if (src < p.tasks) return challenger_advantage(p, counts, src);
  const int64_t k = src - p.tasks;
  if (k >= p.tasks * p.group_size) return 0.0f;
  return reasoner_advantage(p, counts, k / p.group_size, k % p.group_size);
}

// Host side (scoring_cpu.cpp / scoring_cuda.cu).
void score_cpu(const ScoreParams& p);
#ifdef SPICE_WITH_CUDA
const char* score_cuda(const ScoreParams& p, uintptr_t stream);  // nullptr on success, else the CUDA error
#endif

}  // namespace spice::scoring
