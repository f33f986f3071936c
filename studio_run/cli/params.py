"""The option mini-languages as click parameter types: ``DIR:TAG``, ``EXP/TAG[@VERSION][:ALIAS]``,
``NAME=RANGE`` (``-hp``) and durations (``2h``).

Parsing lives in ``studio_run.refs`` (no click there); these types only turn its ValueErrors
into click usage errors, so the rules are tested from a table of valid and
invalid strings (``tests/cli/test_params.py``) and every command reports a bad value the same way.
"""

from __future__ import annotations

from typing import Any, Optional

import click

from ..config import parse_duration
from ..errors import ConfigError
from ..hyperparams import Value, parse_hyperparam
from ..refs import ArtifactRef, CaptureSpec, ReuseSpec, check_tag, parse_ref, split_capture

__all__ = ["ARTIFACT_REF", "CAPTURE", "CAPTURE_ONCE", "DURATION", "DURATION_OR_ZERO", "HYPERPARAM", "REUSE"]


class _CaptureType(click.ParamType):
    """``DIR:TAG``; with ``urls``, also ``URL:TAG`` (fetched once: only ``--capture-once``)."""

    def __init__(self, urls: bool) -> None:
        self.urls = urls
        self.name = "DIR|URL:TAG" if urls else "DIR:TAG"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> CaptureSpec:
        if isinstance(value, CaptureSpec):
            return value
        text = str(value)
        try:
            path, tag = split_capture(text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        spec = CaptureSpec.parse(path, tag)
        if spec.is_url and not self.urls:
            self.fail(f"{spec.tag!r}: a URL cannot be captured continuously; fetch it once with "
                      "--capture-once URL:TAG", param, ctx)
        return spec


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


class _HyperparamType(click.ParamType):
    """``NAME=RANGE`` -> (name, values): ``lr=0.1,0.01``, ``layers=2:4``, ``lr=0.01:4l:10``."""

    name = "NAME=RANGE"

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> tuple[str, list[Value]]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_hyperparam(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _DurationType(click.ParamType):
    """``30s``, ``10m``, ``2h``, ``1d`` -> seconds (``config.parse_duration``); ``0s`` only
    with ``allow_zero``."""

    name = "DURATION"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value, "duration", allow_zero=self.allow_zero)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


CAPTURE = _CaptureType(urls=False)
CAPTURE_ONCE = _CaptureType(urls=True)
ARTIFACT_REF = _RefType()
REUSE = _ReuseType()
HYPERPARAM = _HyperparamType()
DURATION = _DurationType()
DURATION_OR_ZERO = _DurationType(allow_zero=True)
