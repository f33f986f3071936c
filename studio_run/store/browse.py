"""Looking inside a stored artifact without placing it anywhere: its files and one file's bytes
(``studio ls``, ``studio logs``); tar streams of a whole artifact are ``archive``'s.

Every byte read is verified against its digest (``Repository.read_object``), one object at a
time, so a large artifact streams in constant memory.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator, Optional

from ..errors import NotFoundError
from ..objects.manifest import LINK, Entry, Manifest
from ..objects.repository import Repository
from ..refs import ArtifactRef
from .artifacts import resolve_artifact
from .records import RunRecord, effective_status
from .store import Store

__all__ = ["LOG_NAME", "LOG_TAG", "artifact_manifest", "entry_bytes", "follow_log", "list_files", "read_log"]

LOG_TAG = "output"
LOG_NAME = "output.log"


def artifact_manifest(store: Store, ref: ArtifactRef) -> tuple[RunRecord, Manifest]:
    """The run ``ref`` resolves to and its artifact's manifest."""
    record, art = resolve_artifact(store, ref)
    return record, store.repo.get_manifest(art.restore_digest)  # with file times when recorded


def list_files(manifest: Manifest, path: Optional[str] = None) -> list[Entry]:
    """The entries at or below ``path`` (all when None), sorted; ``NotFoundError`` if none."""
    if not path:
        return sorted(manifest.entries, key=lambda e: e.path)
    path = path.strip("/")
    found = sorted((e for e in manifest.entries if e.path == path or e.path.startswith(path + "/")),
                   key=lambda e: e.path)
    if not found:
        raise NotFoundError(f"the artifact has no file or folder {path!r}")
    return found


def entry_bytes(repo: Repository, entry: Entry) -> Iterator[bytes]:
    """A file entry's content, one verified object at a time."""
    for digest, _size in entry.chunks or ((entry.digest, entry.size),):
        yield repo.read_object(digest)


def read_log(store: Store, record: RunRecord) -> bytes:
    """The run's captured ``output.log`` (stdout and stderr of the script) as last snapshotted."""
    art = record.artifacts.get(LOG_TAG)
    if art is None or not art.digest:
        return b""
    entries = {e.path: e for e in store.repo.get_manifest(art.digest).entries}
    entry = entries.get(LOG_NAME)
    if entry is None or entry.type == LINK:
        return b""
    return b"".join(entry_bytes(store.repo, entry))


def follow_log(
    store: Store,
    record: RunRecord,
    write: Callable[[bytes], None],
    hostname: str,
    poll: float = 1.0,
) -> None:
    """Write the run's log, then what it adds, until the run is no longer running.

    On the machine running it, the live file under ``$STUDIOML_HOME/runs`` is followed; from
    elsewhere, each new snapshot of the ``output`` artifact is read and its new bytes written.
    """
    local = os.path.join(store.config.runs_dir, record.experiment, record.run_id, LOG_TAG, LOG_NAME)
    shown = 0
    digest = None
    while True:
        running = effective_status(record, hostname) == "running"
        if record.host == hostname and os.path.isfile(local):
            with open(local, "rb") as f:
                f.seek(shown)
                data = f.read()
        else:
            art = record.artifacts.get(LOG_TAG)
            data = b""
            if art is not None and art.digest != digest:
                digest = art.digest
                data = read_log(store, record)[shown:]
        if data:
            write(data)
            shown += len(data)
        if not running:
            return
        time.sleep(poll)
        record = store.records.read(record.experiment, record.run_id, record.version)
