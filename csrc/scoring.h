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

constexpr int kMaxGroupSize = 512;  // G limit: the challenger reward table travels in the kernel parameters

// Challenger groups arrive dense (0..groups-1) with their members listed group by group, each group's
// tasks in index order (spice/scoring.py builds both with torch), so every group sum is one O(size)
// pass in task order on either side and the whole scoring is O(T*G + S*L).
struct ScoreParams {
  const int8_t* verdicts = nullptr;       // [T, G], 1 correct
  const uint8_t* task_valid = nullptr;    // [T]
  const int32_t* group_index = nullptr;   // [T], dense challenger group of each task
  const int32_t* group_members = nullptr; // [T], task ids ordered by group, index order inside a group
  const int32_t* group_offsets = nullptr; // [groups + 1], where each group's members start
  const int64_t* sequence_source = nullptr;   // [S], index into concat(challenger_adv[T], reasoner_adv[T*G]) or -1
  const float* loss_mask = nullptr;       // [S, L]
  float* reasoner_rewards = nullptr;      // [T, G]
  float* challenger_rewards = nullptr;    // [T]
  float* reasoner_advantages = nullptr;   // [T, G]
  float* challenger_advantages = nullptr; // [T]
  float* token_advantages = nullptr;      // [S, L]
  int32_t* counts = nullptr;              // [T] scratch: correct answers per task
  float* group_mean = nullptr;            // [groups] scratch
  float* group_denominator = nullptr;     // [groups] scratch: population std + eps (std_normalize only)
  int64_t tasks = 0, group_size = 0, sequences = 0, tokens = 0, groups = 0;
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

SPICE_HD float challenger_reward(const ScoreParams& p, int64_t t) {
  return p.task_valid[t] ? p.challenger_table[p.counts[t]] : p.invalid_penalty;
}

// Mean of the challenger rewards of one group (summed in task order) and, with std_normalize, its
// population std + eps; reads challenger_rewards, which must be written first.
SPICE_HD void group_statistics(const ScoreParams& p, int64_t grp) {
  const int32_t begin = p.group_offsets[grp], end = p.group_offsets[grp + 1];
  const float n = static_cast<float>(end - begin);
  float sum = 0.0f;
  for (int32_t i = begin; i < end; ++i) sum = f_add(sum, p.challenger_rewards[p.group_members[i]]);
  const float mean = f_div(sum, n);
  p.group_mean[grp] = mean;
  if (p.std_normalize) {
    float sq = 0.0f;
    for (int32_t i = begin; i < end; ++i) {
      const float d = f_sub(p.challenger_rewards[p.group_members[i]], mean);
      sq = f_add(sq, f_mul(d, d));
    }
    p.group_denominator[grp] = f_add(f_sqrt(f_div(sq, n)), p.eps);
  }
}

// Reward minus the mean over the task's challenger group; optionally divided by (population std + eps).
SPICE_HD float challenger_advantage(const ScoreParams& p, int64_t t) {
  const int32_t grp = p.group_index[t];
  float adv = f_sub(p.challenger_rewards[t], p.group_mean[grp]);
  if (p.std_normalize) adv = f_div(adv, p.group_denominator[grp]);
  return adv;
}

SPICE_HD float reasoner_reward(const ScoreParams& p, int64_t t, int64_t g) {
  return p.task_valid[t] && p.verdicts[t * p.group_size + g] == 1 ? 1.0f : 0.0f;
}

// Reward minus the mean over the task's G answers (0 for an invalid task); optionally divided by
// (population std + eps), which for 0/1 rewards is sqrt(mean * (1 - mean)).
SPICE_HD float reasoner_advantage(const ScoreParams& p, int64_t t, int64_t g) {
  if (!p.task_valid[t]) return 0.0f;
  const float mean = f_div(static_cast<float>(p.counts[t]), static_cast<float>(p.group_size));
  float adv = f_sub(reasoner_reward(p, t, g), mean);
  if (p.std_normalize) adv = f_div(adv, f_add(f_sqrt(f_mul(mean, f_sub(1.0f, mean))), p.eps));
  return adv;
}

// Advantage of one training sequence; needs counts, challenger_rewards and the group statistics.
SPICE_HD float source_advantage(const ScoreParams& p, int64_t src) {
  if (src < 0) return 0.0f;
  if (src < p.tasks) return challenger_advantage(p, src);
  const int64_t k = src - p.tasks;
  if (k >= p.tasks * p.group_size) return 0.0f;
  return reasoner_advantage(p, k / p.group_size, k % p.group_size);
}

// Host side (scoring_cpu.cpp / scoring_cuda.cu).
void score_cpu(const ScoreParams& p);
#ifdef SPICE_WITH_CUDA
// nullptr on success, else the failing CUDA call and its error; launches on `device` and restores the
// caller's current device.
const char* score_cuda(const ScoreParams& p, int device, uintptr_t stream);
#endif

}  // namespace spice::scoring
