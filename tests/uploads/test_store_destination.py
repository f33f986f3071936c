"""Uploads into studio's store through ``fs_tracker``, on the local store and on S3 (moto)."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

import fs_tracker
from studio_run.config import load_config
from studio_run.refs import ArtifactRef
from studio_run.store.artifacts import fetch_artifact
from studio_run.store.open import open_store
from studio_run.uploads import api

from .destinations import digest_of, upload_from_threads

MiB = 1 << 20


def _fetch(store_url: str, experiment: str, name: str, dest: str) -> str:
    store = open_store(load_config(store=store_url))
    try:
        return fetch_artifact(store, ArtifactRef(experiment, "files", None, name), dest)
    finally:
        store.close()


def _write_big(path: str, size: int) -> str:
    """A file of ``size`` bytes that does not repeat; returns its SHA-256."""
    h = hashlib.sha256()
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "little") + block[8:]
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def test_256_mib_costs_the_caller_one_local_copy_and_uploads_the_content_of_the_call(
    store_url, tmp_path, monkeypatch
):
    # "At most one local copy" is checked by what the caller's thread does, not by a clock
    # (timings live in benchmarks/upload_api.py): exactly one copy of the file's bytes, and every
    # byte sent to the store from another thread.
    from studio_run.uploads import store_destination, uploader

    src = str(tmp_path / "big.bin")
    expected = _write_big(src, 256 * MiB)
    caller = threading.get_ident()
    copies: list[tuple[int, int]] = []
    deliveries: list[int] = []
    real_copy = uploader.clone_or_copy
    real_upload = store_destination.StoreDestination.upload_file

    def counting_copy(src_fd: int, dest: str, size: int) -> str:
        copies.append((threading.get_ident(), size))
        return real_copy(src_fd, dest, size)

    def watched_upload(self, name: str, path: str) -> None:  # type: ignore[no-untyped-def]
        deliveries.append(threading.get_ident())
        return real_upload(self, name, path)

    monkeypatch.setattr(uploader, "clone_or_copy", counting_copy)
    monkeypatch.setattr(store_destination.StoreDestination, "upload_file", watched_upload)
    fs_tracker.init(store_url, "big")
    fs_tracker.upload_file("weights/big.bin", src)
    with open(src, "r+b") as f:  # overwritten right after the call
        f.truncate(0)
        f.write(b"something else")
    fs_tracker.flush(300)
    fetched = _fetch(store_url, "big", "weights/big.bin", str(tmp_path / "fetched.bin"))
    assert digest_of(fetched) == expected
    assert copies == [(caller, 256 * MiB)]
    assert deliveries and caller not in deliveries


def test_twenty_rapid_uploads_from_threads_end_with_the_last_content(store_url, tmp_path):
    fs_tracker.init(store_url, "rapid", queue_size="1MiB")
    order = upload_from_threads(fs_tracker.upload_file, tmp_path, repeat=1000)
    fs_tracker.flush(60)
    fetched = _fetch(store_url, "rapid", "model/latest.pt", str(tmp_path / "out.pt"))
    assert len(order) == 20
    with open(fetched, "rb") as f:
        assert f.read() == order[-1]


def test_overwrite_false_raises_at_once(store_url, tmp_path):
    fs_tracker.init(store_url, "once")
    path = str(tmp_path / "h.yaml")
    with open(path, "w") as f:
        f.write("a: 1\n")
    fs_tracker.upload_file("hparams.yaml", path, overwrite=False)
    with pytest.raises(FileExistsError):
        fs_tracker.upload_file("hparams.yaml", path, overwrite=False)
    fs_tracker.flush(30)
    with pytest.raises(FileExistsError):
        fs_tracker.upload_file("hparams.yaml", path, overwrite=False)


def test_the_record_shows_files_while_running_and_finishes_at_shutdown(store_url, tmp_path):
    fs_tracker.init(store_url, "live")
    path = str(tmp_path / "a.txt")
    with open(path, "w") as f:
        f.write("a")
    fs_tracker.upload_file("a.txt", path)
    fs_tracker.link("a.txt", "b.txt")
    fs_tracker.flush(30)
    store = open_store(load_config(store=store_url))
    try:
        record = store.records.resolve("live")
        assert record.status == "running"
        assert record.artifacts["files"].files == 2 and record.artifacts["files"].kind == "files"
        assert api.shutdown(30) == {}
        record = store.records.resolve("live")
        assert record.status == "finished" and record.ended_at
    finally:
        store.close()
    assert open(_fetch(store_url, "live", "b.txt", str(tmp_path / "b.out"))).read() == "a"


def test_same_content_twice_is_stored_once(studio_home, tmp_path):
    store_dir = str(tmp_path / "store")
    fs_tracker.init(store_dir, "dedup")
    path = str(tmp_path / "w.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(64 * 1024))
    fs_tracker.upload_file("a.bin", path)
    fs_tracker.upload_file("b.bin", path)
    fs_tracker.flush(30)
    objects = [os.path.join(d, n) for d, _, ns in os.walk(os.path.join(store_dir, "objects")) for n in ns]
    assert len(objects) == 1
    assert os.stat(objects[0]).st_mode & 0o222 == 0  # objects are read-only


def test_importing_fs_tracker_stays_light_after_the_upload_api():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import fs_tracker"],
                         capture_output=True, text=True, check=True)
    modules = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not {"boto3", "botocore", "click", "rich", "wandb", "blake3", "yaml"} & modules
    assert "studio_run" not in modules  # the upload machinery loads on the first call
