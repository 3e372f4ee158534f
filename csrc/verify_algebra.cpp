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
// radicals in a denominator of several terms when both are equal, and any command but \frac \dfrac
// \tfrac \sqrt \pi \ln \cdot \times \left( \right). Work is bounded: at most kMaxTokens tokens, kMaxTerms terms per polynomial,
// kWorkBudget term products and radicands up to kMaxRadicand per item.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "verify.h"
#include "verify_algebra.h"
#include "verify_ascii.h"

namespace spice::verify {

namespace {

using namespace algebra;

constexpr size_t kMaxTokens = 256;
constexpr int kMaxDepth = 32;
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
