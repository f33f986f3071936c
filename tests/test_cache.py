"""The blob cache: content-keyed, read-only, atomic to fill, safe with concurrent fillers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from studio_run.cache import BlobCache
from studio_run.capture import snapshot
from studio_run.objects.repository import Repository
from studio_run.statcache import StatCache
from studio_run.storage.local import LocalStorage


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
