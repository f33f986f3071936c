"""Incremental capture: what is read, what is written, and that nothing torn is stored."""

from __future__ import annotations

import os
import threading

import pytest

from studio_run.objects.digest import hash_bytes
from studio_run.objects.repository import Repository
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.restore import materialize
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage


@pytest.fixture
def repo(tmp_path):
    return Repository(LocalStorage(str(tmp_path / "store")))


def _store_bytes(repo: Repository) -> int:
    """Content bytes in the store: loose objects and packs (not their indexes)."""
    total = 0
    for top, keep in (("objects", ""), ("packs", ".pack")):
        root = os.path.join(repo.storage.root, top)
        total += sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files
                     if f.endswith(keep))
    return total


def _make_tree(root, count: int) -> None:
    for i in range(count):
        folder = root / f"d{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_text(f"file {i}\n" * 20)


def _age(root) -> None:
    """Back-date mtimes so the racy-entry rule does not force a re-read (as if written a while ago)."""
    for d, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(d, f), (1_600_000_000, 1_600_000_000))


def test_unchanged_folder_of_1000_files_writes_nothing_the_second_time(tmp_path, repo):
    src = tmp_path / "src"
    _make_tree(src, 1000)
    _age(src)
    cache = StatCache(str(tmp_path / "stat.sqlite"))
    first = snapshot(str(src), repo, cache)
    assert first.files_written == 1000 and first.bytes_written == _store_bytes(repo)
    before = _store_bytes(repo)
    second = snapshot(str(src), repo, StatCache(str(tmp_path / "stat.sqlite")), previous=first.manifest)
    assert second.digest == first.digest
    assert second.bytes_written == 0 and second.files_read == 0
    assert _store_bytes(repo) == before


def test_one_changed_file_is_the_only_one_read_and_written(tmp_path, repo):
    src = tmp_path / "src"
    _make_tree(src, 100)
    _age(src)
    cache = StatCache()
    first = snapshot(str(src), repo, cache)
    (src / "d3" / "f3.txt").write_text("changed")
    second = snapshot(str(src), repo, cache, previous=first.manifest)
    assert second.files_read == 1 and second.files_written == 1 and second.bytes_written == len("changed")
    assert second.digest != first.digest


def test_identical_content_is_stored_once_across_folders(tmp_path, repo):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "same.bin").write_bytes(b"z" * 5000)
        (tmp_path / name / "copy.bin").write_bytes(b"z" * 5000)
    cache = StatCache()
    a = snapshot(str(tmp_path / "a"), repo, cache)
    b = snapshot(str(tmp_path / "b"), repo, cache)
    assert a.bytes_written == 5000 and b.bytes_written == 0
    assert _store_bytes(repo) == 5000


def test_large_files_are_copied_and_hashed_in_one_pass(tmp_path, repo):
    (tmp_path / "src").mkdir()
    payload = os.urandom(3 << 20)
    (tmp_path / "src" / "big.bin").write_bytes(payload)
    result = snapshot(str(tmp_path / "src"), repo, StatCache())
    (entry,) = result.manifest.entries
    assert entry.digest == hash_bytes(payload) and result.bytes_written == len(payload)
    assert open(repo.storage.path_of(repo.object_key(entry.digest)), "rb").read() == payload


def test_single_file_artifact(tmp_path, repo):
    (tmp_path / "cfg.yaml").write_text("lr: 0.1\n")
    result = snapshot(str(tmp_path / "cfg.yaml"), repo, StatCache())
    assert result.manifest.single_file and [e.path for e in result.manifest.entries] == ["cfg.yaml"]
    path = materialize(repo, result.manifest, str(tmp_path / "out"))
    assert open(path).read() == "lr: 0.1\n"


def test_symlinks_inside_stay_links_and_outward_ones_store_content(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.txt").write_text("inside")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink("real.txt", src / "inner")
    os.symlink(str(tmp_path / "outside.txt"), src / "outer")
    os.symlink("/nonexistent/dir", src / "dangling")
    result = snapshot(str(src), repo, StatCache())
    kinds = {e.path: (e.type, e.target) for e in result.manifest.entries}
    assert kinds["inner"] == ("link", "real.txt")
    assert kinds["outer"][0] == "file" and "dangling" not in kinds
    assert result.skipped == ("dangling",)
    out = tmp_path / "out"
    materialize(repo, result.manifest, str(out))
    assert os.readlink(out / "inner") == "real.txt" and (out / "outer").read_text() == "outside"


def test_a_file_rewritten_during_capture_is_never_stored_torn(tmp_path, repo):
    src = tmp_path / "src"
    src.mkdir()
    target = src / "ckpt.bin"
    versions = [bytes([i]) * (2 << 20) for i in range(4)]
    target.write_bytes(versions[0])
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i = (i + 1) % len(versions)
            with open(target, "r+b") as f:  # rewrite in place, the worst case
                f.write(versions[i])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        results = [snapshot(str(src), repo, StatCache(), retries=2) for _ in range(5)]
    finally:
        stop.set()
        thread.join()
    allowed = {hash_bytes(v) for v in versions}
    for result in results:
        for entry in result.manifest.entries:
            assert entry.digest in allowed



def test_a_partly_rewritten_large_file_stores_only_the_changed_chunks(tmp_path, repo):
    from studio_run.objects.digest import FILE_CHUNK

    src = tmp_path / "src"
    src.mkdir()
    big = src / "ckpt.bin"
    payload = bytearray(os.urandom(40 << 20))
    big.write_bytes(payload)
    _age(src)
    cache = StatCache()
    first = snapshot(str(src), repo, cache)
    (entry,) = first.manifest.entries
    assert len(entry.chunks) == 10 and first.bytes_written == len(payload)
    change = os.urandom(6 << 20)
    offset = (13 << 20) + 12345  # not chunk-aligned: bytes 13-19 MiB touch chunks 3 and 4
    with open(big, "r+b") as f:
        f.seek(offset)
        f.write(change)
    payload[offset:offset + len(change)] = change
    second = snapshot(str(src), repo, cache, previous=first.manifest)
    assert second.bytes_written == 2 * FILE_CHUNK
    out = tmp_path / "out"
    materialize(repo, second.manifest, str(out))
    assert (out / "ckpt.bin").read_bytes() == bytes(payload)
    third = snapshot(str(src), repo, StatCache(), previous=None)  # no stat cache: re-read, nothing new
    assert third.digest == second.digest and third.bytes_written == 0
