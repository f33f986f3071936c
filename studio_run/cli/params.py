"""The option mini-languages as click parameter types: ``DIR:TAG`` and ``EXP/TAG[@VERSION][:ALIAS]``.

Parsing lives in ``studio_run.refs`` (no click there); these types only turn its ValueErrors
into click usage errors, so the rules are tested from a table of valid and
invalid strings (``tests/cli/test_params.py``) and every command reports a bad value the same way.
"""

from __future__ import annotations

from typing import Any, Optional

import click

from ..refs import ArtifactRef, CaptureSpec, ReuseSpec, check_tag, parse_ref, split_capture

__all__ = ["ARTIFACT_REF", "CAPTURE", "CAPTURE_ONCE", "REUSE"]


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


CAPTURE = _CaptureType(urls=False)
CAPTURE_ONCE = _CaptureType(urls=True)
ARTIFACT_REF = _RefType()
REUSE = _ReuseType()
