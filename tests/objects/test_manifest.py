"""Manifests: canonical bytes, and refusal of anything that could escape a destination."""

from __future__ import annotations

import json

import pytest

from studio_run.errors import IntegrityError, UnsafePathError
from studio_run.objects.manifest import Entry, Manifest

D = "ab" * 32


def _doc(entries):
    return json.dumps({"format": 1, "hash": "blake3", "single_file": False, "entries": entries}).encode()


def test_same_entries_give_the_same_digest_in_any_order():
    a = Manifest.build([Entry("b", size=1, digest=D), Entry("a", size=2, digest=D)])
    b = Manifest.build([Entry("a", size=2, digest=D), Entry("b", size=1, digest=D)])
    assert a.to_bytes() == b.to_bytes() and a.digest == b.digest
    assert Manifest.from_bytes(a.to_bytes()) == a


@pytest.mark.parametrize(
    "entries, why",
    [
        ([{"path": "../evil", "size": 1, "mode": 420, "digest": D}], "escapes"),
        ([{"path": "a/../../evil", "size": 1, "mode": 420, "digest": D}], "escapes"),
        ([{"path": "/etc/passwd", "size": 1, "mode": 420, "digest": D}], "absolute"),
        ([{"path": "a//b", "size": 1, "mode": 420, "digest": D}], "escapes"),
        ([{"path": "link", "type": "link", "target": "/etc"}], "outside"),
        ([{"path": "link", "type": "link", "target": "../../etc"}], "outside"),
        ([{"path": "d/link", "type": "link", "target": "../.."}], "outside"),
        ([{"path": "link", "type": "link", "target": "sub"},
          {"path": "link/x", "size": 1, "mode": 420, "digest": D}], "below the symlink"),
        ([{"path": "f", "size": 1, "mode": 420, "digest": D},
          {"path": "f/x", "size": 1, "mode": 420, "digest": D}], "below the file"),
        ([{"path": "a/b/x", "size": 1, "mode": 420, "digest": D},
          {"path": "a/link", "type": "link", "target": "b"},
          {"path": "a/link/c/y", "size": 1, "mode": 420, "digest": D}], "'a/link/c/y' lies below the symlink 'a/link'"),
        ([{"path": "x", "size": 1, "mode": 420, "digest": D},
          {"path": "x", "size": 1, "mode": 420, "digest": D}], "twice"),
    ],
)
def test_malicious_manifests_are_refused(entries, why):
    with pytest.raises(UnsafePathError, match=why):
        Manifest.from_bytes(_doc(entries))


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[]", _doc([{"path": "a", "size": 1, "mode": 420, "digest": "xyz"}]),
     _doc([{"path": "a", "size": -1, "mode": 420, "digest": D}]),
     json.dumps({"format": 99, "hash": "blake3", "entries": []}).encode()],
)
def test_malformed_manifests_raise_integrity_error(data):
    with pytest.raises(IntegrityError):
        Manifest.from_bytes(data)


def test_links_that_stay_inside_are_accepted():
    m = Manifest.from_bytes(_doc([{"path": "d/link", "type": "link", "target": "../f"},
                                  {"path": "f", "size": 1, "mode": 420, "digest": D}]))
    assert [e.path for e in m.entries] == ["d/link", "f"]


@pytest.mark.parametrize(
    "name",
    ["back\\slash", "new\nline", "-leading-dash", "..x", "x..", "...", "n" * 255, "caf\xe9",
     "bad-\udcff-utf8", "\udcc3(", "a\\..\\b", " spaced "],
)
def test_any_linux_file_name_is_accepted_and_round_trips(name):
    m = Manifest.build([Entry(name, size=1, digest=D), Entry(f"dir/{name}", type="link", target=f"../{name}")])
    again = Manifest.from_bytes(m.to_bytes())
    assert again == m and again.digest == m.digest
    assert m.to_bytes().isascii()  # canonical JSON stays ASCII whatever the names hold


@pytest.mark.parametrize(
    "path",
    ["a\x00b",  # NUL: no file name holds one
     "\ud800",  # a surrogate os.fsdecode never makes
     "\udcc3\udca9",  # the bytes of "é" spelled as two escapes: a second name for the same file
     "\udc41"],  # an escaped ASCII byte: not what os.fsdecode gives for b"A"
)
def test_names_that_are_not_canonical_file_names_are_refused(path):
    with pytest.raises(UnsafePathError, match="absolute or malformed"):
        Manifest.from_bytes(_doc([{"path": path, "size": 1, "mode": 420, "digest": D}]))


def test_manifest_with_a_link_target_that_is_not_a_file_name_is_refused():
    with pytest.raises(UnsafePathError, match="outside"):
        Manifest.from_bytes(_doc([{"path": "l", "type": "link", "target": "\ud800"}]))
