"""Files a script uploads to a remote store that does not answer: staged, held from ``studio gc``
until the run's record is pending, then delivered with it. The store is ``spy://`` (in memory,
able to refuse writes), as in ``tests/store/test_sync.py``."""

from __future__ import annotations

import json
import os
import time

from studio_run.store.records import ArtifactRecord, RecordStore, RunRecord, new_run_id
from studio_run.store.staging_gc import prune_local_copies
from studio_run.uploads.store_destination import StoreDestination
from tests.store.test_sync import opened, spy  # noqa: F401  (fixtures)


def _private_copy(folder, name: str, data: bytes) -> str:
    """What the uploader hands a destination: a read-only copy of the script's file."""
    path = folder / name
    path.write_bytes(data)
    os.chmod(path, 0o444)
    return str(path)


def test_files_staged_during_an_outage_survive_staging_gc_and_arrive_with_the_record(
    tmp_path, spy, opened  # noqa: F811
):
    store = opened(tmp_path / "a", spy)
    record = RunRecord(experiment="held", run_id=new_run_id())
    pointer = tmp_path / "files.json"
    dest = StoreDestination(store, pointer_path=str(pointer), run=(record.experiment, record.run_id))
    data = os.urandom(70_000)
    spy.refuse_writes = True  # the store answers nothing useful: every write fails, transiently
    dest.upload_file("ckpt/ep1.bin", _private_copy(tmp_path, "copy-1", data))
    dest.flush()  # does not raise: the file waits in staging
    digest = json.loads(pointer.read_text())["digest"]
    assert store.local_repo.has_manifest(digest) and not spy.exists(f"manifests/{digest[:2]}/{digest[2:]}")

    pruned = prune_local_copies(store, grace=0)
    assert (pruned.objects_removed, pruned.manifests_removed) == (0, 0)  # held, though no record is pending

    manifest = store.local_repo.get_manifest(digest)  # what the runner does when the script ends
    record.artifacts["files"] = ArtifactRecord("files", "files", digest, manifest.size, manifest.file_count, 1,
                                               time.time())
    record.status = "finished"
    store.publish(record, final=True)
    assert os.listdir(os.path.join(store.local_repo.storage.root, "holds")) == [".lock"]  # the journal keeps it
    assert prune_local_copies(store, grace=0).objects_removed == 0
    spy.refuse_writes = False
    assert store.syncer().finish(10) is True
    assert spy.violations == []
    published = RecordStore(spy).read("held", record.run_id)
    reader = opened(tmp_path / "b", spy)
    (entry,) = reader.repo.get_manifest(published.artifacts["files"].digest).entries
    assert entry.path == "ckpt/ep1.bin" and reader.repo.read_object(entry.digest) == data
