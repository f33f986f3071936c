"""The blob cache's compact stamp: a hit needs no manifest, old stamps still work, damage refills."""

from __future__ import annotations

import json
import os

from studio_run.objects.repository import Repository
from studio_run.snapshots.blobcache import BlobCache
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage


def _artifact(tmp_path, single=False):
    repo = Repository(LocalStorage(str(tmp_path / "store")))
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    if not single:
        (src / "sub" / "b.bin").write_bytes(os.urandom(3000))
        (src / "sub" / "deeper" / "c.txt").write_text("gamma")
        os.symlink("../a.txt", src / "sub" / "link")
    root = str(src / "a.txt") if single else str(src)
    return repo, snapshot(root, repo, StatCache()).manifest


def _stamp_path(cache, digest):
    return os.path.join(cache.root, digest[:2], digest[2:], "stamp.json")


def _first_format_table(data):
    """The stamp the first format wrote: every regular file's size, mtime, inode and mode."""
    table = {}
    for dirpath, _dirs, files in os.walk(data):
        for name in files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if os.path.isfile(full) and not os.path.islink(full):
                table[os.path.relpath(full, data)] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o777]
    return table


def test_the_stamp_is_one_digest_and_a_hit_needs_no_manifest(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    path, hit = cache.ensure(repo, manifest.digest, manifest)
    stamp = json.load(open(_stamp_path(cache, manifest.digest)))
    assert not hit and stamp["version"] == 2 and stamp["files"] == 3 and stamp["artifact"] == ""
    assert len(stamp["fingerprint"]) == 64
    assert cache.cached(manifest.digest) == path
    assert cache.cached("ab" * 32) is None  # no such entry


def test_a_single_file_artifact_is_found_by_its_stamp(tmp_path):
    repo, manifest = _artifact(tmp_path, single=True)
    cache = BlobCache(str(tmp_path / "cache"))
    path, _ = cache.ensure(repo, manifest.digest, manifest)
    assert os.path.basename(path) == "a.txt" and open(path).read() == "alpha"
    assert cache.cached(manifest.digest) == path


def test_each_kind_of_modification_is_detected_without_a_manifest(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))

    def rewrite(path):
        target = os.path.join(path, "sub", "deeper", "c.txt")
        os.chmod(target, 0o644)
        with open(target, "w") as f:
            f.write("GAMMA")  # same size

    def add(path):
        os.chmod(os.path.join(path, "sub"), 0o755)
        with open(os.path.join(path, "sub", "new.txt"), "w") as f:
            f.write("x")

    def remove(path):
        os.chmod(os.path.join(path, "sub"), 0o755)
        os.unlink(os.path.join(path, "sub", "b.bin"))

    def chmod(path):
        os.chmod(os.path.join(path, "a.txt"), 0o444 | 0o111)

    for spoil in (rewrite, add, remove, chmod):
        path, _ = cache.ensure(repo, manifest.digest, manifest)
        spoil(path)
        assert cache.cached(manifest.digest) is None, spoil.__name__
        assert not os.path.exists(os.path.dirname(_stamp_path(cache, manifest.digest)))  # removed
        again, hit = cache.ensure(repo, manifest.digest, manifest)
        assert not hit and open(os.path.join(again, "sub", "deeper", "c.txt")).read() == "gamma"
        assert os.path.exists(os.path.join(again, "sub", "b.bin"))
        assert not os.path.exists(os.path.join(again, "sub", "new.txt"))
        cache.clean()


def test_a_first_format_stamp_is_understood_and_rewritten_once(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    path, _ = cache.ensure(repo, manifest.digest, manifest)
    with open(_stamp_path(cache, manifest.digest), "w") as f:
        json.dump(_first_format_table(path), f)
    assert cache.cached(manifest.digest) is None  # the old stamp does not name the artifact's path
    assert os.path.exists(_stamp_path(cache, manifest.digest))  # ... but the entry is kept
    inode = os.stat(os.path.join(path, "a.txt")).st_ino
    assert cache.ensure(repo, manifest.digest, manifest) == (path, True)
    assert os.stat(os.path.join(path, "a.txt")).st_ino == inode  # not refilled
    assert json.load(open(_stamp_path(cache, manifest.digest)))["version"] == 2
    assert cache.cached(manifest.digest) == path


def test_a_first_format_stamp_of_a_modified_entry_refills_it(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    path, _ = cache.ensure(repo, manifest.digest, manifest)
    table = _first_format_table(path)
    table["a.txt"][1] += 1  # the file's time differs from what was stamped
    with open(_stamp_path(cache, manifest.digest), "w") as f:
        json.dump(table, f)
    again, hit = cache.ensure(repo, manifest.digest, manifest)
    assert not hit and again == path and json.load(open(_stamp_path(cache, manifest.digest)))["version"] == 2


def test_a_damaged_stamp_refills_the_entry(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    path, _ = cache.ensure(repo, manifest.digest, manifest)
    for damage in ('{"version": 2, "fingerprint": "", "artifact": ""}', "[1, 2]", "{",
                   '{"version": 2, "fingerprint": "00", "artifact": "../../elsewhere"}'):
        with open(_stamp_path(cache, manifest.digest), "w") as f:
            f.write(damage)
        assert cache.cached(manifest.digest) is None, damage
        again, hit = cache.ensure(repo, manifest.digest, manifest)
        assert not hit and again == path and cache.cached(manifest.digest) == path
