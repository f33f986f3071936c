"""References to what a run captures and reuses: ``DIR:TAG`` and ``EXP/TAG[@VERSION][:ALIAS]``.

Plain values and their parsers, with no click import, so the runner, the queue and the web page
share them; ``studio_run.cli.params`` only wraps them as click parameter types. The one name
rule for experiments, tags and aliases lives here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

from .errors import UsageError

__all__ = [
    "ArtifactRef",
    "CaptureSpec",
    "ReuseSpec",
    "URL_SCHEMES",
    "check_experiment_name",
    "check_name",
    "check_tag",
    "is_url",
    "parse_ref",
    "split_capture",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # matched whole: fullmatch (no "$" that lets "\n" through)
# What ``--capture-once`` fetches: text that starts with ``scheme://`` is a URL, never a path.
URL_SCHEMES = ("gs", "http", "https", "s3", "sftp")
_URL_START = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def check_name(name: str) -> bool:
    """Whether ``name`` is a valid experiment name, artifact tag or alias: letters, digits and
    ``._-``, starting with a letter or digit, at most 128 characters (one rule for all three,
    since each becomes one path segment in the store and in ``EXP/TAG`` references)."""
    return bool(_NAME.fullmatch(name or ""))


def check_tag(tag: str) -> bool:
    """Whether ``tag`` is a valid artifact tag or alias (the same rule as experiment names)."""
    return check_name(tag)


def check_experiment_name(name: str) -> str:
    """Return ``name`` if usable as an experiment name, else raise ``UsageError``."""
    if not check_name(name):
        raise UsageError(_bad_experiment(name))
    return name


def _bad_experiment(name: str) -> str:
    return f"invalid experiment name {name!r}: use letters, digits, '.', '_' and '-' (at most 128, no '/')"


def is_url(text: str) -> bool:
    """Whether ``text`` starts with ``scheme://`` (any scheme: a URL, never a local path)."""
    return bool(_URL_START.match(text))


def split_capture(text: str) -> tuple[str, str]:
    """``(path_or_url, tag)`` of ``DIR:TAG`` or ``URL:TAG``; ValueError saying what is wrong.

    A path is split at its last colon. A URL (``scheme://...``) may hold colons of its own (a
    port, a password), so its tag is what follows the last colon *after* the host, and its
    scheme must be one studio fetches (``URL_SCHEMES``).
    """
    match = _URL_START.match(text)
    if match is None:
        path, sep, tag = text.rpartition(":")
        if not sep or not path:
            raise ValueError(f"{text!r} needs the form DIR:TAG, e.g. ~/weights:weights")
    else:
        scheme = match.group(1).lower()
        if scheme not in URL_SCHEMES:
            known = ", ".join(f"{s}://" for s in URL_SCHEMES)
            raise ValueError(f"{text!r}: studio cannot fetch {scheme}:// URLs; use one of {known}")
        rest = text[match.end():]
        host_end = rest.find("/")
        if host_end < 0 or ":" not in rest[host_end:]:
            raise ValueError(f"{text!r} needs the form URL:TAG, e.g. s3://bucket/data/:data")
        path, _sep, tag = text.rpartition(":")
    if not check_tag(tag):
        raise ValueError(f"tag {tag!r} in {text!r} must be letters, digits, '.', '_' or '-'")
    return path, tag


@dataclass(frozen=True)
class CaptureSpec:
    """A folder (or file) to snapshot under a tag, or a URL to fetch once (``is_url``).

    ``path`` is resolved on the machine that parsed the flag; ``given`` keeps the text as typed
    (relative to the working directory, ``~`` unexpanded), so a machine that runs the request
    later can resolve it its own way (``resolved``). Equality compares the tag and the resolved
    path only: two spellings of one folder are the same capture.
    """

    path: str
    tag: str
    given: str = field(default="", compare=False)

    @property
    def is_url(self) -> bool:
        """Whether this spec fetches a URL (``path`` is then the URL as typed, never resolved)."""
        return is_url(self.path)

    @classmethod
    def parse(cls, path: str, tag: str, cwd: str | None = None) -> "CaptureSpec":
        """The spec for ``path`` as typed, resolved against ``cwd`` (default: the current folder)."""
        if is_url(path):
            return cls(path, tag, given=path)
        return cls(_resolve(path, cwd), tag, given=path)

    def resolved(self, cwd: str) -> "CaptureSpec":
        """This spec with ``given`` resolved again against ``cwd`` and this machine's ``~``."""
        if self.is_url:
            return self
        return CaptureSpec(_resolve(self.given or self.path, cwd), self.tag, given=self.given)


def _resolve(path: str, cwd: str | None) -> str:
    expanded = os.path.expanduser(path)
    if cwd is not None and not os.path.isabs(expanded):
        expanded = os.path.join(cwd, expanded)
    return os.path.abspath(expanded)


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact of a stored experiment: ``EXP/TAG`` with an optional ``@VERSION``, and
    optionally one file in it (``EXP/files/checkpoints/ep3.pt``)."""

    experiment: str
    tag: str
    version: Optional[str] = None
    path: Optional[str] = None

    def __str__(self) -> str:
        text = f"{self.experiment}/{self.tag}" + (f"@{self.version}" if self.version else "")
        return text + (f"/{self.path}" if self.path else "")


@dataclass(frozen=True)
class ReuseSpec:
    """An artifact to make available to the script under ``alias``."""

    ref: ArtifactRef
    alias: str


def parse_ref(text: str) -> ArtifactRef:
    """``EXP/TAG[@VERSION][/PATH]`` (VERSION: a number from 1, or a run id); ValueError if not.

    PATH names one file inside the artifact (``exp/files/checkpoints/ep3.pt``); it may hold
    ``@`` since the version is read from the TAG part only.
    """
    exp, sep, rest = text.partition("/")
    if not sep or not exp or not rest:
        raise ValueError(f"{text!r} needs the form EXPERIMENT/TAG[@VERSION], e.g. linreg/weights@2")
    rest, slash, path = rest.partition("/")
    if slash and any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"path {path!r} in {text!r} must be a relative path inside the artifact")
    tag, at, version = rest.partition("@")
    if not check_tag(tag):
        raise ValueError(f"tag {tag!r} in {text!r} must be letters, digits, '.', '_' or '-'")
    if at and not version:
        raise ValueError(f"{text!r} has '@' but no version after it")
    if not check_name(exp):
        raise ValueError(_bad_experiment(exp))
    return ArtifactRef(exp, tag, version or None, path or None)
