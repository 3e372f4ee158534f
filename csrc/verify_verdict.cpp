// Verdicts of the fast path: equivalent / not equivalent / undecided, decided only when certain.
// The batch runs on std::threads with an atomic work counter; each item's work is bounded by the
// caps in verify.h.
#include <algorithm>
#include <atomic>
#include <thread>

#include "verify.h"
#include "verify_ascii.h"

namespace spice::verify {

namespace {

// Numbers closer than this (relative) are left to math-verify, whose comparison rounds.
constexpr long double kDistinctGap = 2e-3L;
constexpr size_t kChunk = 64;

Verdict numeric_verdict(const Normalized& a, const Normalized& g, const Rational& x, const Rational& y) {
  if (a.percent != g.percent) {
    std::optional<Rational> x100 = rational_div100(x), y100 = rational_div100(y);
    if (rational_equal(x, y) || (x100 && rational_equal(*x100, y)) || (y100 && rational_equal(x, *y100))) {
      return kEquivalent;
    }
    return kUndecided;
  }
  if (rational_equal(x, y)) return kEquivalent;
  if (a.degree != g.degree) return kUndecided;
  if (x.exact && y.exact) return kNotEquivalent;  // integers and fractions of integers: no rounding anywhere
  return relative_gap(x, y) > kDistinctGap ? kNotEquivalent : kUndecided;
}

Verdict string_verdict(const Normalized& a, const Normalized& g) {
  std::string ca = string_canonical(a.text), cg = string_canonical(g.text);
  if (!ca.empty() && ca == cg) return kEquivalent;
  if (!ca.empty() && !has_digit(ca) && !has_digit(cg) && without_spaces(ca) == without_spaces(cg)) return kEquivalent;
  if (is_plain_words(ca) && is_plain_words(cg)) return kNotEquivalent;
  return kUndecided;
}

// The part before a trailing unit in text mode ("12 \text{ meters}"), which math-verify drops too.
std::optional<std::string_view> strip_text_unit(std::string_view s) {
  s = trim(s);
  if (s.empty() || s.back() != '}') return std::nullopt;
  size_t open = s.rfind('{');
  if (open == std::string_view::npos) return std::nullopt;
  for (size_t k = open + 1; k + 1 < s.size(); ++k) {
    char c = s[k];
    if (!is_alpha(c) && c != ' ' && c != '/' && c != '.') return std::nullopt;
  }
  for (std::string_view cmd : {"\\text", "\\textbf", "\\textrm", "\\mathrm", "\\mbox"}) {
    if (open >= cmd.size() && s.compare(open - cmd.size(), cmd.size(), cmd) == 0) {
      std::string_view prefix = trim(s.substr(0, open - cmd.size()));
      if (prefix.empty()) return std::nullopt;
      return prefix;
    }
  }
  return std::nullopt;
}

// The rational value of an answer, also after dropping a trailing text-mode unit (then `n` is updated).
std::optional<Rational> numeric_value(std::string_view raw, Normalized& n, bool allow_assignment) {
  if (std::optional<Rational> v = parse_number(n.text, allow_assignment)) return v;
  std::optional<std::string_view> prefix = strip_text_unit(raw);
  if (!prefix) return std::nullopt;
  Normalized stripped = normalize_math(*prefix);
  std::optional<Rational> v = parse_number(stripped.text, allow_assignment);
  if (v) n = stripped;
  return v;
}

}  // namespace

Verdict verdict(std::string_view response, std::string_view gold, Kind kind) {
  if (kind == Kind::kUnknown || gold.size() > kMaxAnswerBytes) return kUndecided;
  std::optional<std::string> answer = extract_answer(response, kind);
  if (kind == Kind::kMcq) {
    std::optional<char> gold_letter = parse_letter(gold);
    if (!gold_letter) return kUndecided;
    return answer && (*answer)[0] == *gold_letter ? kEquivalent : kNotEquivalent;
  }
  if (!answer) return kNotEquivalent;
  if (answer->size() > kMaxAnswerBytes) return kUndecided;
  Normalized a = normalize_math(*answer), g = normalize_math(gold);
  if (a.text.empty() || g.text.empty()) return kUndecided;
  if (a.percent == g.percent && a.degree == g.degree && compact(a.text) == compact(g.text)) return kEquivalent;
  const bool both_assign = a.text.find('=') != std::string::npos && g.text.find('=') != std::string::npos;
  std::optional<Rational> x = numeric_value(*answer, a, !both_assign), y = numeric_value(gold, g, !both_assign);
  if (x && y) return numeric_verdict(a, g, *x, *y);
  if (kind == Kind::kString) return string_verdict(a, g);
  return kUndecided;
}

std::vector<int8_t> verdict_batch(const std::vector<std::string>& responses, const std::vector<std::string>& golds,
                                  const std::vector<Kind>& kinds, int num_threads) {
  const size_t n = responses.size();
  std::vector<int8_t> out(n, kUndecided);
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (;;) {
      size_t begin = next.fetch_add(kChunk);
      if (begin >= n) return;
      size_t end = std::min(n, begin + kChunk);
      for (size_t i = begin; i < end; ++i) {
        try {
          out[i] = verdict(responses[i], golds[i], kinds[i]);
        } catch (...) {  // e.g. std::bad_alloc: never let an item take the process down
          out[i] = kUndecided;
        }
      }
    }
  };
  size_t threads = num_threads > 0 ? static_cast<size_t>(num_threads)
                                   : std::max<size_t>(1, std::thread::hardware_concurrency());
  threads = std::min(threads, (n + kChunk - 1) / kChunk);
  if (threads <= 1) {
    work();
    return out;
  }
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& th : pool) th.join();
  return out;
}

}  // namespace spice::verify
