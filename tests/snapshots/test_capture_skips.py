"""One file that cannot be captured never costs the rest: it is left out and named, with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from studio_run.objects.repository import Repository
from studio_run.snapshots.blobcache import BlobCache
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.restore import materialize
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage
from tests.helpers import REPO

NOBODY = 65534


@pytest.fixture
def repo(tmp_path):
    return Repository(LocalStorage(str(tmp_path / "store")))


def _contents(root) -> dict[str, bytes]:
    found = {}
    for d, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(d, name)
            if not os.path.islink(full):
                found[os.path.relpath(full, root)] = open(full, "rb").read()
    return found


def test_a_fifo_is_named_and_the_rest_is_captured(tmp_path, repo):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    os.mkfifo(src / "sub" / "pipe")
    result = snapshot(str(src), repo, StatCache())
    assert [e.path for e in result.manifest.entries] == ["a.txt", "sub/b.txt"]
    assert result.skipped == ("sub/pipe",)
    assert result.skip_reasons == ("sub/pipe: not a regular file (a FIFO)",)


def test_links_leading_nowhere_or_to_a_folder_outside_are_named(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.txt").write_text("kept")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(str(tmp_path / "elsewhere"), src / "to-folder")
    os.symlink("../missing\nname", src / "dangling")
    result = snapshot(str(src), repo, StatCache())
    assert [e.path for e in result.manifest.entries] == ["kept.txt"]
    assert result.skipped == ("dangling", "to-folder")
    assert result.skip_reasons == (
        "dangling: symlink to ../missing\\nname, which does not exist",
        f"to-folder: symlink to {tmp_path / 'elsewhere'} outside the artifact, not a file",
    )


def test_a_file_vanishing_before_it_is_read_is_named_and_the_rest_kept(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.txt").write_text("old")
    os.utime(src / "old.txt", (1_600_000_000, 1_600_000_000))
    cache = StatCache()
    snapshot(str(src), repo, cache)  # now old.txt is known by its stat: no read next time
    (src / "new.txt").write_text("new")

    def delete_new(_nbytes: int) -> None:  # called for old.txt after the walk, before any read
        if (src / "new.txt").exists():
            (src / "new.txt").unlink()

    result = snapshot(str(src), repo, cache, progress=delete_new)
    assert [e.path for e in result.manifest.entries] == ["old.txt"]
    assert result.skip_reasons == ("new.txt: vanished while it was being captured",)


_AS_NOBODY = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from studio_run.objects.repository import Repository
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage
import concurrent.futures.thread, encodings.idna  # loaded while the interpreter's folder is readable
os.setgroups([])
os.setresgid(%(id)d, %(id)d, %(id)d)
os.setresuid(%(id)d, %(id)d, %(id)d)
result = snapshot(sys.argv[2], Repository(LocalStorage(sys.argv[3])), StatCache())
print(json.dumps({"files": [e.path for e in result.manifest.entries], "reasons": list(result.skip_reasons)}))
""" % {"id": NOBODY}


def test_files_a_normal_user_cannot_read_are_named_and_the_rest_captured():
    top = tempfile.mkdtemp(prefix="studio-perm-")  # below /tmp: every folder above is searchable
    try:
        os.chmod(top, 0o755)
        src = os.path.join(top, "src")
        os.makedirs(os.path.join(src, "locked"))
        for rel, mode in (("ok.txt", 0o644), ("secret.bin", 0o000), ("locked/inner.txt", 0o644)):
            with open(os.path.join(src, rel), "w") as f:
                f.write(rel)
            os.chmod(os.path.join(src, rel), mode)
        os.chmod(os.path.join(src, "locked"), 0o000)
        os.chmod(src, 0o755)
        store = os.path.join(top, "store")
        os.mkdir(store)
        os.chown(store, NOBODY, NOBODY)
        done = subprocess.run([sys.executable, "-c", _AS_NOBODY, REPO, src, store],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["files"] == ["ok.txt"]
        assert result["reasons"] == ["locked/: Permission denied", "secret.bin: Permission denied"]
    finally:
        os.chmod(os.path.join(top, "src", "locked"), 0o755)
        shutil.rmtree(top)


def test_a_single_file_artifact_that_cannot_be_read_fails_the_capture(tmp_path, repo):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError):
        snapshot(str(tmp_path / "pipe"), repo, StatCache())
    with pytest.raises(FileNotFoundError):
        snapshot(str(tmp_path / "missing"), repo, StatCache())


def _sparse_file(path, size: int) -> bytes:
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size // 2)
        f.write(b"data in the middle")
    return open(path, "rb").read()


def test_a_sparse_file_is_restored_sparse(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    size = 24 << 20  # above the chunking size: holes across chunks
    payload = _sparse_file(src / "sparse.img", size)
    (src / "dense.bin").write_bytes(b"\0" * (1 << 20))
    if os.stat(src / "sparse.img").st_blocks * 512 >= size // 2:
        pytest.fail("this file system does not keep holes: the test cannot show anything")
    result = snapshot(str(src), repo, StatCache())
    entries = {e.path: e for e in result.manifest.entries}
    assert entries["sparse.img"].sparse and not entries["dense.bin"].sparse
    out = tmp_path / "out"
    materialize(repo, result.manifest, str(out))
    cached, _hit = BlobCache(str(tmp_path / "cache")).ensure(repo, result.digest, result.manifest)
    for folder in (str(out), cached):
        st = os.stat(os.path.join(folder, "sparse.img"))
        assert st.st_size == size and st.st_blocks * 512 < size // 4
        assert open(os.path.join(folder, "sparse.img"), "rb").read() == payload
        assert _contents(folder)["dense.bin"] == b"\0" * (1 << 20)
