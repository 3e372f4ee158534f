// Exact rationals for normalised numeric answers: integers, decimals, thousands separators,
// a/b, \frac{a}{b}, mixed numbers W\frac{a}{b}, signs. More than kMaxDigits digits in any part, a zero
// denominator, or a result outside int64 means "not a number here" (the caller leaves it undecided).
#include <cmath>
#include <cstdlib>

#include "verify.h"
#include "verify_ascii.h"

namespace spice::verify {

namespace {

using i128 = __int128;

i128 gcd128(i128 a, i128 b) {
  if (a < 0) a = -a;
  if (b < 0) b = -b;
  while (b != 0) {
    i128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

struct Decimal {
  Rational value;
  size_t end = 0;
  bool plain_integer = false;  // digits only: no separators, no decimal point
  bool space_groups = false;   // thousands separated by spaces
};

// An unsigned decimal at `pos`: "123", "1,234,567.89", "1 234", ".5", "0.25".
std::optional<Decimal> parse_unsigned(std::string_view s, size_t pos) {
  size_t i = pos;
  i128 mantissa = 0;
  int digits = 0, frac_digits = 0;
  bool plain = true, space_groups = false;
  auto take_digit = [&](char c) {
    mantissa = mantissa * 10 + (c - '0');
    return ++digits <= kMaxDigits;
  };
  size_t lead_start = i;
  while (i < s.size() && is_digit(s[i])) {
    if (!take_digit(s[i++])) return std::nullopt;
  }
  size_t lead = i - lead_start;
  if (lead >= 1 && lead <= 3 && i < s.size() && (s[i] == ',' || s[i] == ' ')) {
    const char sep = s[i];
    auto group_at = [&](size_t k) {
      return k + 3 < s.size() && s[k] == sep && is_digit(s[k + 1]) && is_digit(s[k + 2]) &&
             is_digit(s[k + 3]) && (k + 4 == s.size() || !is_digit(s[k + 4]));
    };
    if (group_at(i)) {
      while (group_at(i)) {
        for (size_t k = 1; k <= 3; ++k) {
          if (!take_digit(s[i + k])) return std::nullopt;
        }
        i += 4;
      }
      plain = false;
      space_groups = sep == ' ';
    }
  }
  if (i + 1 < s.size() && s[i] == '.' && is_digit(s[i + 1])) {
    ++i;
    plain = false;
    while (i < s.size() && is_digit(s[i])) {
      if (!take_digit(s[i++])) return std::nullopt;
      ++frac_digits;
    }
  }
  if (digits == 0) return std::nullopt;
  i128 den = 1;
  for (int k = 0; k < frac_digits; ++k) den *= 10;
  std::optional<Rational> v = make_rational(mantissa, den);
  if (!v) return std::nullopt;
  v->exact = frac_digits == 0;
  return Decimal{*v, i, plain, space_groups};
}

// A whole string that is one optionally signed decimal (used for \frac arguments).
std::optional<Rational> parse_signed_whole(std::string_view s) {
  s = trim(s);
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s = trim(s.substr(1));
  }
  std::optional<Decimal> d = parse_unsigned(s, 0);
  if (!d || d->end != s.size()) return std::nullopt;
  Rational v = d->value;
  v.num = neg ? -v.num : v.num;  // |num| <= 10^18: negation cannot overflow
  return v;
}

// One \frac argument at `pos`: "{...}" or a single digit; sets `end`.
std::optional<std::string_view> frac_arg(std::string_view s, size_t pos, size_t& end) {
  if (pos < s.size() && is_digit(s[pos])) {
    end = pos + 1;
    return s.substr(pos, 1);
  }
  if (pos >= s.size() || s[pos] != '{') return std::nullopt;
  size_t close = s.find('}', pos);
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view inner = s.substr(pos + 1, close - pos - 1);
  if (inner.find('{') != std::string_view::npos) return std::nullopt;
  end = close + 1;
  return inner;
}

// "\frac{a}{b}" at `pos` consuming the rest of `s`; `integers` requires unsigned integer arguments.
std::optional<Rational> parse_frac(std::string_view s, size_t pos, bool integers) {
  if (!starts_with(s, pos, "\\frac")) return std::nullopt;
  size_t e1 = 0, e2 = 0;
  std::optional<std::string_view> a = frac_arg(s, pos + 5, e1);
  if (!a) return std::nullopt;
  std::optional<std::string_view> b = frac_arg(s, e1, e2);
  if (!b || e2 != s.size()) return std::nullopt;
  std::optional<Rational> ra, rb;
  if (integers) {
    std::optional<Decimal> da = parse_unsigned(*a, 0), db = parse_unsigned(*b, 0);
    if (!da || !db || !da->plain_integer || !db->plain_integer || da->end != a->size() || db->end != b->size()) {
      return std::nullopt;
    }
    ra = da->value;
    rb = db->value;
  } else {
    ra = parse_signed_whole(*a);
    rb = parse_signed_whole(*b);
  }
  if (!ra || !rb || rb->num == 0) return std::nullopt;
  std::optional<Rational> v = make_rational(static_cast<i128>(ra->num) * rb->den, static_cast<i128>(ra->den) * rb->num);
  if (v) v->exact = ra->exact && rb->exact;
  return v;
}

std::optional<Rational> parse_body(std::string_view s) {
  if (s.empty()) return std::nullopt;
  if (s[0] == '\\') return parse_frac(s, 0, false);
  std::optional<Decimal> d = parse_unsigned(s, 0);
  if (!d) return std::nullopt;
  size_t i = d->end;
  if (i == s.size()) return d->value;
  if (d->space_groups) return std::nullopt;
  size_t j = i;
  while (j < s.size() && s[j] == ' ') ++j;
  if (starts_with(s, j, "\\frac")) {
    if (!d->plain_integer) return std::nullopt;
    std::optional<Rational> f = parse_frac(s, j, true);
    if (!f) return std::nullopt;
    return make_rational(static_cast<i128>(d->value.num) * f->den + f->num, f->den);
  }
  if (j < s.size() && s[j] == '/') {
    ++j;
    while (j < s.size() && s[j] == ' ') ++j;
    std::optional<Decimal> q = parse_unsigned(s, j);
    if (!q || q->end != s.size() || q->space_groups || q->value.num == 0) return std::nullopt;
    std::optional<Rational> v = make_rational(static_cast<i128>(d->value.num) * q->value.den,
                                              static_cast<i128>(d->value.den) * q->value.num);
    if (v) v->exact = d->value.exact && q->value.exact;
    return v;
  }
  return std::nullopt;
}

}  // namespace

std::optional<Rational> make_rational(i128 num, i128 den) {
  if (den == 0) return std::nullopt;
  if (den < 0) {
    num = -num;
    den = -den;
  }
  i128 g = gcd128(num, den);
  if (g > 1) {
    num /= g;
    den /= g;
  }
  constexpr i128 kLimit = static_cast<i128>(INT64_MAX);
  if (num > kLimit || num < -kLimit || den > kLimit) return std::nullopt;
  return Rational{static_cast<int64_t>(num), static_cast<int64_t>(den)};
}

std::optional<Rational> rational_add(const Rational& a, const Rational& b) {
  return make_rational(static_cast<i128>(a.num) * b.den + static_cast<i128>(b.num) * a.den,
                       static_cast<i128>(a.den) * b.den);
}

std::optional<Rational> rational_mul(const Rational& a, const Rational& b) {
  return make_rational(static_cast<i128>(a.num) * b.num, static_cast<i128>(a.den) * b.den);
}

std::optional<Rational> parse_number(std::string_view s, bool allow_assignment) {
  s = trim(s);
  if (allow_assignment && s.size() >= 2 && is_alpha(s[0])) {
    size_t k = 1;
    while (k < s.size() && s[k] == ' ') ++k;
    if (k < s.size() && s[k] == '=') s = trim(s.substr(k + 1));
  }
  for (int round = 0; round < 2 && s.size() >= 2; ++round) {
    const bool paren = s.front() == '(' && s.back() == ')';
    const bool brace = s.front() == '{' && s.back() == '}';
    if (!paren && !brace) break;
    std::string_view inner = s.substr(1, s.size() - 2);
    if (inner.find_first_of("(){},") != std::string_view::npos) break;
    s = trim(inner);
  }
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s = trim(s.substr(1));
  }
  std::optional<Rational> v = parse_body(s);
  if (!v) return std::nullopt;
  if (neg) v->num = -v->num;
  return v;
}

bool rational_equal(const Rational& a, const Rational& b) { return a.num == b.num && a.den == b.den; }

std::optional<Rational> rational_div100(const Rational& a) {
  return make_rational(static_cast<i128>(a.num), static_cast<i128>(a.den) * 100);
}

long double relative_gap(const Rational& a, const Rational& b) {
  long double x = static_cast<long double>(a.num) / static_cast<long double>(a.den);
  long double y = static_cast<long double>(b.num) / static_cast<long double>(b.den);
  long double scale = std::fmax(1.0L, std::fmax(std::fabs(x), std::fabs(y)));
  return std::fabs(x - y) / scale;
}

}  // namespace spice::verify
