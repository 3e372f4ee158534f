// Verdicts of the fast path: equivalent / not equivalent / undecided, decided only when certain.
// The batch runs on std::threads with an atomic work counter; each item's work is bounded by the
// caps in verify.h.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

#include "verify.h"
#include "verify_ascii.h"

namespace spice::verify {

namespace {

// A decimal and a number closer than this (relative) are left to math-verify, whose comparison of
// percentages and degrees converts them.
constexpr long double kDistinctGap = 2e-3L;
// Without percent or degree signs math-verify rounds a decimal and the other number to 6 places: two
// numbers further apart than 1e-6 can never round to the same value; the margin covers the 15
// significant digits of its floats.
constexpr long double kRoundingGap = 2e-6L;
constexpr long double kFloatDigits = 1e-12L;
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
  if (!a.percent && !g.percent && !a.degree && !g.degree) {
    long double p = static_cast<long double>(x.num) / x.den, q = static_cast<long double>(y.num) / y.den;
    return std::fabs(p - q) > kRoundingGap + kFloatDigits * std::fmax(std::fabs(p), std::fabs(q)) ? kNotEquivalent
                                                                                                 : kUndecided;
  }
  return relative_gap(x, y) > kDistinctGap ? kNotEquivalent : kUndecided;
}

// Letters, digits and spaces after canonicalisation, with a letter, written without math syntax.
bool is_name_with_digits(std::string_view text, std::string_view canonical) {
  if (text.find_first_of("\\^_{}=+*/()<>|") != std::string_view::npos) return false;
  bool letter = false;
  for (char c : canonical) {
    if (!is_lower(c) && !is_digit(c) && c != ' ') return false;
    letter = letter || is_lower(c);
  }
  return letter;
}

Verdict string_verdict(const Normalized& a, const Normalized& g) {
  std::string ca = string_canonical(a.text), cg = string_canonical(g.text);
  if (!ca.empty() && ca == cg) return kEquivalent;
  if (!ca.empty() && !has_digit(ca) && !has_digit(cg) && without_spaces(ca) == without_spaces(cg)) return kEquivalent;
  if (is_plain_words(ca) && is_plain_words(cg)) return kNotEquivalent;
  // names with digits ("K2", "Apollo 11"): different even without spaces, and nothing math-like
  if (is_name_with_digits(a.text, ca) && is_name_with_digits(g.text, cg) && without_spaces(ca) != without_spaces(cg)) {
    return kNotEquivalent;
  }
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

// "120000 gallons", "4 pounds (Grace)": the number before up to four words and a parenthesised
// name. math-verify drops a word of its unit list and otherwise reads the words as a product of
// symbols, which equals no number; every word keeps a letter that is not e or i (Euler's number, the
// imaginary unit), and words it rewrites (percent, and/or, inf..., sqrt...) are refused.
bool symbolic_word(std::string_view word) {
  if (word == "and" || word == "or" || word == "percent" || word == "percentage" || word == "pct" ||
      word.find("inf") != std::string_view::npos || word.find("sqrt") != std::string_view::npos) {
    return false;
  }
  bool symbol = false;
  for (char c : word) {
    if (!is_alpha(c)) return false;
    symbol = symbol || (c != 'e' && c != 'i' && c != 'E' && c != 'I');
  }
  return symbol;
}

std::optional<std::string_view> number_before_words(std::string_view s) {
  constexpr int kMaxWords = 4;
  size_t end = s.size();
  if (end > 0 && s[end - 1] == ')') {
    size_t open = s.rfind('(');
    if (open == std::string_view::npos || open == 0 || s[open - 1] != ' ') return std::nullopt;
    std::string_view inner = s.substr(open + 1, end - open - 2);
    size_t k = 0;
    while (k < inner.size()) {
      size_t next = inner.find(' ', k);
      if (next == std::string_view::npos) next = inner.size();
      if (!symbolic_word(inner.substr(k, next - k))) return std::nullopt;
      k = next + 1;
    }
    end = open - 1;
  }
  for (int words = 0; words < kMaxWords && end > 0 && is_alpha(s[end - 1]); ++words) {
    size_t begin = end;
    while (begin > 0 && is_alpha(s[begin - 1])) --begin;
    if (!symbolic_word(s.substr(begin, end - begin))) return std::nullopt;
    if (begin == 0 || s[begin - 1] != ' ') return std::nullopt;
    end = begin - 1;
    if (end > 0 && is_digit(s[end - 1])) return s.substr(0, end);
  }
  return std::nullopt;
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
  if (std::optional<std::string_view> prefix = y ? number_before_words(a.text) : std::nullopt) {
    Normalized n = normalize_math(*prefix);
    std::optional<Rational> value = parse_number(n.text, false);
    if (value && numeric_verdict(n, g, *value, *y) == kNotEquivalent) return kNotEquivalent;
    return kUndecided;
  }
  return algebraic_verdict(*answer, gold);
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
