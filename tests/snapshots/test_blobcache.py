"""The blob cache: content-keyed, read-only, atomic to fill, safe with concurrent fillers."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from studio_run.errors import IntegrityError
from studio_run.objects.repository import Repository
from studio_run.snapshots.blobcache import BlobCache
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage
from studio_run.storage.memory import MemoryStorage
from tests.helpers import REPO, corrupt_object


def _artifact(tmp_path):
    repo = Repository(LocalStorage(str(tmp_path / "store")))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(2 << 20))
    return repo, snapshot(str(src), repo, StatCache()).manifest


def test_miss_fills_then_hit_returns_the_same_path_without_copying(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    path, hit = cache.ensure(repo, manifest.digest, manifest)
    assert not hit and open(os.path.join(path, "a.txt")).read() == "alpha"
    inode = os.stat(os.path.join(path, "a.txt")).st_ino
    again, hit = cache.ensure(repo, manifest.digest, manifest)
    assert hit and again == path and os.stat(os.path.join(path, "a.txt")).st_ino == inode
    assert os.stat(os.path.join(path, "a.txt")).st_mode & 0o222 == 0
    assert os.stat(os.path.join(path, "sub")).st_mode & 0o222 == 0


def test_concurrent_fills_of_one_entry_agree(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: cache.ensure(repo, manifest.digest, manifest), range(4)))
    assert len({path for path, _ in results}) == 1
    assert cache.stats().entries == 1
    leftovers = [n for n in os.listdir(os.path.join(cache.root, manifest.digest[:2])) if n.startswith(".")]
    assert leftovers == []


def test_a_modified_entry_is_refilled(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    path, _ = cache.ensure(repo, manifest.digest, manifest)
    target = os.path.join(path, "a.txt")
    os.chmod(target, 0o644)
    with open(target, "w") as f:
        f.write("spoiled")
    again, hit = cache.ensure(repo, manifest.digest, manifest)
    assert not hit and open(os.path.join(again, "a.txt")).read() == "alpha"


def test_clean_removes_everything(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    cache.ensure(repo, manifest.digest, manifest)
    removed = cache.clean()
    assert removed.entries == 1 and removed.size > 2 << 20
    assert cache.stats().entries == 0


def _deep_artifact(tmp_path):
    """Nested folders, an executable, a chunked file, a link inside."""
    repo = Repository(LocalStorage(str(tmp_path / "store")))
    src = tmp_path / "deep"
    (src / "a" / "b" / "c").mkdir(parents=True)
    (src / "a" / "b" / "c" / "leaf.txt").write_text("leaf")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    (src / "big.bin").write_bytes(os.urandom(9 << 20))  # chunked: 3 objects
    os.symlink("a/b/c/leaf.txt", src / "link.txt")
    return repo, snapshot(str(src), repo, StatCache()).manifest, src


def test_a_fill_reproduces_every_file_mode_and_link_and_locks_every_folder(tmp_path):
    repo, manifest, src = _deep_artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    path, hit = cache.ensure(repo, manifest.digest, manifest)
    assert not hit
    assert open(os.path.join(path, "big.bin"), "rb").read() == (src / "big.bin").read_bytes()
    assert open(os.path.join(path, "link.txt")).read() == "leaf" and os.path.islink(os.path.join(path, "link.txt"))
    assert os.stat(os.path.join(path, "run.sh")).st_mode & 0o777 == 0o555
    for folder in ("a", "a/b", "a/b/c", ""):
        assert os.stat(os.path.join(path, folder)).st_mode & 0o777 == 0o555, folder
    assert cache.ensure(repo, manifest.digest, manifest) == (path, True)  # the stamp matches the walk


def test_a_corrupted_object_fails_the_fill_and_leaves_no_entry(tmp_path):
    repo, manifest, _src = _deep_artifact(tmp_path)
    corrupt_object(repo, next(e for e in manifest.entries if e.path == "big.bin").chunks[1][0])
    cache = BlobCache(str(tmp_path / "cache"))
    with pytest.raises(IntegrityError, match="corrupted"):
        cache.ensure(repo, manifest.digest, manifest)
    assert cache.stats().entries == 0
    assert [n for n in os.listdir(os.path.join(cache.root, manifest.digest[:2]))] == []


def test_a_fill_from_a_store_that_is_not_on_local_disk(tmp_path):
    local, manifest, src = _deep_artifact(tmp_path)
    name = f"fill-{os.getpid()}-{id(tmp_path)}"
    remote = Repository(MemoryStorage(name))
    for digest in manifest.digests():
        remote.storage.write_bytes(remote.object_key(digest), local.read_object(digest))
    cache = BlobCache(str(tmp_path / "cache"))
    path, _ = cache.ensure(remote, manifest.digest, manifest)
    assert open(os.path.join(path, "big.bin"), "rb").read() == (src / "big.bin").read_bytes()
    assert cache.ensure(remote, manifest.digest, manifest) == (path, True)
    MemoryStorage.reset(name)


_KILLED_FILL = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from studio_run.objects.repository import Repository
from studio_run.snapshots.blobcache import BlobCache
from studio_run.storage.local import LocalStorage
repo = Repository(LocalStorage(sys.argv[2]))
manifest = repo.get_manifest(sys.argv[3])
BlobCache(sys.argv[4]).ensure(repo, sys.argv[3], manifest, lambda n: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_a_killed_fill_is_counted_and_removed_by_the_next_fill(tmp_path):
    repo, manifest = _artifact(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    killed = subprocess.run([sys.executable, "-c", _KILLED_FILL, REPO, repo.storage.root, manifest.digest, cache.root],
                            capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    stats = cache.stats()
    assert (stats.entries, stats.leftovers) == (0, 1) and stats.size > 0
    live = os.path.join(cache.root, "ab", f".tmp-{'0' * 12}-{os.getpid()}-deadbeef")  # a fill under way here
    os.makedirs(live)
    old_style = os.path.join(cache.root, "cd", f".tmp-{'1' * 12}-cafebabe")  # no pid, fresh: maybe in use
    os.makedirs(old_style)
    path, hit = cache.ensure(repo, manifest.digest, manifest)
    assert not hit and open(os.path.join(path, "a.txt")).read() == "alpha"
    assert (cache.stats().entries, cache.stats().leftovers) == (1, 2)  # the killed fill's folder is gone
    assert os.path.isdir(live) and os.path.isdir(old_style)
    os.utime(old_style, (0, 0))  # ten minutes and more later
    assert cache.remove_leftovers() == 1 and not os.path.exists(old_style)
    removed = cache.clean()
    assert (removed.entries, removed.leftovers) == (1, 1)
