"""File times and modes survive capture -> restore, the blob cache and old manifests."""

from __future__ import annotations

import json
import os

from studio_run.objects.manifest import Manifest
from studio_run.objects.repository import Repository
from studio_run.snapshots.blobcache import BlobCache
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.restore import materialize
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage

TIMES = {"ckpt-1.pt": 1_600_000_000_123_456_789, "ckpt-2.pt": 1_700_000_000_987_654_321, "sub/run.sh": 1_650_000_000_5}
MODES = {"ckpt-1.pt": 0o600, "ckpt-2.pt": 0o644, "sub/run.sh": 0o750}


def _captured(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for rel, ns in TIMES.items():
        (src / rel).write_text(rel)
        os.chmod(src / rel, MODES[rel])
        os.utime(src / rel, ns=(ns, ns))
    repo = Repository(LocalStorage(str(tmp_path / "store")))
    return repo, snapshot(str(src), repo, StatCache(), times=True).manifest


def test_capture_records_each_files_mtime_and_mode_and_restore_sets_them(tmp_path):
    repo, manifest = _captured(tmp_path)
    assert {e.path: (e.mtime_ns, e.mode) for e in manifest.entries} == {r: (TIMES[r], MODES[r]) for r in TIMES}
    out = tmp_path / "out"
    materialize(repo, Manifest.from_bytes(manifest.to_bytes()), str(out))
    for rel, ns in TIMES.items():
        st = os.stat(out / rel)
        assert (st.st_mtime_ns, st.st_mode & 0o777) == (ns, MODES[rel]), rel
    newest = max((n for n in os.listdir(out) if n.endswith(".pt")), key=lambda n: os.stat(out / n).st_mtime_ns)
    assert newest == "ckpt-2.pt"  # "pick the newest checkpoint by mtime" works on a restore


def test_the_read_only_cache_keeps_each_files_mtime(tmp_path):
    repo, manifest = _captured(tmp_path)
    cache = BlobCache(str(tmp_path / "cache"))
    path, hit = cache.ensure(repo, manifest.digest, manifest)
    for rel, ns in TIMES.items():
        st = os.stat(os.path.join(path, rel))
        assert (st.st_mtime_ns, st.st_mode & 0o777) == (ns, MODES[rel] & 0o555), rel
    assert cache.ensure(repo, manifest.digest, manifest) == (path, True)  # the stamp holds the restored times


def test_without_times_the_same_content_in_two_folders_shares_one_digest(tmp_path):
    repo, with_times = _captured(tmp_path)
    copy = tmp_path / "copy"
    (copy / "sub").mkdir(parents=True)
    for rel in TIMES:
        (copy / rel).write_text(rel)
        os.chmod(copy / rel, MODES[rel])
    plain = snapshot(str(tmp_path / "src"), repo, StatCache()).manifest
    assert all(e.mtime_ns is None for e in plain.entries)
    assert snapshot(str(copy), repo, StatCache()).digest == plain.digest != with_times.digest


def test_a_manifest_written_before_times_were_kept_still_restores(tmp_path):
    repo, manifest = _captured(tmp_path)
    doc = json.loads(manifest.to_bytes())
    for entry in doc["entries"]:
        del entry["mtime"]
    old = Manifest.from_bytes(json.dumps(doc).encode())
    assert all(e.mtime_ns is None for e in old.entries)
    out = tmp_path / "out"
    materialize(repo, old, str(out))
    assert (out / "ckpt-1.pt").read_text() == "ckpt-1.pt" and os.stat(out / "ckpt-1.pt").st_mtime_ns != TIMES["ckpt-1.pt"]
    path, _hit = BlobCache(str(tmp_path / "cache")).ensure(repo, old.digest, old)
    assert open(os.path.join(path, "sub", "run.sh")).read() == "sub/run.sh"
