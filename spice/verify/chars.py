"""Locale-free ASCII character classes shared by the verification modules (mirrors csrc/verify_ascii.h:
characters outside ASCII are never letters, digits or spaces here)."""

from __future__ import annotations

WS = " \t\n\r\f\v"
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def is_alpha(c: str) -> bool:
    """An ASCII letter."""
    return ("a" <= c <= "z") or ("A" <= c <= "Z")


def is_alnum(c: str) -> bool:
    """An ASCII letter or digit."""
    return is_alpha(c) or ("0" <= c <= "9")


def is_choice(c: str) -> bool:
    """An MCQ letter A-J in either case."""
    return ("A" <= c <= "J") or ("a" <= c <= "j")


def is_upper_choice(c: str) -> bool:
    """An upper-case MCQ letter A-J."""
    return "A" <= c <= "J"


def as_text(x: object) -> str:
    """Any input as text: bytes decoded (invalid bytes replaced), None as the empty string."""
    if isinstance(x, str):
        return x
    if isinstance(x, bytes | bytearray):
        return bytes(x).decode("utf-8", errors="replace")
    return "" if x is None else str(x)


def utf8_len(s: str) -> int:
    """Length in UTF-8 bytes (lone surrogates passed through), as the C++ side counts."""
    return len(s.encode("utf-8", "surrogatepass"))
