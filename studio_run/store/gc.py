"""``studio gc``: delete objects and manifests no record refers to.

Mark and sweep: every record's artifacts and reuses mark manifests, manifests mark objects, the
rest is swept. A pack (small objects stored together) goes only when none of its objects is
live: a partly live pack is kept whole, never rewritten (a pack is write-once like an object; the
dead bytes it keeps are the small files of deleted runs that shared a capture with live ones). A
pack file without an index (its writer was killed between the two) is garbage, swept after the
grace like any unreferenced content. Three guards keep a capture in progress whole, on any machine sharing the store:

- gc holds the store's exclusive lock (``studio_run.store.locks``) while it marks and sweeps,
  and a capture holds a shared one from before it decides content is "already stored" until
  its record is written, so gc never deletes what a capture is about to publish; a second gc
  refuses at once;
- content younger than ``grace`` is kept (captures by versions of studio without locks);
- the sweep mark is written before the first deletion, so uploaders forget what they knew.

It never stops on one bad thing: a stray file under ``objects/`` or ``manifests/`` is named and
left alone; a record or live manifest that cannot be read is named, and every digest that can
still be read out of its bytes is kept (its run is damaged already; the rest of the store is
not held hostage to it, and nothing it may still point at is deleted on a guess). Keys that
vanish under it (another machine's gc before the locks, a sweep by hand) are skipped. Nothing
it writes needs free space beyond empty keys, so it runs on a full disk.

The job queue's leftovers (index entries and claim heartbeats of final or deleted runs, worker
heartbeats silent for a day) go too, after the content (``studio_run.store.queue_gc``).

On a remote store, this machine's staged copies and cached pack indexes are pruned after the
sweep (``studio_run.store.staging_gc``), under the staging folder's own exclusive lock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Optional

from .. import console
from ..errors import IntegrityError, NotFoundError
from ..objects.digest import hash_bytes
from ..objects.manifest import Manifest
from ..objects.packs import index_key, pack_key
from ..objects.repository import Repository
from .locks import EXCLUSIVE, hold
from .queue_gc import QueueTidy, tidy_queue_keys
from .records import DamagedRecordError, RecordStore, RunRecord
from .staging_gc import PruneResult, prune_local_copies
from .store import Store

__all__ = ["GcResult", "LOCK_WAIT", "collect_garbage", "live_manifests"]

#: Seconds gc waits for captures in progress to publish before it gives up (they hold the
#: shared lock only from a capture to its record, seconds to minutes).
LOCK_WAIT = 300.0
_DIGEST = re.compile(rb"[0-9a-f]{64}")

Warn = Callable[[str], None]


@dataclass(frozen=True)
class GcResult:
    """What a collection removed and kept."""

    objects_removed: int
    manifests_removed: int
    bytes_removed: int
    kept_young: int
    local: Optional[PruneResult] = None  # this machine's copies of a remote store
    problems: tuple[str, ...] = field(default=())  # stray files, unreadable records and manifests
    queue: QueueTidy = field(default_factory=QueueTidy)  # the job queue's leftover keys (``queue_gc``)


def collect_garbage(
    store: Store,
    grace: float = 3600.0,
    dry_run: bool = False,
    *,
    lock_wait: float = LOCK_WAIT,
    warn: Warn = console.warn,
) -> GcResult:
    """Sweep unreferenced content older than ``grace`` seconds from the store, then (for a
    remote store) from this machine's staging folder and pack-index cache.

    Raises ``StoreBusy`` when another gc runs, or captures kept publishing for ``lock_wait``
    seconds. Problems met on the way are passed to ``warn`` (one line each) and returned.
    """
    problems: list[str] = []

    def note(problem: str) -> None:
        problems.append(problem)
        warn(problem)

    with hold(store.storage, EXCLUSIVE, wait=lock_wait, note=note):
        result = _sweep(store.repo, store.records, grace, dry_run, note)
    local = None
    if store.is_remote:
        with hold(store.local_repo.storage, EXCLUSIVE, wait=lock_wait, note=note):
            local = prune_local_copies(store, grace, dry_run, result.swept_packs)
    queue = tidy_queue_keys(store.records, dry_run)
    return GcResult(result.objects, result.manifests, result.bytes, result.young, local, tuple(problems), queue)


def live_manifests(
    records: RecordStore, warn: Warn, unreadable: Optional[list[tuple[str, str]]] = None
) -> dict[str, list[str]]:
    """Manifest digest -> the runs (``experiment@version``) pointing at it, read from every
    record; a record that cannot be read is named (and added to ``unreadable`` as ``(key,
    experiment@version)``) and every digest in its bytes counts."""
    live: dict[str, list[str]] = {}
    for experiment, ids in records.all_runs().items():
        for version, run_id in enumerate(ids, 1):
            name = f"{experiment}@{version}"
            try:
                digests = _record_digests(records.read(experiment, run_id, version))
            except NotFoundError:
                continue  # deleted since the listing
            except DamagedRecordError as exc:
                if unreadable is not None:
                    unreadable.append((exc.key, name))
                try:
                    digests = _digests_in(records.storage.read_bytes(exc.key))
                except FileNotFoundError:
                    continue
                if digests:  # one naming nothing is the caller's to refuse on
                    warn(f"{name}: {exc.key} is damaged ({exc.reason}); everything it may point at is kept")
            for digest in digests:
                live.setdefault(digest, []).append(name)
    return live


@dataclass
class _Swept:
    objects: int = 0
    manifests: int = 0
    bytes: int = 0
    young: int = 0
    swept_packs: list[str] = field(default_factory=list)


def _sweep(repo: Repository, records: RecordStore, grace: float, dry_run: bool, note: Warn) -> _Swept:
    damaged: list[tuple[str, str]] = []
    manifests = live_manifests(records, note, damaged)
    blind = [key for key, _ in damaged if not _digests_in(_read_or_empty(records, key))]
    if blind:  # a record with no digest left in it: what it pointed at cannot be known, so keep everything
        raise IntegrityError(
            f"run record {blind[0]} is damaged and names nothing gc can read, so gc removed nothing; "
            "move that file out of the store (or restore it from a copy) and run gc again")
    live_objects = _live_objects(repo, manifests, note)
    cutoff = time.time() - grace
    out = _Swept()
    marked = dry_run

    def mark() -> None:  # before the first deletion: uploaders must stop trusting what they knew
        nonlocal marked
        if not marked:
            repo.mark_sweep()
            marked = True

    def stray(key: str) -> None:
        note(f"stray file {key} in the store is not studio's; left alone")

    def sweep(key: str, delete: Callable[[], None]) -> Optional[int]:
        """Delete one unreferenced object or manifest older than the grace; its size if swept."""
        info = _info(repo, key)
        if info is None:
            return None
        if info.mtime > cutoff:
            out.young += 1
            return None
        if not dry_run:
            mark()
            _delete(delete)
        return info.size

    for digest in list(repo.iter_manifests(on_stray=stray)):
        if digest not in manifests and sweep(repo.manifest_key(digest), partial(repo.delete_manifest, digest)) is not None:
            out.manifests += 1
    for digest in list(repo.iter_objects(on_stray=stray)):
        if digest in live_objects:
            continue
        size = sweep(repo.object_key(digest), partial(repo.delete_object, digest))
        if size is not None:
            out.objects += 1
            out.bytes += size
    for name, members in repo.packs.packs().items():
        if any(digest in live_objects for digest in members):
            continue  # one live object keeps its whole pack (packs are never rewritten)
        index, pack = _info(repo, index_key(name)), _info(repo, pack_key(name))
        if index is None:
            continue
        if index.mtime > cutoff:
            out.young += 1
            continue
        if not dry_run:
            mark()
            _delete(lambda: repo.packs.delete(name))
        out.swept_packs.append(name)
        out.objects += len(members)
        out.bytes += pack.size if pack is not None else 0
    for name in list(repo.packs.orphans()):  # a writer killed between its pack and its index
        size = sweep(pack_key(name), partial(repo.storage.delete, pack_key(name)))
        if size is not None:
            out.bytes += size
    return out


def _live_objects(repo: Repository, manifests: Iterable[str], note: Warn) -> set[str]:
    """Objects of every live manifest; of a damaged one, every digest its bytes still name.

    Manifests are read here without ``get_manifest``'s quarantine, so a dry run changes nothing.
    """
    live: set[str] = set()
    for digest in manifests:
        try:
            data = repo.storage.read_bytes(repo.manifest_key(digest))
        except FileNotFoundError:
            continue  # nothing to read: its run is unreadable already, and nothing names its objects
        try:
            if hash_bytes(data) != digest:
                raise ValueError("its bytes do not match its digest")
            live.update(Manifest.from_bytes(data).digests())
        except (ValueError, TypeError, KeyError, IntegrityError) as exc:
            note(f"manifest {digest[:12]}… is damaged ({exc}); every object it may name is kept "
                 "(`studio check --repair` moves it aside)")
            live.update(_digests_in(data))
    return live


def _record_digests(record: RunRecord) -> set[str]:
    digests = {d for a in record.artifacts.values() for d in a.manifests()}  # content, then with times
    digests.update(d for r in record.reuses for d in (r.digest, r.times) if d)
    return digests


def _read_or_empty(records: RecordStore, key: str) -> bytes:
    try:
        return records.storage.read_bytes(key)
    except FileNotFoundError:
        return b""


def _digests_in(data: bytes) -> set[str]:
    return {m.decode() for m in _DIGEST.findall(data)}


def _info(repo: Repository, key: str):  # type: ignore[no-untyped-def]
    try:
        return repo.storage.info(key)
    except FileNotFoundError:
        return None  # gone meanwhile


def _delete(action: Callable[[], None]) -> None:
    try:
        action()
    except FileNotFoundError:
        pass  # gone meanwhile: what we wanted
