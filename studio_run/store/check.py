"""``studio check``: read back every object, pack and manifest of the store and verify it.

Like ``restic check --read-data``: every byte is downloaded and hashed, so the answer does not
depend on sizes or listings. Damage is reported one line each, with the runs it breaks
(``experiment@version``), found from the records through the manifests that name the object.

With ``repair``, damaged objects, packs and manifests are moved to ``quarantine/`` (never
deleted: a human may still want them). They then count as absent, so the next capture of the
same content stores them again and its runs read back whole; the sweep mark is renewed so that
uploaders that remember what the store holds look again. Records are only reported: a damaged
record names its run, and hiding it would lose what can still be read of it.

A read-only check holds a shared store lock (gc does not delete under it, so nothing referenced
vanishes mid-check and is called missing); a repair holds the exclusive one, like gc.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..objects.digest import hash_bytes, hash_file
from ..objects.local import LocalRepository
from ..objects.manifest import Manifest
from ..objects.packs import index_key, pack_key
from ..objects.repository import QUARANTINE, Repository
from .gc import LOCK_WAIT, live_manifests
from .locks import EXCLUSIVE, SHARED, hold
from .store import Store

__all__ = ["CheckResult", "Damage", "check_store"]

_WORKERS = 8  # objects read at once (remote reads are bound by round trips)


@dataclass(frozen=True)
class Damage:
    """One damaged thing in the store and the runs it breaks."""

    kind: str  # object, pack, manifest or record
    key: str
    problem: str  # "missing", "corrupted", "unreadable (...)"
    runs: tuple[str, ...] = ()
    quarantined: bool = False

    def describe(self) -> str:
        """One line for the terminal."""
        runs = f"; breaks {', '.join(self.runs[:10])}{' and more' if len(self.runs) > 10 else ''}" if self.runs else ""
        moved = "; moved to quarantine" if self.quarantined else ""
        return f"{self.kind} {self.key} is {self.problem}{runs}{moved}"


@dataclass
class CheckResult:
    """What a check read and what it found."""

    objects: int = 0
    manifests: int = 0
    packs: int = 0
    bytes_read: int = 0
    damaged: list[Damage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # stray files: not studio's, not damage

    @property
    def clean(self) -> bool:
        """Whether nothing was damaged."""
        return not self.damaged


def check_store(store: Store, repair: bool = False, progress: Optional[Callable[[int], None]] = None) -> CheckResult:
    """Verify every object, pack and manifest of ``store`` (with ``repair``, quarantine the damaged)."""
    notes: list[str] = []
    with hold(store.storage, EXCLUSIVE if repair else SHARED, wait=LOCK_WAIT, note=notes.append):
        result = _Check(store.repo, repair, progress or (lambda n: None)).run(store)
    result.notes[:0] = notes
    return result


class _Check:
    def __init__(self, repo: Repository, repair: bool, progress: Callable[[int], None]) -> None:
        self.repo, self.repair, self.progress = repo, repair, progress
        self.result = CheckResult()
        self.object_runs: dict[str, set[str]] = {}  # object -> runs whose manifests name it
        self.object_manifests: dict[str, set[str]] = {}  # object -> sound manifests naming it
        self.manifest_runs: dict[str, list[str]] = {}
        self.gone: set[str] = set()  # objects missing, or moved to quarantine by this repair
        self.reported: set[str] = set()  # objects already named by a damaged pack's line
        self.moved = False

    def run(self, store: Store) -> CheckResult:
        unreadable: list[tuple[str, str]] = []
        manifest_runs = live_manifests(store.records, lambda line: None, unreadable)
        for key, run in unreadable:
            self.result.damaged.append(Damage("record", key, "unreadable", (run,)))
        self._manifests(manifest_runs)
        packed = self._packs()
        self._objects(packed)
        if self.repair:
            self._move_incomplete_manifests()
        if self.moved:
            self.repo.mark_sweep()
        return self.result

    # -- manifests --------------------------------------------------------------------------------
    def _manifests(self, manifest_runs: dict[str, list[str]]) -> None:
        self.manifest_runs = manifest_runs
        stored = set(self.repo.iter_manifests(on_stray=self._stray))
        for digest in sorted(stored | set(manifest_runs)):
            runs = tuple(sorted(manifest_runs.get(digest, ())))
            key = self.repo.manifest_key(digest)
            try:
                data = self.repo.storage.read_bytes(key)
            except FileNotFoundError:
                self._damaged("manifest", key, "missing", runs)
                continue
            self.result.manifests += 1
            self.result.bytes_read += len(data)
            try:
                if hash_bytes(data) != digest:
                    raise ValueError("corrupted")
                manifest = Manifest.from_bytes(data)
            except (ValueError, TypeError, KeyError) as exc:
                problem = "corrupted" if str(exc) == "corrupted" else f"unreadable ({exc})"
                self._damaged("manifest", key, problem, runs, lambda: self.repo.quarantine_manifest(digest))
                continue
            for obj in manifest.digests():
                self.object_manifests.setdefault(obj, set()).add(digest)
                for run in runs:
                    self.object_runs.setdefault(obj, set()).add(run)

    # -- packs ------------------------------------------------------------------------------------
    def _packs(self) -> set[str]:
        """Verify every pack; returns the objects held by the sound ones."""
        held: set[str] = set()
        for key in self.repo.storage.list("packs/"):
            if not key.endswith(".index"):
                continue
            name = key[len("packs/"):-len(".index")].replace("/", "")
            damaged, members, good = self._pack(name)
            self.result.packs += 1
            held.update(good)
            if damaged is None:
                continue
            bad = [d for d in members if d not in good]
            self.reported.update(bad)
            if self.repair:
                self.gone.update(bad)
            runs = tuple(sorted({r for d in bad for r in self.object_runs.get(d, ())}))
            self._damaged("pack", pack_key(name), damaged, runs, lambda: self._move_pack(name, good))
        return held

    def _pack(self, name: str) -> tuple[Optional[str], list[str], dict[str, bytes]]:
        """``(problem or None, member digests, the members whose bytes are right)`` of one pack."""
        try:
            index = self.repo.storage.read_bytes(index_key(name))
            members = json.loads(index) if hash_bytes(index) == name else None
        except FileNotFoundError:
            return None, [], {}  # swept since the listing
        except ValueError:
            members = None
        if members is None:
            return "corrupted (its index)", [], {}
        digests = [entry[0] for entry in members]
        try:
            body = self.repo.storage.read_bytes(pack_key(name))
        except FileNotFoundError:
            return "missing (its index remains)", digests, {}
        self.result.bytes_read += len(body) + len(index)
        self.progress(len(body))
        good = {d: body[o:o + n] for d, o, n in members if hash_bytes(body[o:o + n]) == d}
        bad = [d for d in digests if d not in good]
        return (f"corrupted ({len(bad)} of its {len(digests)} objects)" if bad else None), digests, good

    def _move_pack(self, name: str, good: dict[str, bytes]) -> None:
        """Quarantine a pack after storing its sound objects loose (packs are never rewritten),
        so that only the damaged ones go missing."""
        for digest, data in good.items():
            if not self.repo.storage.exists(self.repo.object_key(digest)):
                self.repo.storage.write_bytes(self.repo.object_key(digest), data)
        self.repo.packs.quarantine(name)

    # -- objects ----------------------------------------------------------------------------------
    def _objects(self, packed: set[str]) -> None:
        loose = list(self.repo.iter_objects(on_stray=self._stray))
        with ThreadPoolExecutor(_WORKERS) as pool:
            for digest, problem, size in pool.map(self._object, loose):
                self.result.objects += 1
                self.result.bytes_read += size
                self.progress(size)
                if problem:
                    if self.repair:
                        self.gone.add(digest)
                    runs = tuple(sorted(self.object_runs.get(digest, ())))
                    self._damaged("object", self.repo.object_key(digest), problem, runs,
                                  lambda d=digest: self.repo.quarantine_object(d))  # type: ignore[misc]
        present = set(loose) | packed
        for digest in sorted(self.object_manifests):
            if digest not in present and digest not in self.reported:
                self.gone.add(digest)
                if self.object_runs.get(digest):
                    self._damaged("object", self.repo.object_key(digest), "missing",
                                  tuple(sorted(self.object_runs[digest])))

    def _move_incomplete_manifests(self) -> None:
        """Move aside every manifest naming an object that is gone: a manifest in the store
        vouches for all of its objects (uploaders skip them), so it may only be there with them;
        the next capture of the same content stores it again, with what it lacks."""
        incomplete = sorted({m for d in self.gone for m in self.object_manifests.get(d, ())})
        for digest in incomplete:
            key = self.repo.manifest_key(digest)
            try:
                data = self.repo.storage.read_bytes(key)
            except FileNotFoundError:
                continue
            self.repo.storage.write_bytes(QUARANTINE + key, data)
            self.repo.storage.delete(key)
            self.moved = True
            runs = tuple(sorted(self.manifest_runs.get(digest, ())))
            self.result.damaged.append(Damage("manifest", key, "incomplete (it names a damaged object)", runs, True))

    def _object(self, digest: str) -> tuple[str, str, int]:
        key = self.repo.object_key(digest)
        try:
            if isinstance(self.repo, LocalRepository):
                path = self.repo.storage.path_of(key)
                size = os.path.getsize(path)
                actual = hash_file(path)
            else:
                data = self.repo.storage.read_bytes(key)
                size, actual = len(data), hash_bytes(data)
        except FileNotFoundError:
            return digest, "", 0  # swept since the listing (unreferenced: gc's to take)
        return digest, "" if actual == digest else "corrupted", size

    # -- reporting --------------------------------------------------------------------------------
    def _damaged(self, kind: str, key: str, problem: str, runs: tuple[str, ...],
                 move: Optional[Callable[[], object]] = None) -> None:
        quarantined = False
        if self.repair and move is not None:
            move()
            quarantined = self.moved = True
        self.result.damaged.append(Damage(kind, key, problem, runs, quarantined))

    def _stray(self, key: str) -> None:
        self.result.notes.append(f"stray file {key} is not studio's; left alone")
