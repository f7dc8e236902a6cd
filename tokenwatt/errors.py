"""Errors a user can fix. The CLI prints them as one line on stderr and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message names the field and the fix. Exit code 2, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A config field is malformed, unknown or out of range."""
