"""The W&B destination in offline mode: files become artifacts recorded in the offline run folder."""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import struct
import time

import pytest
import wandb  # noqa: F401  (in the test extras: a missing SDK fails loudly rather than skipping)

import fs_tracker
from studio_run.uploads import api
from studio_run.uploads.wandb_destination import artifact_name


@pytest.fixture
def offline(tmp_path, monkeypatch, studio_home):
    """W&B offline, every folder of its own below ``tmp_path``."""
    for var, sub in (("WANDB_DIR", "wandb-dir"), ("WANDB_DATA_DIR", "wandb-data"),
                     ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_CONFIG_DIR", "wandb-config")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def _records(path: str) -> list[bytes]:
    """The records of a ``.wandb`` file: a 7-byte header, then LevelDB-log framing in 32 KiB blocks."""
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    records, partial, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            records.append(partial + chunk)
        else:
            break
    return records


def _logged_artifacts(wandb_dir) -> dict[str, list]:
    """The artifact records of the one offline run under ``wandb_dir``.

    ``run.finish()`` only tells wandb-core the run is over; the core writes the log's last block
    when it closes the stream, a moment later (under load, after ``finish`` has returned). So poll
    until the log holds the run's ``exit`` record: everything logged before it is then on disk.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + 60
    while True:
        files = glob.glob(os.path.join(str(wandb_dir), "wandb", "offline-run-*", "run-*.wandb"))
        assert len(files) == 1, files
        records = []
        try:
            for raw in _records(files[0]):
                record = pb.Record()
                record.ParseFromString(raw)
                records.append(record)
        except DecodeError:  # caught mid-write: read again
            records = []
        kinds = [record.WhichOneof("record_type") for record in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "exit" in kinds, f"wandb-core did not finish writing {files[0]} within 60 s"
    found: dict[str, list] = {}
    for record, kind in zip(records, kinds):
        if kind == "artifact":
            found.setdefault(record.artifact.name, []).append(record.artifact)
    return found


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_files_and_links_are_logged_as_artifacts_in_the_offline_run(offline, store_url):
    from studio_run.uploads import WandbDestination

    fs_tracker.init(store_url, "wb", destinations=["store", WandbDestination(project="studio-test", dir=str(offline / "wandb-dir"))])
    ckpt = offline / "ep3.pt"
    ckpt.write_bytes(b"epoch three")
    fs_tracker.upload_file("checkpoints/ep3.pt", str(ckpt))
    ckpt.write_bytes(b"overwritten at once")
    fs_tracker.link("checkpoints/ep3.pt", "checkpoints/latest.pt")
    assert api.shutdown(60) == {}

    logged = _logged_artifacts(offline / "wandb-dir")
    assert set(logged) == {"checkpoints-ep3.pt", "checkpoints-latest.pt"}
    for name, path in (("checkpoints-ep3.pt", "checkpoints/ep3.pt"), ("checkpoints-latest.pt", "checkpoints/latest.pt")):
        (artifact,) = logged[name]
        assert artifact.type == "file"
        (entry,) = artifact.manifest.contents
        assert entry.path == path and entry.size == len(b"epoch three")
        assert entry.digest == _md5(b"epoch three")
        assert open(entry.local_path, "rb").read() == b"epoch three"  # W&B's staged copy, kept for sync
    metadata = json.loads(logged["checkpoints-latest.pt"][0].metadata)
    assert metadata == {"studio_name": "checkpoints/latest.pt", "studio_link": "checkpoints/ep3.pt"}


def test_files_wandb_writes_itself_never_go_back_to_wandb(offline, store_url):
    from studio_run.uploads import WandbDestination

    destination = WandbDestination(project="studio-test", dir=str(offline / "wandb-dir"))
    fs_tracker.init(store_url, "wbloop", destinations=["store", destination])
    own = os.path.join(destination.run.dir, "notes.txt")  # a file inside W&B's own run folder
    with open(own, "w") as f:
        f.write("written by wandb")
    fs_tracker.upload_file("wandb/notes.txt", own)
    model = offline / "m.pt"
    model.write_bytes(b"m")
    fs_tracker.upload_file("m.pt", str(model))
    assert api.shutdown(60) == {}
    assert set(_logged_artifacts(offline / "wandb-dir")) == {"m.pt"}  # not notes.txt: no loop
    from studio_run.config import load_config
    from studio_run.store.open import open_store

    store = open_store(load_config(store=store_url))
    manifest = store.repo.get_manifest(store.records.resolve("wbloop").artifacts["files"].digest)
    assert {e.path for e in manifest.entries} == {"m.pt", "wandb/notes.txt"}  # the store archives it


@pytest.mark.parametrize("name, expected", [("checkpoints/ep3.pt", "checkpoints-ep3.pt"), ("a b/c", "a-b-c"),
                                            ("../x", "x"), ("///", "file")])
def test_artifact_names(name, expected):
    assert artifact_name(name) == expected
