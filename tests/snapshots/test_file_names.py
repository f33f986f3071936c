"""Any file name Linux allows survives capture -> stored manifest -> restore, byte for byte."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from studio_run.objects.repository import Repository
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.restore import materialize
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage

# A name is 1..255 bytes of anything but "/" and NUL, and not "." or "..".
_NAME = st.binary(min_size=1, max_size=255).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")).filter(
    lambda b: b not in (b".", b"..")
)
_ODD = [b"back\\slash", b"new\nline", b"-rf", b"..x", b"\xff\xfe", b"caf\xc3\xa9", b"n" * 255, b"\\", b"a\\..\\b"]


def _tree(root: bytes) -> dict[bytes, bytes]:
    """Every file and link below ``root``, by relative byte path: content, or ``b"->" + target``."""
    found: dict[bytes, bytes] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = b"->" + os.readlink(full)
            else:
                with open(full, "rb") as f:
                    found[rel] = f.read()
    return found


def _round_trip(names: list[bytes], nested: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(os.fsencode(tmp), b"src")
        os.makedirs(os.path.join(src, nested))
        for i, name in enumerate(names):
            with open(os.path.join(src, name), "wb") as f:
                f.write(b"content of " + name)
            with open(os.path.join(src, nested, name), "wb") as f:
                f.write(b"%d" % i)
        os.symlink(os.path.join(b"..", names[0]), os.path.join(src, nested, b"link-" + names[0][:200]))
        repo = Repository(LocalStorage(os.path.join(tmp, "store")))
        result = snapshot(os.fsdecode(src), repo, StatCache())
        stored = Repository(LocalStorage(os.path.join(tmp, "store"))).get_manifest(result.digest)
        assert stored == result.manifest
        out = os.path.join(tmp, "out")
        materialize(repo, stored, out)
        assert _tree(os.fsencode(out)) == _tree(src)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(_NAME, min_size=1, max_size=6, unique=True), nested=_NAME)
def test_any_file_names_round_trip_through_capture_and_restore(names, nested):
    assume(nested not in names and b"link-" + names[0][:200] not in names)
    _round_trip(names, nested)


def test_the_names_that_once_failed_round_trip():
    _round_trip(_ODD, b"\\dir\n\xff")
