"""``Uploader.remove``: a name the script no longer needs (an old top-k checkpoint) leaves the run's
files, after every earlier call for it, together with the links that read as it."""

from __future__ import annotations

import threading

import pytest

from studio_run.uploads import Uploader

from .destinations import Recording


class Removing(Recording):
    """A recording destination that also forgets removed names."""

    def remove(self, name: str) -> None:
        with self._lock:
            self.latest.pop(name, None)
            self.links.pop(name, None)
            self.calls.append(("remove", name))


def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_remove_arrives_after_the_upload_it_follows_and_takes_its_links(tmp_path):
    gate = threading.Event()
    dest = Removing(gate=gate)
    uploader = Uploader([dest], str(tmp_path / "staging"), retry_delay=0.01)
    try:
        uploader.upload_file("ckpt/a.ckpt", _write(tmp_path / "a", b"a"))
        uploader.upload_file("ckpt/b.ckpt", _write(tmp_path / "b", b"b"))
        uploader.link("ckpt/a.ckpt", "best")
        uploader.link("best", "best-again")
        assert uploader.remove("ckpt/a.ckpt") == ["ckpt/a.ckpt", "best", "best-again"]
        gate.set()  # the uploads were still held back: the removals must wait for them
        uploader.flush(30)
        assert sorted(dest.latest) == ["ckpt/b.ckpt"] and dest.links == {}
        assert dest.calls.index(("upload", "ckpt/a.ckpt")) < dest.calls.index(("remove", "ckpt/a.ckpt"))
        assert dest.calls.index(("link", "best")) < dest.calls.index(("remove", "best"))
    finally:
        assert uploader.close(5) == {}


def test_a_removed_name_can_be_uploaded_again_and_unknown_names_are_refused(tmp_path):
    dest = Removing()
    uploader = Uploader([dest], str(tmp_path / "staging"), retry_delay=0.01)
    try:
        uploader.upload_file("a.ckpt", _write(tmp_path / "a", b"one"))
        uploader.remove("a.ckpt")
        with pytest.raises(FileNotFoundError, match="a.ckpt"):
            uploader.remove("a.ckpt")
        with pytest.raises(FileNotFoundError):
            uploader.link("a.ckpt", "latest")
        uploader.upload_file("a.ckpt/inside", _write(tmp_path / "b", b"two"))  # no longer a file name
        uploader.flush(30)
        assert sorted(dest.latest) == ["a.ckpt/inside"]
    finally:
        assert uploader.close(5) == {}
