// Locale-free ASCII character classes shared by the verification sources (bytes >= 0x80 are never
// letters, digits or spaces here, so UTF-8 text and invalid bytes pass through untouched).
#pragma once

#include <string_view>

namespace spice::verify {

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
inline bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
inline bool is_alpha(char c) { return is_upper(c) || is_lower(c); }
inline bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
inline char to_lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }
inline char to_upper(char c) { return is_lower(c) ? static_cast<char>(c - 'a' + 'A') : c; }

inline std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Case-insensitive (ASCII) match of `word` at position `pos` of `s`.
inline bool match_ci(std::string_view s, size_t pos, std::string_view word) {
  if (pos + word.size() > s.size()) return false;
  for (size_t k = 0; k < word.size(); ++k) {
    if (to_lower(s[pos + k]) != word[k]) return false;
  }
  return true;
}

inline bool starts_with(std::string_view s, size_t pos, std::string_view word) {
  return pos + word.size() <= s.size() && s.compare(pos, word.size(), word) == 0;
}

}  // namespace spice::verify
