// Answer verification fast path: extraction, normalisation, exact rationals and verdicts.
// Everything works on raw bytes (any byte sequence is valid input) with bounded work per item.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spice::verify {

// Bounds that keep the work per item small whatever the input.
constexpr size_t kMaxScanBytes = 4 * 32768;  // tail of the response that is scanned (Python passes 32768 chars)
constexpr size_t kMaxAnswerBytes = 1024;      // longer extracted answers or golds are left undecided
constexpr int kMaxDigits = 18;                // numbers with more digits are left undecided
constexpr size_t kMaxPhraseBytes = 256;       // "the answer is ..." text is cut to this length

enum class Kind : int8_t { kMcq = 0, kInteger = 1, kFloat = 2, kExpression = 3, kString = 4, kUnknown = -1 };
enum Verdict : int8_t { kNotEquivalent = 0, kEquivalent = 1, kUndecided = -1 };

Kind parse_kind(std::string_view kind);

// Extraction (extract.cpp): the final answer of a response, or nothing.
std::optional<std::string> last_boxed(std::string_view text);
std::optional<char> parse_letter(std::string_view content);
std::optional<std::string> extract_answer(std::string_view response, Kind kind);

// Normalisation (normalize.cpp).
struct Normalized {
  std::string text;      // wrappers removed, whitespace collapsed to single spaces, trimmed
  bool percent = false;  // a percent sign was removed
  bool degree = false;   // a degree marker was removed
};
Normalized normalize_math(std::string_view s);
std::string compact(std::string_view s);           // drops spaces but before a letter or '.' or between alphanumerics
std::string string_canonical(std::string_view s);  // lowercase, punctuation to spaces, no leading article
bool is_plain_words(std::string_view s);           // only a-z and spaces, not empty
bool has_digit(std::string_view s);
std::string without_spaces(std::string_view s);

// Exact rationals (rational.cpp).
struct Rational {
  int64_t num = 0;
  int64_t den = 1;  // > 0, gcd(num, den) == 1
  bool exact = true;  // written without a decimal point (math-verify compares such values exactly)
};
std::optional<Rational> make_rational(__int128 num, __int128 den);  // reduced; nothing when den == 0 or past int64
std::optional<Rational> rational_add(const Rational& a, const Rational& b);
std::optional<Rational> rational_mul(const Rational& a, const Rational& b);
std::optional<Rational> parse_number(std::string_view s, bool allow_assignment);
bool rational_equal(const Rational& a, const Rational& b);
std::optional<Rational> rational_div100(const Rational& a);
long double relative_gap(const Rational& a, const Rational& b);  // |a-b| / max(1, |a|, |b|)

// Exact algebra (algebra.cpp): both sides as quotients of polynomials over Q in single-letter
// variables, \pi and square roots of rationals; equivalent / not equivalent only when certain.
Verdict algebraic_verdict(std::string_view answer, std::string_view gold);

// Verdicts (verdict.cpp).
Verdict verdict(std::string_view response, std::string_view gold, Kind kind);
std::vector<int8_t> verdict_batch(const std::vector<std::string>& responses, const std::vector<std::string>& golds,
                                  const std::vector<Kind>& kinds, int num_threads);

}  // namespace spice::verify
