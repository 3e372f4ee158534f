// CPU twin of the fused scoring kernel: the same per-element functions (scoring.h) in plain loops.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <vector>

#include "scoring.h"

namespace spice::scoring {

void score_cpu(const ScoreParams& p) {
  std::vector<int32_t> counts(static_cast<size_t>(p.tasks));
  for (int64_t t = 0; t < p.tasks; ++t) counts[t] = correct_count(p, t);
  std::vector<float> sources(static_cast<size_t>(p.tasks + p.tasks * p.group_size));
  for (int64_t t = 0; t < p.tasks; ++t) {
    p.challenger_rewards[t] = challenger_reward(p, counts.data(), t);
    sources[t] = p.challenger_advantages[t] = challenger_advantage(p, counts.data(), t);
    for (int64_t g = 0; g < p.group_size; ++g) {
      const int64_t k = t * p.group_size + g;
      p.reasoner_rewards[k] = reasoner_reward(p, t, g);
      sources[p.tasks + k] = p.reasoner_advantages[k] = reasoner_advantage(p, counts.data(), t, g);
    }
  }
  const int64_t n_sources = static_cast<int64_t>(sources.size());
  for (int64_t s = 0; s < p.sequences; ++s) {
    const int64_t src = p.sequence_source[s];
    const float adv = src >= 0 && src < n_sources ? sources[src] : 0.0f;
    const float* mask = p.loss_mask + s * p.tokens;
    float* out = p.token_advantages + s * p.tokens;
    for (int64_t l = 0; l < p.tokens; ++l) out[l] = f_mul(adv, mask[l]);
  }
}

}  // namespace spice::scoring
