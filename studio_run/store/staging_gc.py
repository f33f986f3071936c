"""``studio gc`` on a remote store: prune this machine's staged copies and cached pack indexes.

Every capture for a remote store lands in ``$STUDIOML_HOME/staging/<store id>/`` before it is
uploaded, and stays there: a staged copy lets the next capture of an unchanged file trust its
stat-cache entry instead of reading the file again. Nothing else ever deletes it, so without
this the folder keeps every version of every file this machine has captured.

What is kept:

- what a pending record refers to (its manifests, and their objects): it is not uploaded yet,
  and staging holds its only copy;
- what a hold names (``studio_run.store.holds``): a capture writes its objects and manifest
  before its record becomes pending, and files a script uploads reach a record only when the
  runner publishes them; gc waits for writers to be done (a lock they share) and then keeps
  what they hold, so content still on its way to the journal is never taken from under it,
  whatever the grace;
- anything younger than ``grace``;
- the journal itself, its lock files and ``remote.sqlite``, which are not content.

Pruning the rest is safe. A capture whose stat-cache entry names a pruned object reads the file
again; a live run whose next snapshot takes unchanged files from its previous, already
uploaded, snapshot (without looking in staging) is uploaded all the same, since the uploader
asks the store about staged copies it cannot find (``studio_run.store.transfer``).

The pack-index cache (``$STUDIOML_HOME/packindex/<store id>/``) only loses the indexes of packs
the store no longer has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from ..errors import IntegrityError
from ..objects.repository import Repository
from ..storage.local import LocalStorage
from .holds import STALE_AFTER, StagingHolds
from .journal import Journal
from .store import Store

__all__ = ["PruneResult", "prune_local_copies"]

_WRITERS_WAIT = 60.0  # seconds gc waits for captures writing into staging to be done (they take seconds)


@dataclass(frozen=True)
class PruneResult:
    """What was removed from this machine's copies of a remote store (or would be, in a dry run)."""

    objects_removed: int
    manifests_removed: int
    bytes_removed: int  # staged objects and manifests
    indexes_removed: int  # cached pack indexes
    kept_young: int
    unreadable: str = ""  # why nothing was pruned: a pending record that cannot be read
    busy: bool = False  # nothing pruned: captures kept writing into staging (``unreadable`` says so)


def prune_local_copies(
    store: Store, grace: float = 3600.0, dry_run: bool = False, swept_packs: Iterable[str] = ()
) -> PruneResult:
    """Remove staged content no pending record refers to and older than ``grace`` seconds, and
    cached indexes of packs the store no longer lists (or of ``swept_packs``, for a dry run)."""
    indexes = store.repo.packs.prune_index_cache(swept_packs, dry_run)
    staging = store.local_repo
    if not isinstance(staging.storage, LocalStorage) or store.holds is None:
        raise TypeError("a remote store stages its captures on local disk")
    with store.holds.pruning(_WRITERS_WAIT) as free:
        if not free:
            return PruneResult(0, 0, 0, indexes, 0, f"captures kept writing into it for {_WRITERS_WAIT:g} s (run `studio gc` again later)",
                               busy=True)
        return _prune(store, staging.storage, store.holds, grace, dry_run, indexes)


def _prune(store: Store, files: LocalStorage, holds: StagingHolds, grace: float, dry_run: bool, indexes: int
           ) -> PruneResult:
    """Prune, with no capture writing into staging (the caller holds the writers' lock)."""
    staging = store.local_repo
    cutoff = time.time() - grace
    # Candidates first, the journal and the holds last: no writer can add to them meanwhile.
    manifests, young = _old(staging, staging.iter_manifests(), staging.manifest_key, cutoff)
    objects, young_objects = _old(staging, staging.iter_objects(), staging.object_key, cutoff)
    young += young_objects
    try:
        live_manifests = _pending_manifests(Journal(files))
        held_manifests, live_objects = _held(store, holds)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return PruneResult(0, 0, 0, indexes, young, f"a pending record cannot be read ({exc})")
    live_manifests |= held_manifests
    for digest in live_manifests:
        try:
            live_objects.update(staging.get_manifest(digest).digests())
        except (IntegrityError, OSError, ValueError):
            pass  # a pending run whose manifest is damaged cannot be published anyway
    manifests_removed, manifest_bytes = _delete(manifests, live_manifests, staging.delete_manifest, dry_run)
    objects_removed, object_bytes = _delete(objects, live_objects, staging.delete_object, dry_run)
    return PruneResult(objects_removed, manifests_removed, manifest_bytes + object_bytes, indexes, young)


def _held(store: Store, holds: StagingHolds) -> tuple[set[str], set[str]]:
    """``(manifests, objects)`` the holds keep. A hold whose manifests the store already has, or
    one older than ``STALE_AFTER`` (left by a killed run), keeps nothing and is removed."""
    manifests: set[str] = set()
    objects: set[str] = set()
    for hold in holds.read():
        stale = time.time() - hold.mtime > STALE_AFTER
        if stale or (not hold.objects and all(store.repo.has_manifest(d) for d in hold.manifests)):
            holds.release(hold.name)
            continue
        manifests.update(hold.manifests)
        objects.update(hold.objects)
    return manifests, objects


def _old(repo: Repository, digests: Iterable[str], key_of: Callable[[str], str], cutoff: float
         ) -> tuple[dict[str, int], int]:
    """``({digest: size} of those modified before ``cutoff``, how many are younger)``."""
    old: dict[str, int] = {}
    young = 0
    for digest in digests:
        try:
            info = repo.storage.info(key_of(digest))
        except FileNotFoundError:
            continue
        if info.mtime > cutoff:
            young += 1
        else:
            old[digest] = info.size
    return old, young


def _delete(found: dict[str, int], live: set[str], delete: Callable[[str], None], dry_run: bool) -> tuple[int, int]:
    """Delete every digest of ``found`` not ``live``; ``(count, bytes)`` deleted (or that would be)."""
    count = size = 0
    for digest, nbytes in found.items():
        if digest in live:
            continue
        if not dry_run:
            try:
                delete(digest)
            except FileNotFoundError:  # another gc on this machine got there first
                continue
        count, size = count + 1, size + nbytes
    return count, size


def _pending_manifests(journal: Journal) -> set[str]:
    """The manifests every pending record's artifacts point at."""
    live: set[str] = set()
    for name in journal.names():
        entry = journal.read(name)
        if entry is not None:  # None: published since it was listed
            live.update(d for a in entry.record.artifacts.values() for d in a.manifests())
    return live
