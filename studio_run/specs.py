"""The option mini-languages, as click parameter types: ``DIR:TAG`` and ``EXP/TAG[@VERSION][:ALIAS]``.

Parsing lives here, not in the commands, so the rules are tested from a table of valid and
invalid strings (``tests/test_specs.py``) and every command reports a bad value the same way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Optional

import click

__all__ = ["ARTIFACT_REF", "ArtifactRef", "CAPTURE", "CaptureSpec", "REUSE", "ReuseSpec", "check_tag"]

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_tag(tag: str) -> bool:
    """Whether ``tag`` is a valid artifact tag or alias (letters, digits, ``._-``)."""
    return bool(_TAG.match(tag))


@dataclass(frozen=True)
class CaptureSpec:
    """A folder (or file) to snapshot under a tag."""

    path: str
    tag: str


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


class _CaptureType(click.ParamType):
    name = "DIR:TAG"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> CaptureSpec:
        if isinstance(value, CaptureSpec):
            return value
        text = str(value)
        path, sep, tag = text.rpartition(":")
        if not sep or not path:
            self.fail(f"{text!r} needs the form DIR:TAG, e.g. ~/weights:weights", param, ctx)
        if not check_tag(tag):
            self.fail(f"tag {tag!r} in {text!r} must be letters, digits, '.', '_' or '-'", param, ctx)
        return CaptureSpec(os.path.abspath(os.path.expanduser(path)), tag)


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
    from .metadata import check_experiment_name
    from .errors import UsageError

    try:
        check_experiment_name(exp)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    return ArtifactRef(exp, tag, version or None, path or None)


class _RefType(click.ParamType):
    name = "EXP/TAG[@VERSION][/PATH]"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> ArtifactRef:
        if isinstance(value, ArtifactRef):
            return value
        try:
            return parse_ref(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _ReuseType(click.ParamType):
    name = "EXP/TAG[@VERSION][:ALIAS]"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> ReuseSpec:
        if isinstance(value, ReuseSpec):
            return value
        text = str(value)
        ref_text, sep, alias = text.partition(":")
        try:
            ref = parse_ref(ref_text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if ref.path:
            self.fail(f"{text!r}: --reuse takes a whole artifact (EXP/TAG), not a file inside it", param, ctx)
        if sep and not check_tag(alias):
            self.fail(f"alias {alias!r} in {text!r} must be letters, digits, '.', '_' or '-'", param, ctx)
        return ReuseSpec(ref, alias if sep else ref.tag)


CAPTURE = _CaptureType()
ARTIFACT_REF = _RefType()
REUSE = _ReuseType()
