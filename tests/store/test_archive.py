"""Artifacts as downloads (``studio_run.store.archive``): a tar or tar.gz stream whose extracted
files equal what was captured (bytes, modes, nanosecond times), from a local store and from S3
(packed objects); a corrupted object ends the stream with an error and a visibly truncated
archive; single files and folder listings are looked up by name and refuse unsafe paths."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import zlib

import pytest

from studio_run.config import Config
from studio_run.errors import IntegrityError, NotFoundError, UsageError
from studio_run.objects.manifest import Manifest
from studio_run.runner.capturer import Capturer, Target
from studio_run.snapshots.statcache import StatCache
from studio_run.store.archive import find_entry, iter_file, iter_tar, list_tree
from studio_run.store.open import open_store
from studio_run.store.records import RunRecord, new_run_id
from studio_run.store.store import Store
from tests.helpers import corrupt_object

BIG = os.urandom(9 << 20)  # above the chunking size: stored as three objects
FILES = {
    "a.txt": b"alpha\n" * 1000,
    "empty": b"",
    "run.sh": b"#!/bin/sh\necho hi\n",
    "sub/b.bin": os.urandom(300_000),
    "sub/deeper/c.txt": b"charlie" * 77,
    "weights.bin": BIG,
    **{f"many/m{i:03}.txt": f"small file {i}\n".encode() for i in range(40)},  # packed on S3
}
MODES = {"run.sh": 0o755, "a.txt": 0o600}
TIMES = {rel: 1_600_000_000_123_456_789 + i * 1_000_000_007 for i, rel in enumerate(sorted(FILES))}


@pytest.fixture
def store(store_location, tmp_path):
    url, options = store_location
    opened = open_store(Config(home=str(tmp_path / "home"), store=url, store_options=options, fsync=False))
    yield opened
    opened.close()


def _tree(folder) -> str:
    for rel, data in FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, MODES.get(rel, 0o644))
        os.utime(path, ns=(TIMES[rel], TIMES[rel]))
    os.symlink("sub/b.bin", folder / "link")
    return str(folder)


def _captured(store: Store, folder: str) -> RunRecord:
    record = RunRecord(experiment="exp", run_id=new_run_id(), status="finished", exit_code=0)
    capturer = Capturer(store, record, StatCache(None))
    capturer.capture([Target("w", folder, "capture")])
    assert capturer.errors == []
    if store.is_remote:
        assert store.syncer().finish(60)
    return store.records.read(record.experiment, record.run_id, 1)


def _extracted_equal(out) -> None:
    for rel, data in FILES.items():
        path = out / rel
        assert path.read_bytes() == data, rel
        st = os.stat(path)
        assert st.st_mode & 0o777 == MODES.get(rel, 0o644), rel
        assert st.st_mtime_ns == TIMES[rel], rel
    assert os.readlink(out / "link") == "sub/b.bin"


def test_a_tar_gz_extracted_by_tar_equals_what_was_captured(tmp_path, store):
    record = _captured(store, _tree(tmp_path / "w"))
    archive = tmp_path / "w.tar.gz"
    archive.write_bytes(b"".join(iter_tar(store, record, "w")))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(out)], check=True)
    _extracted_equal(out)
    assert sorted(os.listdir(out)) == sorted({p.split("/")[0] for p in FILES} | {"link"})


def test_a_plain_tar_read_by_python_equals_what_was_captured(tmp_path, store):
    record = _captured(store, _tree(tmp_path / "w"))
    data = b"".join(iter_tar(store, record, "w", gzip_level=None))
    assert data[:2] != b"\x1f\x8b" and len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        for rel, content in FILES.items():
            assert tar.extractfile(rel).read() == content
            assert members[rel].mode == MODES.get(rel, 0o644)
            assert abs(float(members[rel].pax_headers.get("mtime", members[rel].mtime)) * 1e9 - TIMES[rel]) < 1e3
        assert members["link"].issym() and members["link"].linkname == "sub/b.bin"
        assert members["sub"].isdir() and members["sub/deeper"].isdir()


def test_every_gzip_level_gives_the_same_tar(tmp_path, store):
    record = _captured(store, _tree(tmp_path / "w"))
    plain = b"".join(iter_tar(store, record, "w", gzip_level=None))
    for level in (0, 1, 6, 9):
        assert gzip.decompress(b"".join(iter_tar(store, record, "w", gzip_level=level))) == plain
    with pytest.raises(UsageError, match="gzip level"):
        iter_tar(store, record, "w", gzip_level=10)


def test_a_folder_inside_the_artifact_alone(tmp_path, store):
    record = _captured(store, _tree(tmp_path / "w"))
    data = b"".join(iter_tar(store, record, "w", gzip_level=None, path="sub"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["sub", "sub/b.bin", "sub/deeper", "sub/deeper/c.txt"]
    for bad in ("nope", "../w", "/sub", "sub/../a.txt", "a\x00b"):
        with pytest.raises(NotFoundError):
            iter_tar(store, record, "w", path=bad)


def test_unknown_tag_is_not_found_before_any_byte(tmp_path, store):
    record = _captured(store, _tree(tmp_path / "w"))
    with pytest.raises(NotFoundError, match="has no artifact 'other'; its tags: w"):
        iter_tar(store, record, "other")


@pytest.mark.parametrize("level", [None, 1])
def test_a_corrupted_object_ends_the_stream_with_an_error_and_a_truncated_archive(tmp_path, level):
    store = open_store(Config(home=str(tmp_path / "home"), store=str(tmp_path / "store"), fsync=False))
    record = _captured(store, _tree(tmp_path / "w"))
    whole = b"".join(iter_tar(store, record, "w", gzip_level=None))
    damaged_at = whole.index(BIG[8 << 20:])  # the last chunk of weights.bin, its third object
    corrupt_object(store.repo, find_entry(store, record, "w", "weights.bin").chunks[2][0])
    received = bytearray()
    with pytest.raises(IntegrityError, match="corrupted"):
        for chunk in iter_tar(store, record, "w", gzip_level=level):
            received += chunk
    assert received  # the stream had started: the error comes mid-way
    raw = bytes(received) if level is None else zlib.decompressobj(31).decompress(bytes(received))
    assert raw == whole[:len(raw)] and len(raw) <= damaged_at  # the damaged bytes were never handed out
    with pytest.raises((tarfile.ReadError, EOFError, zlib.error)):
        with tarfile.open(fileobj=io.BytesIO(bytes(received)), mode="r:" if level is None else "r:gz") as tar:
            for member in tar:
                if member.isfile():
                    tar.extractfile(member).read()


def test_closing_a_stream_early_stops_reading(tmp_path, store):
    record = _captured(store, _tree(tmp_path / "w"))
    stream = iter_tar(store, record, "w", gzip_level=None)
    first = next(stream)
    assert first
    stream.close()  # a client that went away: no error, nothing more read
    with pytest.raises(StopIteration):
        next(stream)


def test_one_file_by_name_and_through_a_link(tmp_path, store):
    record = _captured(store, _tree(tmp_path / "w"))
    assert b"".join(iter_file(store, record, "w", "weights.bin")) == BIG
    assert b"".join(iter_file(store, record, "w", "link")) == FILES["sub/b.bin"]
    assert b"".join(iter_file(store, record, "w", "empty")) == b""
    assert find_entry(store, record, "w", "run.sh").mode == 0o755


@pytest.mark.parametrize("path", ["", "nope.txt", "sub", "../a.txt", "/a.txt", "sub/../a.txt", "./a.txt",
                                  "a.txt\x00", "sub//b.bin", "/etc/passwd", "..", "sub/"])
def test_unknown_and_unsafe_file_names_are_not_found(tmp_path, path):
    store = open_store(Config(home=str(tmp_path / "home"), store=str(tmp_path / "store"), fsync=False))
    record = _captured(store, _tree(tmp_path / "w"))
    with pytest.raises(NotFoundError):
        iter_file(store, record, "w", path)


def test_a_corrupted_single_file_raises_before_its_bytes(tmp_path):
    store = open_store(Config(home=str(tmp_path / "home"), store=str(tmp_path / "store"), fsync=False))
    record = _captured(store, _tree(tmp_path / "w"))
    entry = find_entry(store, record, "w", "weights.bin")
    corrupt_object(store.repo, entry.chunks[1][0])
    received = bytearray()
    with pytest.raises(IntegrityError):
        for chunk in iter_file(store, record, "w", "weights.bin"):
            received += chunk
    assert bytes(received) == BIG[:len(received)] and len(received) < len(BIG)


def test_folder_listing(tmp_path, store):
    record = _captured(store, _tree(tmp_path / "w"))
    top = list_tree(store, record, "w")
    assert [(t.name, t.is_dir) for t in top] == [
        ("many", True), ("sub", True), ("a.txt", False), ("empty", False), ("link", False), ("run.sh", False),
        ("weights.bin", False)]
    sub = next(t for t in top if t.name == "sub")
    assert sub.size == len(FILES["sub/b.bin"]) + len(FILES["sub/deeper/c.txt"]) and sub.files == 2
    assert sub.mtime == max(TIMES["sub/b.bin"], TIMES["sub/deeper/c.txt"]) / 1e9
    link = next(t for t in top if t.name == "link")
    assert link.is_link and link.target == "sub/b.bin"
    weights = next(t for t in top if t.name == "weights.bin")
    assert weights.size == len(BIG) and weights.mtime == TIMES["weights.bin"] / 1e9
    inner = list_tree(store, record, "w", "sub")
    assert [(t.name, t.path, t.is_dir) for t in inner] == [("deeper", "sub/deeper", True),
                                                           ("b.bin", "sub/b.bin", False)]
    assert [t.path for t in list_tree(store, record, "w", "sub/deeper/")] == ["sub/deeper/c.txt"]
    for bad in ("a.txt", "nope", "..", "/sub", "sub/..", "s\x00"):
        with pytest.raises(NotFoundError):
            list_tree(store, record, "w", bad)


def test_the_times_manifest_is_what_streams(tmp_path):
    """Records made before file times were kept stream with the run's time instead."""
    store = open_store(Config(home=str(tmp_path / "home"), store=str(tmp_path / "store"), fsync=False))
    record = _captured(store, _tree(tmp_path / "w"))
    record.artifacts["w"].times = ""
    record.ended_at = 1_700_000_000.5
    with tarfile.open(fileobj=io.BytesIO(b"".join(iter_tar(store, record, "w", gzip_level=None)))) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1_700_000_000}
    assert isinstance(store.repo.get_manifest(record.artifacts["w"].digest), Manifest)
