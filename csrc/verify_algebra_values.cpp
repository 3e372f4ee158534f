// Arithmetic of the exact algebra's canonical values (verify_algebra.h): sorted sparse polynomials
// with int64 rational coefficients, quotients of them, powers, square roots of rationals, and their
// evaluation in long double.
#include <algorithm>
#include <cmath>

#include "verify_algebra.h"

namespace spice::verify::algebra {

using i128 = __int128;

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
static void canonicalize(Poly& p) {
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

static Term term_product(const Term& x, const Term& y, const Context& ctx) {
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
static Term term_inverse(const Term& t, const Context& ctx) {
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

static void refuse_huge(const Value& a) {
  if (a.huge) throw Refuse{};
}

// A single-term denominator is folded into the numerator.
static Value reduce(Value v, Context& ctx) {
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

Numeric numeric(const Poly& p, const Context& ctx) {
  Numeric n;
  for (const Term& t : p) {
    long double v = term_value(t, ctx);
    n.value += v;
    n.magnitude += std::fabs(v);
  }
  return n;
}

}  // namespace spice::verify::algebra
