"""The option mini-languages, from a table of valid and invalid strings."""

from __future__ import annotations

import os

import click
import pytest

from studio_run.cli.params import ARTIFACT_REF, CAPTURE, REUSE
from studio_run.refs import ArtifactRef, CaptureSpec, ReuseSpec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/data:data", CaptureSpec("/data", "data")),
        ("~/w:weights", CaptureSpec(os.path.expanduser("~/w"), "weights")),
        ("/a:b:tag", CaptureSpec("/a:b", "tag")),
        ("rel/dir:t.1_x-y", CaptureSpec(os.path.abspath("rel/dir"), "t.1_x-y")),
    ],
)
def test_capture_spec_valid(text, expected):
    assert CAPTURE.convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["/data", ":tag", "/data:", "/data:a/b", "/data:-x", "/d:has space"])
def test_capture_spec_invalid(text):
    with pytest.raises(click.BadParameter):
        CAPTURE.convert(text, None, None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("linreg/weights:w", ReuseSpec(ArtifactRef("linreg", "weights"), "w")),
        ("linreg/weights", ReuseSpec(ArtifactRef("linreg", "weights"), "weights")),
        ("linreg/weights@2:w", ReuseSpec(ArtifactRef("linreg", "weights", "2"), "w")),
        ("e/t@20261122T192448000000Z-1a2b3c:x",
         ReuseSpec(ArtifactRef("e", "t", "20261122T192448000000Z-1a2b3c"), "x")),
    ],
)
def test_reuse_spec_valid(text, expected):
    assert REUSE.convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["linreg", "/weights:w", "linreg/:w", "linreg/w@:x", "linreg/w:a/b", "a b/w:x",
                                  "e/t/u:x"])
def test_reuse_spec_invalid(text):
    with pytest.raises(click.BadParameter):
        REUSE.convert(text, None, None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("exp/files/checkpoints/ep3.pt", ArtifactRef("exp", "files", None, "checkpoints/ep3.pt")),
        ("exp/files@2/a@b.txt", ArtifactRef("exp", "files", "2", "a@b.txt")),
        ("exp/files", ArtifactRef("exp", "files")),
    ],
)
def test_artifact_ref_with_a_file_path(text, expected):
    assert ARTIFACT_REF.convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["exp/files/", "exp/files/a//b", "exp/files/../x", "exp/files/./x"])
def test_artifact_ref_with_a_bad_path(text):
    with pytest.raises(click.BadParameter):
        ARTIFACT_REF.convert(text, None, None)


@pytest.mark.parametrize("text", ["exp/tag", "exp/tag@3", "exp/files/a/b.pt", "exp/files@2/a.pt"])
def test_artifact_ref_round_trips_to_text(text):
    assert str(ARTIFACT_REF.convert(text, None, None)) == text
