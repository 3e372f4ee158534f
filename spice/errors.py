"""Errors that are the user's to fix (a config value, a path, a data file): `spice` prints their message
as one line and exits with status 2, without a traceback. Everything else is an internal error."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message names the input (file and line, key, value)."""

    def one_line(self) -> str:
        """The message on one line (YAML and library messages may span several)."""
        return " ".join(str(self).split())


class InputNotFound(UserError, FileNotFoundError):
    """A file or folder the user named does not exist or is not the kind of thing it should be."""


class MissingPackage(UserError, ModuleNotFoundError):
    """An optional package the chosen input needs is not installed; the message names the install."""
