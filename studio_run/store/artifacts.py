"""Getting stored artifacts back out: resolve ``EXP/TAG[@VERSION]`` and write it somewhere.

Used by ``studio get`` (a writable copy anywhere) and, through the blob cache, by ``--reuse``.
Both verify every byte against its digest and refuse manifests that would escape the folder.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from typing import Callable, Optional

from ..errors import NotFoundError
from ..objects.manifest import LINK, Manifest
from ..refs import ArtifactRef
from ..snapshots.restore import materialize, write_entry_file
from .placing import check_dest, place_file, place_folder, staging_folder
from .records import ArtifactRecord, RunRecord
from .store import Store

__all__ = ["fetch_artifact", "protected_folders", "resolve_artifact"]


def resolve_artifact(
    store: Store, ref: ArtifactRef, *, prefer_finished: bool = False
) -> tuple[RunRecord, ArtifactRecord]:
    """The run and artifact record ``ref`` names; ``NotFoundError`` naming the known tags if absent.

    A pinned ref (``@N`` or a run id) names exactly that run, whatever its status. Unpinned, it
    names the newest run; with ``prefer_finished`` (``--reuse``) the newest run that finished
    and holds the tag complete instead, so a lost, failed, interrupted or still running run's
    snapshot is taken only when no finished one has the tag.
    """
    record = _preferred(store, ref) if prefer_finished and ref.version is None else None
    if record is None:
        record = store.records.resolve(ref.experiment, ref.version)
    art = record.artifacts.get(ref.tag)
    if art is None or not art.digest:
        tags = ", ".join(sorted(t for t, a in record.artifacts.items() if a.digest)) or "none"
        raise NotFoundError(
            f"experiment {ref.experiment!r} version {record.version} has no artifact {ref.tag!r}; its tags: {tags}"
        )
    return record, art


def _preferred(store: Store, ref: ArtifactRef) -> Optional[RunRecord]:
    """The newest run of ``ref.experiment`` that finished with ``ref.tag`` captured whole, or None."""
    ids = store.records.run_ids(ref.experiment)
    for version in range(len(ids), 0, -1):
        try:
            record = store.records.read(ref.experiment, ids[version - 1], version)
        except (NotFoundError, ValueError, TypeError):  # deleted meanwhile, or a damaged record
            continue
        art = record.artifacts.get(ref.tag)
        if art is None or not art.digest or art.incomplete:
            continue
        if record.status == "finished" or record.status == "incomplete":
            return record
    return None


def fetch_artifact(
    store: Store,
    ref: ArtifactRef,
    dest: str,
    progress: Optional[Callable[[int], None]] = None,
    force: bool = False,
) -> str:
    """Write the artifact to ``dest`` and return the path written (rules: ``placing``).

    A folder artifact fills ``dest`` (created if missing; an existing folder must be empty
    unless ``force``). A single-file artifact becomes ``dest`` itself, or ``dest/<name>`` when
    ``dest`` is an existing folder. Nothing appears at ``dest`` before every byte is verified.
    """
    _record, art = resolve_artifact(store, ref)
    manifest = store.repo.get_manifest(art.restore_digest)  # with file times when the record has them
    single = manifest.single_file or bool(ref.path)
    dest = check_dest(dest, protected_folders(store), single, force)
    tmp = staging_folder(dest)
    try:
        if ref.path:
            return place_file(_fetch_one(store, ref, manifest, tmp, progress), dest)
        written = materialize(store.repo, manifest, tmp, progress=progress)
        if manifest.single_file:
            return place_file(written, dest)
        return place_folder(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def protected_folders(store: Store) -> list[str]:
    """Folders ``get`` must never write into: the store, this machine's staging and blob cache."""
    config = store.config
    roots = [config.blobcache, os.path.join(config.home, "staging"), os.path.join(config.home, "packindex")]
    if "://" not in config.store or config.store.startswith("file://"):
        roots.append(config.store[len("file://"):] if config.store.startswith("file://") else config.store)
    local_root = getattr(store.local_repo.storage, "root", None)
    if isinstance(local_root, str):
        roots.append(local_root)
    return roots


def _fetch_one(
    store: Store, ref: ArtifactRef, manifest: Manifest, tmp: str, progress: Optional[Callable[[int], None]]
) -> str:
    """Write one file of the artifact (a link is followed to the file it names) into ``tmp``."""
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
    written = os.path.join(tmp, posixpath.basename(ref.path or path))
    write_entry_file(store.repo, entry, written)
    if progress:
        progress(entry.size)
    return written
