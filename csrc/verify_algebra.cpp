// Exact algebra for symbolic answers ("x^2+2x+1" vs "(x+1)^2", "\sqrt{18}" vs "3\sqrt{2}").
//
// Both sides are read into a canonical form: a quotient of two polynomials with rational coefficients
// in single-letter variables, \pi (transcendental, so it behaves like one more variable) and square
// roots of primes (sqrt(p)^2 = p; products of distinct prime roots are linearly independent over Q).
// Two answers are equal as numbers or functions exactly when their canonical forms are, so
// "equivalent" is certain. "Not equivalent" is returned only when the difference is also clearly
// nonzero numerically: math-verify evaluates differences to 15 digits and chops tiny ones to zero.
//
// The grammar is deliberately narrow and refuses (leaves undecided) whatever math-verify reads in a
// way of its own: uppercase letters (lowered by its parser), e and i (Euler's number, the imaginary
// unit), adjacent letters (unit words, "ab"), a letter from its unit list at the end ("2m" -> 2), mixed
// numbers ("2\frac{1}{2}" is 5/2), a number after another factor, spaces between two factors,
// decimals, unbraced multi-digit exponents ("x^23" is x**23 there), chained powers, '/' before an
// implicit product ("1/2x" is 1/(2x) there), a bracket after a factor ("k(x)" is a function call
// there), a bare variable on either side when both are equal (its Symbol comparison is by name only),
// radicals in a denominator of several terms when both are equal, and any command but \frac \dfrac \tfrac \sqrt \pi \cdot
// \times \left( \right). Work is bounded: at most kMaxTokens tokens, kMaxTerms terms per polynomial,
// kWorkBudget term products and radicands up to kMaxRadicand per item.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "verify.h"
#include "verify_ascii.h"

namespace spice::verify {

namespace {

using i128 = __int128;

struct Refuse {};  // the answer leaves the grammar or a bound: the item is undecided

constexpr int kVariables = 24;  // a-z without e and i
constexpr int kPiSlot = kVariables;
constexpr int kLogSlots = 4;  // \ln of up to four different positive rationals, as opaque atoms
constexpr int kFirstLogSlot = kVariables + 1;
constexpr int kSlots = kVariables + 1 + kLogSlots;
constexpr int kMaxExponent = 64;
constexpr size_t kMaxTerms = 96;
constexpr size_t kMaxTokens = 256;
constexpr int kMaxDepth = 32;
constexpr size_t kMaxRadicals = 16;
constexpr int64_t kMaxRadicand = 10000000000;  // trial division up to 10^5
constexpr long kWorkBudget = 200000;           // term products per item
constexpr int kHugeDigits = 19;                // integer literals this long are >= 10^18: kept as "huge"
constexpr long double kHugeBound = 1e18L;
constexpr long double kClearlyNonzero = 1e-6L;  // relative to the magnitude of the terms
constexpr long double kRoundingGap = 2e-6L;

int variable_slot(char c) {
  int k = c - 'a';
  if (c > 'e') --k;
  if (c > 'i') --k;
  return k;
}

struct Monomial {
  std::array<int8_t, kSlots> exponent{};
  uint16_t radicals = 0;  // bit k: sqrt(primes[k])
  bool operator==(const Monomial& o) const { return radicals == o.radicals && exponent == o.exponent; }
  bool operator<(const Monomial& o) const {
    int c = std::memcmp(exponent.data(), o.exponent.data(), kSlots);
    return c != 0 ? c < 0 : radicals < o.radicals;
  }
  bool is_one() const { return radicals == 0 && exponent == std::array<int8_t, kSlots>{}; }
  bool has_variables() const {
    for (int k = 0; k < kVariables; ++k) {
      if (exponent[k] != 0) return true;
    }
    return false;
  }
};

struct Term {
  Monomial monomial;
  Rational coef;
};

using Poly = std::vector<Term>;  // sorted by monomial, no zero coefficients

struct Context {
  std::vector<int64_t> primes;      // sqrt(primes[k]) is radical bit k
  std::vector<Rational> log_args;   // ln(log_args[k]) is slot kFirstLogSlot + k
  bool decimal = false;             // a decimal was read: math-verify computes with floats
  bool inexact_decimal = false;     // one that a binary float does not hold exactly (0.1, not 0.25)
  long work = kWorkBudget;
};

Rational need(std::optional<Rational> r) {
  if (!r) throw Refuse{};
  return *r;
}

Poly constant(Rational c) {
  if (c.num == 0) return {};
  return {Term{Monomial{}, c}};
}

Poly one() { return constant(Rational{1, 1}); }

bool poly_equal(const Poly& a, const Poly& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (!(a[k].monomial == b[k].monomial) || !rational_equal(a[k].coef, b[k].coef)) return false;
  }
  return true;
}

// Sorts, merges equal monomials, drops zeros.
void canonicalize(Poly& p) {
  std::sort(p.begin(), p.end(), [](const Term& x, const Term& y) { return x.monomial < y.monomial; });
  Poly out;
  out.reserve(p.size());
  for (const Term& t : p) {
    if (!out.empty() && out.back().monomial == t.monomial) {
      out.back().coef = need(rational_add(out.back().coef, t.coef));
    } else {
      out.push_back(t);
    }
    if (out.back().coef.num == 0) out.pop_back();
  }
  if (out.size() > kMaxTerms) throw Refuse{};
  p.swap(out);
}

Poly add(const Poly& a, const Poly& b, bool subtract) {
  Poly out(a);
  for (Term t : b) {
    if (subtract) t.coef.num = -t.coef.num;
    out.push_back(t);
  }
  canonicalize(out);
  return out;
}

Term term_product(const Term& x, const Term& y, const Context& ctx) {
  Term t;
  for (int k = 0; k < kSlots; ++k) {
    int e = x.monomial.exponent[k] + y.monomial.exponent[k];
    if (e > kMaxExponent || e < -kMaxExponent) throw Refuse{};
    t.monomial.exponent[k] = static_cast<int8_t>(e);
  }
  const uint16_t common = x.monomial.radicals & y.monomial.radicals;
  t.monomial.radicals = x.monomial.radicals ^ y.monomial.radicals;
  Rational c = need(rational_mul(x.coef, y.coef));
  for (size_t k = 0; k < ctx.primes.size(); ++k) {
    if (common & (1u << k)) c = need(rational_mul(c, Rational{ctx.primes[k], 1}));
  }
  t.coef = c;
  return t;
}

Poly mul(const Poly& a, const Poly& b, Context& ctx) {
  ctx.work -= static_cast<long>(a.size() * b.size());
  if (ctx.work < 0) throw Refuse{};
  Poly out;
  out.reserve(a.size() * b.size());
  for (const Term& x : a) {
    for (const Term& y : b) out.push_back(term_product(x, y, ctx));
  }
  canonicalize(out);
  return out;
}

// 1 / t as a term: negated exponents; 1/sqrt(S) = sqrt(S) / prod(S).
Term term_inverse(const Term& t, const Context& ctx) {
  Term inv;
  for (int k = 0; k < kSlots; ++k) inv.monomial.exponent[k] = static_cast<int8_t>(-t.monomial.exponent[k]);
  inv.monomial.radicals = t.monomial.radicals;
  Rational c = t.coef;
  for (size_t k = 0; k < ctx.primes.size(); ++k) {
    if (t.monomial.radicals & (1u << k)) c = need(rational_mul(c, Rational{ctx.primes[k], 1}));
  }
  inv.coef = need(make_rational(c.den, c.num));
  return inv;
}

// A value: num / den, or a positive integer of at least 10^18 whose digits are not kept ("huge").
struct Value {
  Poly num;
  Poly den = one();
  bool huge = false;
};

void refuse_huge(const Value& a) {
  if (a.huge) throw Refuse{};
}

// A single-term denominator is folded into the numerator.
Value reduce(Value v, Context& ctx) {
  if (v.num.empty()) {
    v.den = one();
  } else if (v.den.size() == 1) {
    v.num = mul(v.num, Poly{term_inverse(v.den[0], ctx)}, ctx);
    v.den = one();
  }
  return v;
}

// Radicals in a denominator of several terms: math-verify's simplify has to rationalise it, which it
// does not always manage, so equal values with one are left to it.
bool radical_denominator(const Value& v) {
  for (const Term& t : v.den) {
    if (t.monomial.radicals != 0) return true;
  }
  return false;
}

Value sum(const Value& a, const Value& b, bool subtract, Context& ctx) {
  refuse_huge(a);
  refuse_huge(b);
  if (poly_equal(a.den, b.den)) return reduce(Value{add(a.num, b.num, subtract), a.den}, ctx);
  return reduce(Value{add(mul(a.num, b.den, ctx), mul(b.num, a.den, ctx), subtract), mul(a.den, b.den, ctx)}, ctx);
}

Value product(const Value& a, const Value& b, Context& ctx) {
  refuse_huge(a);
  refuse_huge(b);
  return reduce(Value{mul(a.num, b.num, ctx), mul(a.den, b.den, ctx)}, ctx);
}

Value quotient(const Value& a, const Value& b, Context& ctx) {
  refuse_huge(b);
  if (b.num.empty()) throw Refuse{};  // division by zero: math-verify reads zoo or nan
  return product(a, Value{b.den, b.num}, ctx);
}

// The rational value of a constant without \pi or radicals, if `v` is one.
std::optional<Rational> rational_value(const Value& v) {
  if (v.huge || v.den.size() != 1 || !v.den[0].monomial.is_one() || v.den[0].coef.num != 1 ||
      v.den[0].coef.den != 1) {
    return std::nullopt;
  }
  if (v.num.empty()) return Rational{0, 1};
  if (v.num.size() != 1 || !v.num[0].monomial.is_one()) return std::nullopt;
  return v.num[0].coef;
}

Value huge_value() {
  Value v;
  v.huge = true;
  return v;
}

// base^exponent. A huge result only for an integer base >= 2 and a positive exponent.
Value power(const Value& base, const Value& exponent, Context& ctx) {
  std::optional<Rational> base_q = rational_value(base);
  const bool big_integer_base = base.huge || (base_q && base_q->den == 1 && base_q->num >= 2);
  if (exponent.huge) {
    if (big_integer_base) return huge_value();
    if (base_q && base_q->den == 1 && (base_q->num == 0 || base_q->num == 1)) return base;
    throw Refuse{};
  }
  std::optional<Rational> e = rational_value(exponent);
  if (!e || e->den != 1) throw Refuse{};  // only integer exponents
  if (base.huge) {
    if (e->num >= 1) return huge_value();
    throw Refuse{};
  }
  if (big_integer_base && e->num >= 1) {
    if (e->num >= 64) return huge_value();  // >= 2^64 > 10^18
    i128 acc = 1;
    for (int64_t k = 0; k < e->num; ++k) {
      acc *= base_q->num;
      if (acc >= static_cast<i128>(INT64_MAX)) return huge_value();
    }
    return Value{constant(Rational{static_cast<int64_t>(acc), 1})};
  }
  if (e->num > kMaxExponent || e->num < -kMaxExponent) throw Refuse{};
  if (base.num.empty() && e->num <= 0) throw Refuse{};  // 0^0, 0^-k
  Value result{one()};
  Value factor = e->num < 0 ? reduce(Value{base.den, base.num}, ctx) : base;
  for (int64_t k = e->num < 0 ? -e->num : e->num; k > 0; k >>= 1) {
    if (k & 1) result = product(result, factor, ctx);
    if (k > 1) factor = product(factor, factor, ctx);
  }
  return result;
}

// sqrt of a nonnegative rational p/q = sqrt(p q) / q = s sqrt(f) / q with f squarefree.
Value square_root(const Value& v, Context& ctx) {
  std::optional<Rational> q = rational_value(v);
  if (!q || q->num < 0) throw Refuse{};
  if (q->num == 0) return Value{};
  const i128 n128 = static_cast<i128>(q->num) * q->den;
  if (n128 > kMaxRadicand) throw Refuse{};
  int64_t n = static_cast<int64_t>(n128), square = 1;
  uint16_t radicals = 0;
  auto take_prime = [&](int64_t p) {
    auto it = std::find(ctx.primes.begin(), ctx.primes.end(), p);
    size_t k = static_cast<size_t>(it - ctx.primes.begin());
    if (it == ctx.primes.end()) {
      if (ctx.primes.size() >= kMaxRadicals) throw Refuse{};
      ctx.primes.push_back(p);
    }
    radicals |= static_cast<uint16_t>(1u << k);
  };
  for (int64_t p = 2; p * p <= n; ++p) {
    int count = 0;
    while (n % p == 0) {
      n /= p;
      ++count;
    }
    for (int k = 0; k < count / 2; ++k) square *= p;
    if (count % 2 == 1) take_prime(p);
  }
  if (n > 1) take_prime(n);
  Term t;
  t.monomial.radicals = radicals;
  t.coef = need(make_rational(square, q->den));
  return Value{Poly{t}};
}

// ---------------------------------------------------------------------------------------------------
// Tokens

enum class Tok : uint8_t {
  kNumber, kVar, kPi, kFrac, kSqrt, kLn, kPlus, kMinus, kTimes, kSlash, kCaret, kOpen, kClose, kOpenBrace, kCloseBrace, kEnd
};

struct Token {
  Tok type;
  bool space_before;
  std::string_view text;
};

bool plain_left(Tok t) { return t == Tok::kNumber || t == Tok::kVar || t == Tok::kClose || t == Tok::kCloseBrace; }
bool plain_right(Tok t) { return t == Tok::kNumber || t == Tok::kVar || t == Tok::kOpen || t == Tok::kOpenBrace; }

bool unit_letter(char c) {  // single-letter units math-verify strips from the end ("2m" -> 2)
  return c == 'c' || c == 'd' || c == 'g' || c == 'h' || c == 'l' || c == 'm' || c == 'o' || c == 's' || c == 't';
}

// math-verify's unit list holds "a .", ..., "h .", "q .", "s .": such a letter (not the end of a
// command name), a space and any character at the end are dropped ("2a b" is 2 there).
bool letter_space_char_at_end(std::string_view s) {
  if (s.size() < 3 || !is_space(s[s.size() - 2])) return false;
  size_t k = s.size() - 2;
  while (k > 0 && is_space(s[k - 1])) --k;
  if (k == 0 || std::string_view("abcdefghqs").find(s[k - 1]) == std::string_view::npos) return false;
  return k == 1 || !(is_alpha(s[k - 2]) || s[k - 2] == '\\');
}

std::vector<Token> tokenize(std::string_view s) {
  if (letter_space_char_at_end(s)) throw Refuse{};
  std::vector<Token> out;
  bool space = false;
  size_t i = 0;
  auto push = [&](Tok type, size_t length) {
    if (out.size() >= kMaxTokens) throw Refuse{};
    out.push_back(Token{type, space, s.substr(i, length)});
    space = false;
    i += length;
  };
  while (i < s.size()) {
    const char c = s[i];
    if (is_space(c)) {
      space = true;
      ++i;
    } else if (c == '\\') {
      size_t j = i + 1;
      while (j < s.size() && is_alpha(s[j])) ++j;
      std::string_view name = s.substr(i + 1, j - i - 1);
      if (name.empty()) {
        if (i + 1 >= s.size() || std::string_view(",;:! ").find(s[i + 1]) == std::string_view::npos) throw Refuse{};
        space = true;  // a spacing command
        i += 2;
      } else if (name == "frac" || name == "dfrac" || name == "tfrac") {
        push(Tok::kFrac, j - i);
      } else if (name == "sqrt") {
        push(Tok::kSqrt, j - i);
      } else if (name == "pi") {
        push(Tok::kPi, j - i);
      } else if (name == "ln") {
        push(Tok::kLn, j - i);
      } else if (name == "cdot" || name == "times") {
        push(Tok::kTimes, j - i);
      } else if ((name == "left" || name == "right") && j < s.size() && (s[j] == '(' || s[j] == ')')) {
        i = j;
      } else {
        throw Refuse{};
      }
    } else if (is_digit(c)) {
      size_t j = i;
      while (j < s.size() && is_digit(s[j])) ++j;
      if (j + 1 < s.size() && s[j] == '.' && is_digit(s[j + 1])) {  // a decimal: digits '.' digits
        for (++j; j < s.size() && is_digit(s[j]);) ++j;
      }
      push(Tok::kNumber, j - i);
    } else if (is_lower(c)) {
      if (c == 'e' || c == 'i') throw Refuse{};
      push(Tok::kVar, 1);
    } else {
      static constexpr std::string_view kOps = "+-*/^(){}";
      static constexpr Tok kOpTokens[] = {Tok::kPlus, Tok::kMinus, Tok::kTimes, Tok::kSlash, Tok::kCaret,
                                          Tok::kOpen, Tok::kClose, Tok::kOpenBrace, Tok::kCloseBrace};
      size_t k = kOps.find(c);
      if (k == std::string_view::npos) throw Refuse{};
      push(kOpTokens[k], 1);
    }
  }
  for (size_t k = 1; k < out.size(); ++k) {
    const Token &p = out[k - 1], &t = out[k];
    // "2 3" and "x (y)" are refused; "2 x", "a b" and "x^{2} y" (sympy's own LaTeX) are products
    const bool spaced_variable =
        t.type == Tok::kVar && (p.type == Tok::kNumber || p.type == Tok::kVar || p.type == Tok::kCloseBrace);
    if (t.space_before && plain_left(p.type) && plain_right(t.type) && !spaced_variable) throw Refuse{};
    if (p.type == Tok::kVar && t.type == Tok::kVar) throw Refuse{};                     // "ab", "cm"
  }
  if (out.size() >= 2 && out.back().type == Tok::kVar && unit_letter(out.back().text[0])) {
    Tok p = out[out.size() - 2].type;
    if (out.back().space_before) throw Refuse{};  // "2 + m": the unit rule takes any space before it
    if (p != Tok::kPlus && p != Tok::kMinus && p != Tok::kTimes && p != Tok::kSlash && p != Tok::kOpen &&
        p != Tok::kOpenBrace) {
      throw Refuse{};
    }
  }
  out.push_back(Token{Tok::kEnd, space, {}});
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Parser: expression := [sign] term (('+'|'-') term)*; term := product (('*'|'/') product)*;
// product := power power* (implicit multiplication); power := atom ['^' exponent].

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, Context& ctx) : tokens_(tokens), ctx_(ctx) {}

  Value whole() { return expression(Tok::kEnd); }

 private:
  const Token& peek() const { return tokens_[pos_]; }
  const Token& take() { return tokens_[pos_++]; }
  void expect(Tok t) {
    if (take().type != t) throw Refuse{};
  }
  bool bare_number_group(size_t k) const {  // "(" number ")" at token k
    return k + 2 < tokens_.size() && tokens_[k].type == Tok::kOpen && tokens_[k + 1].type == Tok::kNumber &&
           tokens_[k + 2].type == Tok::kClose;
  }
  static bool is_sign(Tok t) { return t == Tok::kPlus || t == Tok::kMinus; }
  static bool starts_factor(Tok t) {
    return t == Tok::kNumber || t == Tok::kVar || t == Tok::kPi || t == Tok::kFrac || t == Tok::kSqrt ||
           t == Tok::kLn || t == Tok::kOpen || t == Tok::kOpenBrace;
  }

  Value expression(Tok close) {
    if (++depth_ > kMaxDepth) throw Refuse{};
    bool negate = false;
    if (is_sign(peek().type)) negate = take().type == Tok::kMinus;
    Value v = term();
    if (negate) v = product(Value{constant(Rational{-1, 1})}, v, ctx_);
    while (is_sign(peek().type)) {
      const bool subtract = take().type == Tok::kMinus;
      if (is_sign(peek().type)) throw Refuse{};
      v = sum(v, term(), subtract, ctx_);
    }
    expect(close);
    --depth_;
    return v;
  }

  Value term() {
    Value v = implicit_product(false);
    while (peek().type == Tok::kTimes || peek().type == Tok::kSlash) {
      const bool divide = take().type == Tok::kSlash;
      if (is_sign(peek().type)) throw Refuse{};
      Value rhs = implicit_product(divide);  // "1/2x" is 1/(2x) to math-verify: refused
      v = divide ? quotient(v, rhs, ctx_) : product(v, rhs, ctx_);
    }
    return v;
  }

  Value implicit_product(bool single_factor) {
    if (!starts_factor(peek().type)) throw Refuse{};
    const bool number_first = peek().type == Tok::kNumber;
    Value v = power_of_atom();
    while (starts_factor(peek().type)) {
      const Tok next = peek().type, previous = tokens_[pos_ - 1].type;
      if (single_factor || next == Tok::kNumber) throw Refuse{};  // "x2", "\sqrt{2}3"
      if (number_first && next == Tok::kFrac) throw Refuse{};     // "2\frac{1}{2}" is a mixed number
      // "k(x)", "x(x^2)", "x^{2}(3)", "x{(2)}" are function calls to math-verify, "2(3)" is 5: a
      // bracket is a factor only after a closing parenthesis ("(x+1)(x-1)")
      if (next == Tok::kOpenBrace || (next == Tok::kOpen && previous != Tok::kClose)) throw Refuse{};
      if (next == Tok::kOpen && bare_number_group(pos_ - 3) && bare_number_group(pos_)) throw Refuse{};  // "(2)(3)" is 5
      v = product(v, power_of_atom(), ctx_);
    }
    return v;
  }

  Value power_of_atom() {
    const Tok first = peek().type;
    Value base = atom();
    if (peek().type != Tok::kCaret) return base;
    if (first == Tok::kFrac || first == Tok::kSqrt || first == Tok::kLn) throw Refuse{};  // "\sqrt{2}^2", "\ln 2^3"
    take();
    Value exponent;
    if (peek().type == Tok::kNumber) {
      if (peek().text.size() != 1) throw Refuse{};  // "x^23" is x**23 to math-verify, x^2 * 3 in LaTeX
      exponent = number(take());
    } else if (peek().type == Tok::kOpenBrace) {
      take();
      exponent = expression(Tok::kCloseBrace);
    } else {
      throw Refuse{};
    }
    if (peek().type == Tok::kCaret) throw Refuse{};  // "2^3^2"
    return power(base, exponent, ctx_);
  }

  Value number(const Token& t) {
    std::string_view digits = t.text;
    const size_t point = digits.find('.');
    if ((point == std::string_view::npos ? digits.size() : point) > 1 && digits[0] == '0') throw Refuse{};
    if (point == std::string_view::npos && digits.size() >= kHugeDigits) return huge_value();
    if (digits.size() > kMaxDigits + (point != std::string_view::npos)) throw Refuse{};
    int64_t n = 0, den = 1;
    for (size_t k = 0; k < digits.size(); ++k) {
      if (k == point) continue;
      n = n * 10 + (digits[k] - '0');
      if (point != std::string_view::npos && k > point) den *= 10;
    }
    Rational value = need(make_rational(n, den));
    if (point != std::string_view::npos) {
      ctx_.decimal = true;
      ctx_.inexact_decimal = ctx_.inexact_decimal || (value.den & (value.den - 1)) != 0;
    }
    return Value{constant(value)};
  }

  // \ln of a positive rational: "\ln 2", "\ln(2)", "\ln{2}". math-verify reads "\ln 2 \cdot 3" as ln 6
  // and "\ln 2x" as ln(2x), so nothing but '+', '-' or the end may follow, or '*', '/' after "(...)".
  Value logarithm() {
    Value arg;
    bool parenthesised = false;
    if (peek().type == Tok::kOpen) {
      take();
      arg = expression(Tok::kClose);
      parenthesised = true;
    } else if (peek().type == Tok::kOpenBrace) {
      take();
      arg = expression(Tok::kCloseBrace);
    } else if (peek().type == Tok::kNumber) {
      arg = number(take());
    } else {
      throw Refuse{};
    }
    const Tok next = peek().type;
    const bool ends = next == Tok::kEnd || next == Tok::kClose || next == Tok::kCloseBrace || is_sign(next) ||
                      (parenthesised && (next == Tok::kTimes || next == Tok::kSlash));
    std::optional<Rational> q = rational_value(arg);
    if (!ends || !q || q->num <= 0) throw Refuse{};
    size_t k = 0;
    while (k < ctx_.log_args.size() && !rational_equal(ctx_.log_args[k], *q)) ++k;
    if (k == ctx_.log_args.size()) {
      if (k >= kLogSlots) throw Refuse{};
      ctx_.log_args.push_back(*q);
    }
    Term term;
    term.monomial.exponent[kFirstLogSlot + k] = 1;
    term.coef = Rational{1, 1};
    return Value{Poly{term}};
  }

  // An argument of \frac or \sqrt: {expression}, one digit or one letter.
  Value argument(bool allow_space) {
    const Token& t = peek();
    if (t.space_before && !allow_space) throw Refuse{};
    if (t.type == Tok::kOpenBrace) {
      take();
      return expression(Tok::kCloseBrace);
    }
    if (t.type == Tok::kNumber && t.text.size() == 1) return number(take());
    if (t.type == Tok::kVar) return variable(take());
    throw Refuse{};
  }

  Value variable(const Token& t) {
    Term term;
    term.monomial.exponent[variable_slot(t.text[0])] = 1;
    term.coef = Rational{1, 1};
    return Value{Poly{term}};
  }

  Value atom() {
    const Token& t = take();
    switch (t.type) {
      case Tok::kNumber:
        return number(t);
      case Tok::kVar:
        return variable(t);
      case Tok::kPi: {
        Term term;
        term.monomial.exponent[kPiSlot] = 1;
        term.coef = Rational{1, 1};
        return Value{Poly{term}};
      }
      case Tok::kOpen:
        return expression(Tok::kClose);
      case Tok::kOpenBrace:
        return expression(Tok::kCloseBrace);
      case Tok::kFrac: {
        // "\frac12": one two-digit token is both arguments (math-verify's reading too)
        if (peek().type == Tok::kNumber && peek().text.size() == 2 && !peek().space_before) {
          std::string_view d = take().text;
          return quotient(Value{constant(Rational{d[0] - '0', 1})}, Value{constant(Rational{d[1] - '0', 1})}, ctx_);
        }
        Value a = argument(true);
        Value b = argument(false);
        return quotient(a, b, ctx_);
      }
      case Tok::kSqrt:
        return square_root(argument(true), ctx_);
      case Tok::kLn:
        return logarithm();
      default:
        throw Refuse{};
    }
  }

  const std::vector<Token>& tokens_;
  Context& ctx_;
  size_t pos_ = 0;
  int depth_ = 0;
};

// What math-verify is given: the text without surrounding space and trailing punctuation.
std::string_view cleaned(std::string_view s) {
  s = trim(s);
  while (!s.empty() && std::string_view(".,;:!? \t\n\r\f\v").find(s.back()) != std::string_view::npos) {
    s.remove_suffix(1);
  }
  return s;
}

// An optionally signed run of digits of any length, without leading zeros; nothing otherwise.
std::optional<std::string_view> integer_literal(std::string_view s, bool& negative) {
  negative = !s.empty() && s[0] == '-';
  if (negative) s.remove_prefix(1);
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
  }
  return s;
}

long double term_value(const Term& t, const Context& ctx) {
  long double v = static_cast<long double>(t.coef.num) / static_cast<long double>(t.coef.den);
  if (t.monomial.exponent[kPiSlot] != 0) v *= std::pow(3.14159265358979323846264338327950288L, t.monomial.exponent[kPiSlot]);
  for (size_t k = 0; k < ctx.primes.size(); ++k) {
    if (t.monomial.radicals & (1u << k)) v *= std::sqrt(static_cast<long double>(ctx.primes[k]));
  }
  for (size_t k = 0; k < ctx.log_args.size(); ++k) {
    if (int e = t.monomial.exponent[kFirstLogSlot + k]; e != 0) {
      v *= std::pow(std::log(static_cast<long double>(ctx.log_args[k].num) / ctx.log_args[k].den), e);
    }
  }
  return v;
}

struct Numeric {
  long double value = 0;
  long double magnitude = 0;  // sum of |terms|: the scale of the rounding error
};

Numeric numeric(const Poly& p, const Context& ctx) {
  Numeric n;
  for (const Term& t : p) {
    long double v = term_value(t, ctx);
    n.value += v;
    n.magnitude += std::fabs(v);
  }
  return n;
}

// With decimals, equal is certain for math-verify only when its floats compute exactly: every decimal
// is a dyadic rational (0.5, 0.25, 2.75) and every coefficient fits well inside a double's mantissa.
bool float_exact(const Value& a, const Value& g, const Context& ctx) {
  constexpr int64_t kExactBound = int64_t{1} << 40;
  if (ctx.inexact_decimal) return false;
  for (const Poly* p : {&a.num, &a.den, &g.num, &g.den}) {
    for (const Term& t : *p) {
      if (t.coef.num >= kExactBound || t.coef.num <= -kExactBound || t.coef.den >= kExactBound) return false;
    }
  }
  return true;
}

bool has_variables(const Value& v) {
  for (const Poly* p : {&v.num, &v.den}) {
    for (const Term& t : *p) {
      if (t.monomial.has_variables()) return true;
    }
  }
  return false;
}

bool bare_variable(const Value& v) {
  if (v.huge || !poly_equal(v.den, one()) || v.num.size() != 1) return false;
  const Term& t = v.num[0];
  if (t.coef.num != 1 || t.coef.den != 1 || t.monomial.radicals != 0) return false;
  for (int k = kVariables; k < kSlots; ++k) {
    if (t.monomial.exponent[k] != 0) return false;
  }
  int ones = 0;
  for (int k = 0; k < kVariables; ++k) {
    if (t.monomial.exponent[k] == 1) {
      ++ones;
    } else if (t.monomial.exponent[k] != 0) {
      return false;
    }
  }
  return ones == 1;
}

// Different canonical forms: "not equivalent" once the difference is clearly nonzero in floating
// point too. Constants are compared by value; with variables, some coefficient of the difference
// (a constant in \pi and radicals) must be clearly nonzero.
Verdict different(const Value& a, const Value& g, const Poly& difference, const Context& ctx) {
  if (!has_variables(a) && !has_variables(g)) {
    Numeric an = numeric(a.num, ctx), ad = numeric(a.den, ctx), gn = numeric(g.num, ctx), gd = numeric(g.den, ctx);
    if (ad.value == 0 || gd.value == 0) return kUndecided;
    long double x = an.value / ad.value, y = gn.value / gd.value;
    long double scale = std::fmax(1.0L, std::fmax(std::fmax(std::fabs(x), std::fabs(y)),
                                                  std::fmax(an.magnitude / std::fabs(ad.value),
                                                            gn.magnitude / std::fabs(gd.value))));
    if (!std::isfinite(x) || !std::isfinite(y) || !std::isfinite(scale)) return kUndecided;
    // with a decimal, math-verify may round both to 6 places: more than 2e-6 apart never round together
    const long double gap = std::fmax(kClearlyNonzero * scale, ctx.decimal ? kRoundingGap : 0.0L);
    return std::fabs(x - y) > gap ? kNotEquivalent : kUndecided;
  }
  for (size_t begin = 0; begin < difference.size();) {
    size_t end = begin;
    Numeric group;
    auto same_variables = [&](const Term& t) {
      return std::memcmp(t.monomial.exponent.data(), difference[begin].monomial.exponent.data(), kVariables) == 0;
    };
    while (end < difference.size() && same_variables(difference[end])) {
      long double v = term_value(difference[end], ctx);
      group.value += v;
      group.magnitude += std::fabs(v);
      ++end;
    }
    if (std::fabs(group.value) > kClearlyNonzero * std::fmax(1.0L, group.magnitude)) return kNotEquivalent;
    begin = end;
  }
  return kUndecided;
}

}  // namespace

Verdict algebraic_verdict(std::string_view answer, std::string_view gold) {
  answer = cleaned(answer);
  gold = cleaned(gold);
  bool answer_negative = false, gold_negative = false;
  std::optional<std::string_view> ai = integer_literal(answer, answer_negative);
  std::optional<std::string_view> gi = integer_literal(gold, gold_negative);
  if (ai && gi) {  // integers of any length compare exactly (math-verify: Integer == Integer)
    const bool zero = *ai == "0" && *gi == "0";
    return zero || (*ai == *gi && answer_negative == gold_negative) ? kEquivalent : kNotEquivalent;
  }
  try {
    Context ctx;
    Value a = Parser(tokenize(answer), ctx).whole();
    Value g = Parser(tokenize(gold), ctx).whole();
    if (a.huge || g.huge) {
      if (a.huge && g.huge) return kUndecided;
      std::optional<Rational> small = rational_value(a.huge ? g : a);
      if (!small) return kUndecided;
      const long double magnitude = std::fabs(static_cast<long double>(small->num) / small->den);
      return magnitude < kHugeBound ? kNotEquivalent : kUndecided;
    }
    Poly difference = add(mul(a.num, g.den, ctx), mul(g.num, a.den, ctx), true);
    if (difference.empty()) {
      const bool doubtful = bare_variable(a) || bare_variable(g) || radical_denominator(a) || radical_denominator(g) ||
                            (ctx.decimal && !float_exact(a, g, ctx));  // "0.1x+0.2x" is not 0.3x to math-verify's floats
      return doubtful ? kUndecided : kEquivalent;
    }
    return different(a, g, difference, ctx);
  } catch (const Refuse&) {
    return kUndecided;
  }
}

}  // namespace spice::verify
