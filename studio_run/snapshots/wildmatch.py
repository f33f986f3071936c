"""Gitignore patterns to compiled regexes, following git's wildmatch to the letter.

Split from ``ignore`` (which decides precedence and walks folders) so each holds one job: this
module knows one line of an ignore file and nothing of files or folders. Every rule here is
checked against git itself by ``tests/snapshots/test_ignore.py``. pathspec's ``GitIgnoreSpec``
differs from git on nine of those cases (see ``benchmarks/ignore_speed.py``), which is why it is
not used.
"""

from __future__ import annotations

import re
from typing import Callable

__all__ = ["Rule", "compile_line", "escape"]

# One compiled rule as the hot loop wants it: (fullmatch, negate, dir_only, basename_only,
# length of the prefix of the .gitignore's folder to strip from a workspace-relative path).
Rule = tuple[Callable[[str], object], bool, bool, bool, int]

_POSIX_CLASSES = {  # [:name:] inside a bracket class, as regex class bodies
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "\\x21-\\x7e", "lower": "a-z", "print": "\\x20-\\x7e",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"), "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z", "xdigit": "0-9a-fA-F",
}  # fmt: skip


def escape(path: str) -> str:
    """A literal path as a gitignore pattern: glob characters and a leading ``#``/``!`` escaped."""
    return re.sub(r"([*?\[\\#!])", r"\\\1", path)


def compile_line(line: str, prefix_len: int) -> Rule | None:
    """One line of an ignore file as a rule, or None for blanks, comments and invalid patterns.

    ``prefix_len`` is the length of the ignore file's folder (``"a/b/"``) in workspace paths.
    """
    line = line.rstrip("\r\n")
    trimmed = line.rstrip(" ")  # but "foo\ " keeps its escaped space:
    line = trimmed + " " if trimmed != line and _ends_with_escape(trimmed) else trimmed
    if not line or line.startswith("#"):
        return None
    negate = line.startswith("!")
    line = line.removeprefix("!")
    dir_only = line.endswith("/") and not _ends_with_escape(line[:-1])
    line = line[:-1] if dir_only else line
    # A slash at the start or in the middle anchors the pattern to the .gitignore's folder;
    # otherwise it matches a name at any depth.
    anchored = "/" in line
    line = line.removeprefix("/")
    regex = _translate(line) if line else None
    if regex is None:
        return None
    try:
        compiled = re.compile(regex, re.DOTALL)
    except re.error:  # defensive: what cannot be compiled matches nothing, as in git
        return None
    return (compiled.fullmatch, negate, dir_only, not anchored, prefix_len)


def _ends_with_escape(text: str) -> bool:
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def _translate(pattern: str) -> str | None:
    """A regex for a gitignore pattern (no ``!``, no trailing slash), or None if invalid."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            whole_component = (i == 0 or pattern[i - 1] == "/") and (j == n or pattern[j] == "/")
            if j - i >= 2 and whole_component:
                if j == n:  # "a/**" or "**": everything below
                    out.append(".*")
                else:  # "**/" : zero or more directories
                    out.append("(?:.*/)?")
                    j += 1
            else:  # "*", and "**" that is not a whole component, stay within one name
                out.append("[^/]*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            parsed = _translate_class(pattern, i)
            if parsed is None:  # git's wildmatch gives up: the pattern matches nothing
                return None
            out.append(parsed[0])
            i = parsed[1]
        elif c == "\\":
            if i + 1 == n:  # a trailing backslash is an invalid pattern in git
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _translate_class(pattern: str, start: int) -> tuple[str, int] | None:
    """``[...]`` at ``start`` as a regex class and the index after it, or None if invalid.

    Follows git's wildmatch: an unclosed class or an unknown ``[:name:]`` invalidates the
    whole pattern, a reversed range ``[z-a]`` matches only its first character, and no class
    ever matches ``/``.
    """
    n = len(pattern)
    negate = start + 1 < n and pattern[start + 1] in "!^"
    i = start + 1 + negate
    items: list[str] = []
    first = True
    while i < n:
        c = pattern[i]
        if c == "]" and not first:
            body = "".join(items)
            return ("[^/" + body + "]" if negate else "(?!/)[" + body + "]"), i + 1
        first = False
        if c == "[" and pattern.startswith("[:", i):
            close = pattern.find("]", i + 2)
            if close == -1:
                return None
            if close - 1 >= i + 2 and pattern[close - 1] == ":":
                posix = _POSIX_CLASSES.get(pattern[i + 2 : close - 1])
                if posix is None:
                    return None
                items.append(posix)
                i = close + 1
                continue
        if c == "\\":
            i += 1
            if i == n:
                return None
            c = pattern[i]
        i += 1
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] != "]":
            high = pattern[i + 1]
            i += 2
            if high == "\\":
                if i == n:
                    return None
                high, i = pattern[i], i + 1
            items.append(re.escape(c) + ("-" + re.escape(high) if high >= c else ""))
        else:
            items.append(re.escape(c))
    return None
