"""The runner's side: pointers and statuses of the script's processes become one artifact."""

from __future__ import annotations

import json
import os
import time

from studio_run.config import load_config
from studio_run.objects.digest import hash_bytes
from studio_run.objects.manifest import Entry, Manifest
from studio_run.store.open import open_store
from studio_run.uploads.collect import CollectedFiles, collect_files


def _process(run_dir, name, pointer=None, status=None):
    folder = os.path.join(run_dir, "uploads", name)
    os.makedirs(os.path.join(folder, "staging"))
    open(os.path.join(folder, "staging", "leftover"), "w").close()
    if pointer is not None:
        with open(os.path.join(folder, "files.json"), "w") as f:
            json.dump(pointer, f)
    if status is not None:
        with open(os.path.join(folder, "status.json"), "w") as f:
            json.dump(status, f)


def _manifest(store, files: dict[str, bytes]) -> Manifest:
    entries = []
    for path, data in files.items():
        digest, _ = store.repo.ingest_bytes(data, hash_bytes(data))
        entries.append(Entry(path, size=len(data), digest=digest))
    manifest = Manifest.build(entries)
    store.repo.put_manifest(manifest)
    return manifest


def test_nothing_uploaded_means_no_artifact(studio_home, tmp_path):
    store = open_store(load_config(store=str(tmp_path / "store")))
    assert collect_files(store, str(tmp_path / "run")) == CollectedFiles()


def test_two_processes_merge_and_the_later_delivery_wins(studio_home, tmp_path):
    store = open_store(load_config(store=str(tmp_path / "store")))
    run_dir = str(tmp_path / "run")
    one = _manifest(store, {"shared.txt": b"one", "a.txt": b"a"})
    two = _manifest(store, {"shared.txt": b"two", "b/c.txt": b"c"})
    now = time.time()
    _process(run_dir, "1-aa", {"digest": one.digest, "size": 4, "files": 2,
                               "names": {"shared.txt": now + 1, "a.txt": now}},
             {"final": True, "pending": [], "failed": {}})
    _process(run_dir, "2-bb", {"digest": two.digest, "size": 4, "files": 2,
                               "names": {"shared.txt": now, "b/c.txt": now}},
             {"final": True, "pending": [], "failed": {"x.bin": "wandb: CommError: down"}})
    collected = collect_files(store, run_dir)
    merged = store.repo.get_manifest(collected.artifact.digest)
    assert {e.path: e.size for e in merged.entries} == {"a.txt": 1, "b/c.txt": 1, "shared.txt": 3}
    shared = next(e for e in merged.entries if e.path == "shared.txt")
    assert shared.digest == next(e for e in one.entries if e.path == "shared.txt").digest
    assert collected.artifact.kind == "files" and collected.artifact.files == 3
    assert collected.undelivered == {"x.bin": "wandb: CommError: down"}
    assert collected.exit_code(0) == 1 and collected.exit_code(3) == 3
    assert not os.path.exists(os.path.join(run_dir, "uploads", "1-aa", "staging"))


def test_a_process_that_died_reports_its_pending_names(studio_home, tmp_path):
    store = open_store(load_config(store=str(tmp_path / "store")))
    run_dir = str(tmp_path / "run")
    _process(run_dir, "1-aa", None, {"final": False, "pending": ["ckpt.pt"], "failed": {}})
    collected = collect_files(store, run_dir)
    assert collected.artifact is None
    assert "exited before" in collected.undelivered["ckpt.pt"]
    assert CollectedFiles().exit_code(0) == 0
