// Internals of the exact algebra (verify_algebra.cpp reads answers and decides, verify_algebra_values.cpp
// computes): canonical values, their arithmetic and their evaluation in long double. Every function
// throws Refuse when a bound is passed or a value leaves what the algebra holds; the item is undecided.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "verify.h"

namespace spice::verify::algebra {

struct Refuse {};

constexpr int kVariables = 24;  // a-z without e and i
constexpr int kPiSlot = kVariables;
constexpr int kLogSlots = 4;  // \ln of up to four different positive rationals, as opaque atoms
constexpr int kFirstLogSlot = kVariables + 1;
constexpr int kSlots = kVariables + 1 + kLogSlots;
constexpr int kMaxExponent = 64;
constexpr size_t kMaxTerms = 96;
constexpr size_t kMaxRadicals = 16;
constexpr int64_t kMaxRadicand = 10000000000;  // trial division up to 10^5
constexpr long kWorkBudget = 200000;           // term products per item

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

Poly one();

// A value: num / den, or a positive integer of at least 10^18 whose digits are not kept ("huge").
struct Value {
  Poly num;
  Poly den = one();
  bool huge = false;
};

Rational need(std::optional<Rational> r);  // the rational, or Refuse on overflow
Poly constant(Rational c);
bool poly_equal(const Poly& a, const Poly& b);
Poly add(const Poly& a, const Poly& b, bool subtract);
Poly mul(const Poly& a, const Poly& b, Context& ctx);
bool radical_denominator(const Value& v);
Value sum(const Value& a, const Value& b, bool subtract, Context& ctx);
Value product(const Value& a, const Value& b, Context& ctx);
Value quotient(const Value& a, const Value& b, Context& ctx);
std::optional<Rational> rational_value(const Value& v);  // a constant without \pi, radicals or logarithms
Value huge_value();
Value power(const Value& base, const Value& exponent, Context& ctx);
Value square_root(const Value& v, Context& ctx);

struct Numeric {
  long double value = 0;
  long double magnitude = 0;  // sum of |terms|: the scale of the rounding error
};

long double term_value(const Term& t, const Context& ctx);  // variables are not read
Numeric numeric(const Poly& p, const Context& ctx);

}  // namespace spice::verify::algebra
