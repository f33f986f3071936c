"""Keep secrets out of records, logs, messages and pages: one place that knows what looks secret.

A script argument whose flag names a secret (``--api-key``, ``--token``, ``--db-password`` ...)
has its value replaced, in both ``--flag value`` and ``--flag=value`` forms, and a password
inside any URL-looking argument (``scheme://user:password@host``) is replaced too. The script
itself still receives the real values: only what studio stores or shows is redacted.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["MASK", "is_secret_flag", "redact_args", "redact_text"]

MASK = "***"

_SECRET_WORDS = ("key", "token", "secret", "password", "passwd")
_FLAG = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^/\s@]+)(?=@)")


def is_secret_flag(flag: str) -> bool:
    """Whether ``flag`` (``--api-key``, ``-token``) names a value that must not be recorded."""
    if not _FLAG.match(flag):
        return False
    name = flag.lstrip("-").lower()
    return any(word in name for word in _SECRET_WORDS)


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def redact_args(args: Iterable[str]) -> list[str]:
    """A command line safe to store and show: secret flags' values and URL passwords masked."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        flag, eq, _value = arg.partition("=")
        if eq and is_secret_flag(flag):
            out.append(f"{flag}={MASK}")
            continue
        if is_secret_flag(arg):
            hide_next = True
        out.append(redact_text(arg))
    return out
