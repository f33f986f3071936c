"""The runner's side of uploads: turn what the script's processes uploaded into the ``files`` artifact.

Each process of the script that used ``fs_tracker.upload_file`` left a folder
``<run_dir>/uploads/<process>/`` holding ``files.json`` (the manifest digest its store
destination published) and ``status.json`` (names still pending or failed, for every
destination). The runner calls ``collect_files`` once the script has exited, so nothing is
still writing them. One process: its manifest is the artifact. Several (``torchrun``, a data
loader that uploads): their manifests are merged, and when two processes used the same name
the one delivered last wins. Staging copies a killed process left behind are removed here.

The runner decides the exit code with ``CollectedFiles.exit_code``: any undelivered file
makes a run whose script exited 0 exit 1; a non-zero exit code of the script is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import Config
from ..errors import StudioError
from ..objects.manifest import Entry, Manifest
from ..storage.urls import redact_url
from ..store.records import ArtifactRecord
from ..store.store import Store
from .store_destination import FILES_TAG

__all__ = ["CollectedFiles", "collect_files", "handoff_settings", "report_undelivered", "uploads_dir"]


def handoff_settings(config: Config) -> dict[str, Any]:
    """What the script's uploader needs from the runner's config (``Handoff.upload``).

    The store URL is redacted and options carry no credentials (each SDK finds its own), so
    the hand-off stays free of secrets like the rest of it.
    """
    return {
        "store": redact_url(config.store),
        "store_options": dict(config.store_options),
        "config": config.source if config.source != "defaults" else "",
        "wait": config.upload_wait,
        "queue_size": config.upload_queue_size,
        "policy": config.upload_policy,
        "fsync": config.fsync,
    }


def report_undelivered(collected: "CollectedFiles") -> None:
    """Print one line per file the script handed over that never arrived."""
    from .. import console

    for name, why in collected.undelivered.items():
        console.warn(f"file not delivered: {name} ({why})")
    if collected.undelivered:
        console.warn(f"{len(collected.undelivered)} uploaded file(s) were not delivered; studio exits non-zero")


def uploads_dir(run_dir: str) -> str:
    """Where the script's processes keep their private copies and pointers."""
    return os.path.join(run_dir, "uploads")


@dataclass
class CollectedFiles:
    """The ``files`` artifact (None when nothing was uploaded) and every undelivered name with why."""

    artifact: Optional[ArtifactRecord] = None
    undelivered: dict[str, str] = field(default_factory=dict)

    def exit_code(self, script_exit_code: int) -> int:
        """Studio's exit code: 1 when the script succeeded but some file was not delivered."""
        if self.undelivered and script_exit_code == 0:
            return 1
        return script_exit_code


def collect_files(store: Store, run_dir: str) -> CollectedFiles:
    """Read every process's pointer and status below ``run_dir`` and build the artifact.

    The script's processes already put the objects and manifests where captures go: the
    store itself when local; with a remote store, this machine's staging repository, where the
    background ``Syncer`` looks for every artifact's manifest before it publishes the record
    (what the processes could send already, it finds in the store and sends no more; what they
    could not, because the store did not answer, goes up with the record).
    """
    repo = store.local_repo
    root = uploads_dir(run_dir)
    if not os.path.isdir(root):
        return CollectedFiles()
    pointers: list[dict[str, Any]] = []
    undelivered: dict[str, str] = {}
    for proc in sorted(os.listdir(root)):
        folder = os.path.join(root, proc)
        if not os.path.isdir(folder):
            continue
        pointer = _read(os.path.join(folder, "files.json"))
        if pointer and pointer.get("digest"):
            pointers.append(pointer)
        status = _read(os.path.join(folder, "status.json"))
        if status:
            died = not status.get("final")
            for name in status.get("pending", []):
                undelivered[name] = "the script exited before it was uploaded" if died else "still pending at exit"
            undelivered.update(status.get("failed", {}))
        shutil.rmtree(os.path.join(folder, "staging"), ignore_errors=True)
    if not pointers:
        return CollectedFiles(None, dict(sorted(undelivered.items())))
    try:
        if len(pointers) == 1:
            if store.is_remote and not repo.has_manifest(pointers[0]["digest"]):  # staged by an older studio
                repo.put_manifest(store.repo.get_manifest(pointers[0]["digest"]))
            digest, size, count = pointers[0]["digest"], int(pointers[0]["size"]), int(pointers[0]["files"])
        else:
            manifest = _merge(store, pointers)
            repo.put_manifest(manifest)
            digest, size, count = manifest.digest, manifest.size, manifest.file_count
    except (StudioError, OSError) as exc:  # the store went away: report, never lose the run
        for pointer in pointers:
            for name in pointer.get("names", {}):
                undelivered.setdefault(name, f"could not read the uploaded files' manifest: {exc}")
        return CollectedFiles(None, dict(sorted(undelivered.items())))
    artifact = ArtifactRecord(
        tag=FILES_TAG, kind=FILES_TAG, digest=digest, size=size, files=count, snapshots=1, updated_at=time.time()
    )
    return CollectedFiles(artifact, dict(sorted(undelivered.items())))


def _manifest(store: Store, digest: str) -> Manifest:
    """A manifest a script's process published: staged on this machine, else in the store."""
    if store.local_repo.has_manifest(digest):
        return store.local_repo.get_manifest(digest)
    return store.repo.get_manifest(digest)


def _merge(store: Store, pointers: list[dict[str, Any]]) -> Manifest:
    """One manifest from several processes'; for a name in more than one, the latest delivery wins."""
    chosen: dict[str, tuple[float, Entry]] = {}
    for pointer in pointers:
        times = pointer.get("names", {})
        for entry in _manifest(store, pointer["digest"]).entries:
            when = float(times.get(entry.path, 0.0))
            if entry.path not in chosen or when >= chosen[entry.path][0]:
                chosen[entry.path] = (when, entry)
    # Two processes could disagree on shape ('a' a file in one, 'a/b' in another): the newer wins.
    kept: dict[str, tuple[float, Entry]] = {}
    for path, (when, entry) in sorted(chosen.items(), key=lambda item: -item[1][0]):
        parts = path.split("/")
        above = any("/".join(parts[:i]) in kept for i in range(1, len(parts)))
        below = any(other.startswith(path + "/") for other in kept)
        if not above and not below:
            kept[path] = (when, entry)
    return Manifest.build(entry for _when, entry in kept.values())


def _read(path: str) -> Optional[dict[str, Any]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None
