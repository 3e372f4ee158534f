// CPU twin of the fused scoring kernel: the same per-element functions (scoring.h) in plain loops, in
// the kernel's stage order (counts and rewards, group statistics, advantages), O(T*G + S*L).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <vector>

#include "scoring.h"

namespace spice::scoring {

void score_cpu(const ScoreParams& params) {
  ScoreParams p = params;
  std::vector<int32_t> counts(static_cast<size_t>(p.tasks));
  std::vector<float> mean(static_cast<size_t>(p.groups)), denominator(static_cast<size_t>(p.groups));
  p.counts = counts.data();
  p.group_mean = mean.data();
  p.group_denominator = denominator.data();
  for (int64_t t = 0; t < p.tasks; ++t) {
    counts[t] = correct_count(p, t);
    p.challenger_rewards[t] = challenger_reward(p, t);
    for (int64_t g = 0; g < p.group_size; ++g) {
      const int64_t k = t * p.group_size + g;
      p.reasoner_rewards[k] = reasoner_reward(p, t, g);
      p.reasoner_advantages[k] = reasoner_advantage(p, t, g);
    }
  }
  for (int64_t grp = 0; grp < p.groups; ++grp) group_statistics(p, grp);
  for (int64_t t = 0; t < p.tasks; ++t) p.challenger_advantages[t] = challenger_advantage(p, t);
  for (int64_t s = 0; s < p.sequences; ++s) {
    const float adv = source_advantage(p, p.sequence_source[s]);
    const float* mask = p.loss_mask + s * p.tokens;
    float* out = p.token_advantages + s * p.tokens;
    for (int64_t l = 0; l < p.tokens; ++l) out[l] = f_mul(adv, mask[l]);
  }
}

}  // namespace spice::scoring
