// Normalisation of an extracted answer or a gold answer: LaTeX wrappers and spacing, currency,
// degrees, percent, trailing punctuation. spice/verify.py mirrors `normalize_math` and
// `string_canonical` for its string-kind fallback rule; tests compare the two.
#include "verify.h"
#include "verify_ascii.h"

namespace spice::verify {

namespace {

constexpr int kMaxUnwraps = 64;

// Replaces every occurrence of `from` by `to`; for command names (starting with a backslash and
// ending with a letter) only where the next character is not a letter, so "\left" spares "\leftarrow".
bool replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (s.find(from) == std::string::npos) return false;
  const bool command = from.size() > 1 && from[0] == '\\' && is_alpha(from.back());
  bool changed = false;
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (starts_with(s, i, from) && !(command && i + from.size() < s.size() && is_alpha(s[i + from.size()]))) {
      out.append(to);
      i += from.size();
      changed = true;
    } else {
      out.push_back(s[i++]);
    }
  }
  if (changed) s.swap(out);
  return changed;
}

// Replaces `\cmd{content}` by `content` for the first wrapper found; false when none is left.
bool unwrap_one(std::string& s) {
  constexpr std::string_view kWrappers[] = {"\\text{",   "\\textbf{", "\\textrm{", "\\textit{",
                                            "\\mathrm{", "\\mathbf{", "\\mathit{", "\\mbox{",
                                            "\\boxed{",  "\\fbox{",   "\\operatorname{"};
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') continue;
    for (std::string_view w : kWrappers) {
      if (!starts_with(s, i, w)) continue;
      size_t open = i + w.size() - 1;
      int depth = 0;
      for (size_t j = open; j < s.size(); ++j) {
        if (s[j] == '{') {
          ++depth;
        } else if (s[j] == '}' && --depth == 0) {
          s = s.substr(0, i) + s.substr(open + 1, j - open - 1) + s.substr(j + 1);
          return true;
        }
      }
    }
  }
  return false;
}

std::string collapse_spaces(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (is_space(c)) {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

Normalized normalize_math(std::string_view input) {
  Normalized r;
  std::string s(input);
  replace_all(s, "\xC2\xA0", " ");
  replace_all(s, "\xE2\x80\x89", " ");
  replace_all(s, "\xE2\x80\xAF", " ");
  replace_all(s, "\xE2\x88\x92", "-");
  replace_all(s, "\\$", "");
  replace_all(s, "$", "");
  for (std::string_view deg : {"^{\\circ}", "^\\circ", "\\degree", "\\circ", "\xC2\xB0"}) {
    if (replace_all(s, deg, "")) r.degree = true;
  }
  for (std::string_view pct : {"\\%", "%"}) {
    if (replace_all(s, pct, "")) r.percent = true;
  }
  replace_all(s, "\\left.", "");
  replace_all(s, "\\right.", "");
  for (std::string_view cmd : {"\\left", "\\right", "\\displaystyle", "\\qquad", "\\quad", "\\!", "\\;", "\\:"}) {
    replace_all(s, cmd, "");
  }
  replace_all(s, "\\dfrac", "\\frac");
  replace_all(s, "\\tfrac", "\\frac");
  replace_all(s, "{,}", ",");
  for (std::string_view sp : {"\\thinspace", "\\,", "\\ ", "~"}) replace_all(s, sp, " ");
  for (int k = 0; k < kMaxUnwraps && unwrap_one(s); ++k) {
  }
  s = collapse_spaces(s);
  size_t b = 0;
  while (b < s.size() && s[b] == ' ') ++b;
  size_t e = s.size();
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '.' || s[e - 1] == ',' || s[e - 1] == ';' || s[e - 1] == ':' ||
                   s[e - 1] == '!' || s[e - 1] == '?')) {
    --e;
  }
  r.text = s.substr(b, e - b);
  return r;
}

std::string compact(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == ' ') {
      // math-verify reads a space before a letter (its unit rule: "5 - m" is 5) or a '.' (" .5" is 0.5)
      bool keep = i + 1 < s.size() && (is_alpha(s[i + 1]) || s[i + 1] == '.' || (i > 0 && is_alnum(s[i - 1]) && is_alnum(s[i + 1])));
      if (!keep) continue;
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string string_canonical(std::string_view s) {
  std::string low;
  low.reserve(s.size());
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x80 || is_alnum(c) || is_space(c)) {
      low.push_back(to_lower(c));
    } else {
      low.push_back(' ');
    }
  }
  std::string out = collapse_spaces(low);
  size_t b = 0;
  while (b < out.size() && out[b] == ' ') ++b;
  out = out.substr(b);
  for (std::string_view article : {"the ", "an ", "a "}) {
    if (out.size() > article.size() && starts_with(out, 0, article)) {
      out = out.substr(article.size());
      break;
    }
  }
  return out;
}

bool is_plain_words(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_lower(c) && c != ' ') return false;
  }
  return true;
}

bool has_digit(std::string_view s) {
  for (char c : s) {
    if (is_digit(c)) return true;
  }
  return false;
}

std::string without_spaces(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c != ' ') out.push_back(c);
  }
  return out;
}

}  // namespace spice::verify
