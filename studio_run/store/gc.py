"""``studio gc``: delete objects and manifests no record refers to.

Mark and sweep: every record's artifacts (and every reuse's digest) mark manifests, manifests
mark objects, the rest is swept. A pack (small objects uploaded together) goes only when none of
its objects is live. A capture writes objects and its manifest *before* the record
that points at them, so anything younger than ``grace`` seconds is kept: a run in progress on any
machine never loses the content it is about to publish.

On a remote store, this machine's staged copies and cached pack indexes are pruned after the
sweep (``studio_run.store.staging_gc``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from ..objects.packs import index_key, pack_key
from .staging_gc import PruneResult, prune_local_copies
from .store import Store

__all__ = ["GcResult", "collect_garbage"]


@dataclass(frozen=True)
class GcResult:
    """What a collection removed and kept."""

    objects_removed: int
    manifests_removed: int
    bytes_removed: int
    kept_young: int
    local: Optional[PruneResult] = None  # this machine's copies of a remote store


def collect_garbage(store: Store, grace: float = 3600.0, dry_run: bool = False) -> GcResult:
    """Sweep unreferenced content older than ``grace`` seconds from the store, then (for a
    remote store) from this machine's staging folder and pack-index cache."""
    repo = store.repo
    live_manifests: set[str] = set()
    for record in store.records.iter_all():
        live_manifests.update(d for a in record.artifacts.values() for d in a.manifests())
    live_objects: set[str] = set()
    for digest in live_manifests:
        if repo.has_manifest(digest):
            live_objects.update(repo.get_manifest(digest).digests())
    cutoff = time.time() - grace
    removed_objects = removed_manifests = removed_bytes = young = 0
    marked = dry_run
    swept_packs: list[str] = []

    def mark() -> None:  # before the first deletion: uploaders must stop trusting what they knew
        nonlocal marked
        if not marked:
            repo.mark_sweep()
            marked = True

    for digest in list(repo.iter_manifests()):
        if digest in live_manifests:
            continue
        if repo.storage.info(repo.manifest_key(digest)).mtime > cutoff:
            young += 1
            continue
        if not dry_run:
            mark()
            repo.delete_manifest(digest)
        removed_manifests += 1
    for digest in list(repo.iter_objects()):
        if digest in live_objects:
            continue
        info = repo.storage.info(repo.object_key(digest))
        if info.mtime > cutoff:
            young += 1
            continue
        if not dry_run:
            mark()
            repo.delete_object(digest)
        removed_objects += 1
        removed_bytes += info.size
    for name, members in repo.packs.packs().items():
        if any(digest in live_objects for digest in members):
            continue  # one live object keeps its whole pack (packs are never rewritten)
        if repo.storage.info(index_key(name)).mtime > cutoff:
            young += 1
            continue
        size = repo.storage.info(pack_key(name)).size
        if not dry_run:
            mark()
            repo.packs.delete(name)
        swept_packs.append(name)
        removed_objects += len(members)
        removed_bytes += size
    local = prune_local_copies(store, grace, dry_run, swept_packs) if store.is_remote else None
    return GcResult(removed_objects, removed_manifests, removed_bytes, young, local)
