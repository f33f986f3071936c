"""Getting stored artifacts back out: resolve ``EXP/TAG[@VERSION]`` and write it somewhere.

Used by ``studio get`` (a writable copy anywhere) and, through the blob cache, by ``--reuse``.
Both verify every byte against its digest and refuse manifests that would escape the folder.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from typing import Callable, Optional

from ..errors import NotFoundError
from ..objects.manifest import LINK, Manifest
from ..refs import ArtifactRef
from ..snapshots.restore import materialize, write_entry_file
from .records import ArtifactRecord, RunRecord
from .store import Store

__all__ = ["fetch_artifact", "resolve_artifact"]


def resolve_artifact(store: Store, ref: ArtifactRef) -> tuple[RunRecord, ArtifactRecord]:
    """The run and artifact record ``ref`` names; ``NotFoundError`` naming the known tags if absent."""
    record = store.records.resolve(ref.experiment, ref.version)
    art = record.artifacts.get(ref.tag)
    if art is None or not art.digest:
        tags = ", ".join(sorted(t for t, a in record.artifacts.items() if a.digest)) or "none"
        raise NotFoundError(
            f"experiment {ref.experiment!r} version {record.version} has no artifact {ref.tag!r}; its tags: {tags}"
        )
    return record, art


def fetch_artifact(
    store: Store, ref: ArtifactRef, dest: str, progress: Optional[Callable[[int], None]] = None
) -> str:
    """Write the artifact to ``dest`` and return the path written.

    A folder artifact fills ``dest`` (created if missing). A single-file artifact becomes
    ``dest`` itself, or ``dest/<name>`` when ``dest`` is an existing folder.
    """
    _record, art = resolve_artifact(store, ref)
    manifest = store.repo.get_manifest(art.digest)
    dest = os.path.abspath(os.path.expanduser(dest))
    if ref.path:
        return _fetch_one(store, ref, manifest, dest, progress)
    if not manifest.single_file or os.path.isdir(dest):
        return materialize(store.repo, manifest, dest, progress=progress)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".studio-get-")
    try:
        written = materialize(store.repo, manifest, tmp, progress=progress)
        os.replace(written, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _fetch_one(
    store: Store, ref: ArtifactRef, manifest: Manifest, dest: str, progress: Optional[Callable[[int], None]]
) -> str:
    """Write one file of the artifact (a link is followed to the file it names) to ``dest``,
    or into ``dest`` when that is an existing folder."""
    entries = {e.path: e for e in manifest.entries}
    path = ref.path or ""
    for _hop in range(len(entries) + 1):
        entry = entries.get(path)
        if entry is None or entry.type != LINK:
            break
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), entry.target))
    if entry is None or entry.type == LINK:
        below = sorted(p for p in entries if p.startswith(f"{ref.path}/"))
        hint = f"; it is a folder holding {', '.join(below[:5])}" if below else ""
        raise NotFoundError(f"{ref.experiment}/{ref.tag} has no file {ref.path!r}{hint}")
    if os.path.isdir(dest):
        dest = os.path.join(dest, posixpath.basename(ref.path or path))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    write_entry_file(store.repo, entry, dest)
    if progress:
        progress(entry.size)
    return dest
