// Final-answer extraction from a reasoner response: the last balanced \boxed{} / \fbox{}, else
// "the answer is ...", else (numeric kinds) the last number. An MCQ letter counts only as the reply's
// single stated answer (boxed, after an answer marker, or the whole reply), never as the last "(X)"
// somewhere, and not when the same statement names another option ("A) or B)").
// spice/verify/extract.py implements the same rules in Python; tests compare the two.
#include <cstdint>
#include <vector>

#include "verify.h"
#include "verify_ascii.h"

namespace spice::verify {

namespace {

constexpr std::string_view kBoxCommands[] = {"\\boxed", "\\fbox"};

bool is_choice_letter(char c) { return (c >= 'A' && c <= 'J') || (c >= 'a' && c <= 'j'); }
bool is_upper_choice(char c) { return c >= 'A' && c <= 'J'; }

// Position just after an answer marker ("answer:" / "answer is" / "answer is:") starting at the
// word "answer" at `p`, or npos.
size_t marker_end(std::string_view t, size_t p) {
  if (p > 0 && is_alpha(t[p - 1])) return std::string_view::npos;
  size_t q = p + 6;
  while (q < t.size() && is_space(t[q])) ++q;
  if (q < t.size() && t[q] == ':') return q + 1;
  if (match_ci(t, q, "is") && (q + 2 == t.size() || !is_alnum(t[q + 2]))) {
    q += 2;
    while (q < t.size() && is_space(t[q])) ++q;
    if (q < t.size() && t[q] == ':') ++q;
    return q;
  }
  return std::string_view::npos;
}

// End of the last answer marker in `t`, or npos; for MCQ replies also "choice is" / "option is" (the
// three marker words have six letters).
size_t last_marker(std::string_view t, bool mcq = false) {
  if (t.size() < 6) return std::string_view::npos;
  for (size_t p = t.size() - 6 + 1; p-- > 0;) {
    if (match_ci(t, p, "answer") || (mcq && (match_ci(t, p, "choice") || match_ci(t, p, "option")))) {
      size_t e = marker_end(t, p);
      if (e != std::string_view::npos) return e;
    }
  }
  return std::string_view::npos;
}

// End of the statement that starts at `q`: the line end, or a sentence end ('.', '!', '?', ';' before a
// space or the end of the text).
size_t statement_end(std::string_view t, size_t q) {
  size_t end = q;
  while (end < t.size() && t[end] != '\n') ++end;
  for (size_t j = q; j < end; ++j) {
    char c = t[j];
    if ((c == '.' || c == '!' || c == '?' || c == ';') && (j + 1 == t.size() || is_space(t[j + 1]))) return j;
  }
  return end;
}

bool word_at(std::string_view t, size_t i, size_t e, std::string_view word) {
  return match_ci(t, i, word) && i + word.size() <= e && (i == 0 || !is_alnum(t[i - 1])) &&
         (i + word.size() == t.size() || !is_alnum(t[i + word.size()]));
}

// Whether the text right after a stated letter, t[b, e), names another option: "(C)", "C)", or a
// letter after "or", "and", ',', '/' or '&' ("A) or B)", "(A) (B)"; a bare "I" only as "I)", the
// pronoun being common). A later mention ("because (A) is too small") is no second answer.
bool names_another_choice(std::string_view t, size_t b, size_t e, char letter) {
  size_t j = b;
  while (j < e && is_space(t[j])) ++j;
  if (j < e && (t[j] == ',' || t[j] == '/' || t[j] == '&')) {
    ++j;
  } else if (word_at(t, j, e, "or")) {
    j += 2;
  } else if (word_at(t, j, e, "and")) {
    j += 3;
  }
  while (j < e && is_space(t[j])) ++j;
  if (j < e && t[j] == '(') ++j;
  return j < e && is_upper_choice(t[j]) && t[j] != letter && (j + 1 == t.size() || !is_alnum(t[j + 1])) &&
         (t[j] != 'I' || (j + 1 < t.size() && t[j + 1] == ')'));
}

std::optional<std::string> phrase_answer(std::string_view t) {
  size_t q = last_marker(t);
  if (q == std::string_view::npos) return std::nullopt;
  while (q < t.size() && is_space(t[q])) ++q;
  size_t end = statement_end(t, q);
  std::string_view a = trim(t.substr(q, end - q));
  if (a.empty() || a.size() > kMaxPhraseBytes) return std::nullopt;
  return std::string(a);
}

std::optional<std::string> last_number(std::string_view t) {
  size_t n = t.size(), i = 0, best_b = 0, best_e = 0;
  bool found = false;
  while (i < n) {
    size_t j = i;
    if (t[j] == '-' && j + 1 < n && is_digit(t[j + 1])) ++j;
    if (j < n && is_digit(t[j])) {
      while (j < n && is_digit(t[j])) ++j;
      while (j + 3 < n && t[j] == ',' && is_digit(t[j + 1]) && is_digit(t[j + 2]) && is_digit(t[j + 3])) j += 4;
      if (j + 1 < n && t[j] == '.' && is_digit(t[j + 1])) {
        ++j;
        while (j < n && is_digit(t[j])) ++j;
      }
      best_b = i;
      best_e = j;
      found = true;
      i = j;
    } else {
      ++i;
    }
  }
  if (!found) return std::nullopt;
  return std::string(t.substr(best_b, best_e - best_b));
}

std::optional<char> mcq_from_text(std::string_view t) {
  // 1. after the last answer marker: "(B)" or "B", optionally after "option"/"choice", and no other letter.
  size_t q = last_marker(t, true);
  if (q != std::string_view::npos) {
    while (q < t.size() && is_space(t[q])) ++q;
    if (match_ci(t, q, "option") || match_ci(t, q, "choice")) {
      size_t r = q + 6;
      if (r < t.size() && is_space(t[r])) {
        while (r < t.size() && is_space(t[r])) ++r;
        q = r;
      }
    }
    char letter = 0;
    size_t after = q;
    if (q + 2 < t.size() && t[q] == '(' && is_upper_choice(t[q + 1]) && t[q + 2] == ')') {
      letter = t[q + 1];
      after = q + 3;
    } else if (q < t.size() && is_upper_choice(t[q]) && (q + 1 == t.size() || !is_alnum(t[q + 1]))) {
      letter = t[q];
      after = q + 1 < t.size() && (t[q + 1] == ')' || t[q + 1] == ':') ? q + 2 : q + 1;
    }
    if (letter != 0 && !names_another_choice(t, after, statement_end(t, q), letter)) return letter;
    return std::nullopt;
  }
  // 2. the whole response is a letter.
  std::string_view s = trim(t);
  if ((s.size() == 1 || (s.size() == 2 && s[1] == '.')) && is_upper_choice(s[0])) return s[0];
  return std::nullopt;
}

}  // namespace

std::optional<std::string> last_boxed(std::string_view t) {
  const size_t n = t.size();
  std::vector<int32_t> close_for(n, -1);
  std::vector<int32_t> stack;
  for (size_t i = 0; i < n; ++i) {
    if (t[i] == '{') {
      stack.push_back(static_cast<int32_t>(i));
    } else if (t[i] == '}' && !stack.empty()) {
      close_for[stack.back()] = static_cast<int32_t>(i);
      stack.pop_back();
    }
  }
  for (size_t p = n; p-- > 0;) {
    if (t[p] != '\\') continue;
    for (std::string_view cmd : kBoxCommands) {
      if (!starts_with(t, p, cmd)) continue;
      size_t j = p + cmd.size();
      while (j < n && is_space(t[j])) ++j;
      if (j < n && t[j] == '{' && close_for[j] >= 0) {
        return std::string(trim(t.substr(j + 1, close_for[j] - j - 1)));
      }
    }
  }
  return std::nullopt;
}

std::optional<char> parse_letter(std::string_view content) {
  std::string s;
  for (char c : content) {
    if (c != '$') s.push_back(c);
  }
  std::string_view v = trim(s);
  constexpr std::string_view kWrappers[] = {"\\text{", "\\textbf{", "\\mathrm{", "\\mathbf{", "\\textrm{"};
  for (int round = 0; round < 4; ++round) {
    bool unwrapped = false;
    for (std::string_view w : kWrappers) {
      if (v.size() > w.size() && starts_with(v, 0, w) && v.back() == '}') {
        v = trim(v.substr(w.size(), v.size() - w.size() - 1));
        unwrapped = true;
        break;
      }
    }
    if (!unwrapped) break;
  }
  if (v.empty()) return std::nullopt;
  char letter = 0;
  size_t after = 0;
  if (v.size() >= 3 && v[0] == '(' && is_choice_letter(v[1]) && v[2] == ')') {
    letter = to_upper(v[1]);
    after = 3;
  } else if (is_choice_letter(v[0]) &&
             (v.size() == 1 || ((v[1] == ')' || v[1] == '.' || v[1] == ':') && (v.size() == 2 || is_space(v[2]))))) {
    letter = to_upper(v[0]);
    after = v.size() == 1 ? 1 : 2;
  }
  if (letter == 0 || names_another_choice(v, after, v.size(), letter)) return std::nullopt;
  return letter;
}

std::optional<std::string> extract_answer(std::string_view response, Kind kind) {
  std::string_view t = response.size() > kMaxScanBytes ? response.substr(response.size() - kMaxScanBytes) : response;
  std::optional<std::string> box = last_boxed(t);
  if (kind == Kind::kMcq) {
    std::optional<char> letter = box ? parse_letter(*box) : mcq_from_text(t);
    if (!letter) return std::nullopt;
    return std::string(1, *letter);
  }
  if (box) {
    if (box->empty()) return std::nullopt;
    return box;
  }
  if (std::optional<std::string> phrase = phrase_answer(t)) return phrase;
  if (kind == Kind::kInteger || kind == Kind::kFloat) return last_number(t);
  return std::nullopt;
}

Kind parse_kind(std::string_view kind) {
  if (kind == "mcq") return Kind::kMcq;
  if (kind == "integer") return Kind::kInteger;
  if (kind == "float") return Kind::kFloat;
  if (kind == "expression") return Kind::kExpression;
  if (kind == "string") return Kind::kString;
  return Kind::kUnknown;
}

}  // namespace spice::verify
