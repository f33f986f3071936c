"""The blob cache: reused artifacts materialised once per content, read-only, shared by runs.

An entry is named by its manifest digest, so it can never be stale: a re-run of an experiment
that changed its artifact has a new digest and a new entry. ``--reuse`` names it by the manifest
*with file times* when the record has one (``ArtifactRecord.times``), so an entry's files carry the
times of the run they came from: the same content captured with other times fills an entry of its
own (setting times on a shared, read-only entry in use by another run would change its files under
it). Records from before times were kept name the content manifest, as they always did. Layout::

    <root>/ab/cdef…/data/        the artifact (read-only files and folders)
    <root>/ab/cdef…/stamp.json   size, mtime and inode of every file when it was filled

An entry is filled in a temporary sibling folder and renamed into place, so a reader sees a whole
entry or none, and two runs filling the same entry at once both end up using the one that won the
rename. A fill killed half-way leaves its temporary folder (``.tmp-<digest>-<pid>-<random>``):
``stats`` counts such leftovers, and the next fill or clean removes those whose creator is dead
(or, for a name without a pid, that are older than ``_STALE_AFTER`` seconds). Read-only permissions do not stop root, so every hit compares the stamp with a fresh stat
walk (microseconds a file) and refills an entry a script has modified.
"""

from __future__ import annotations

import json
import os
import shutil
import stat as statmod
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from ..objects.manifest import Manifest
from ..objects.repository import Repository
from ..origin import process_alive
from .restore import fill_new_folder

__all__ = ["BlobCache", "CacheStats"]


_STALE_AFTER = 600.0  # a leftover whose creator cannot be told is removed after ten minutes


@dataclass(frozen=True)
class CacheStats:
    """How many entries the cache holds and their total size in bytes (leftovers included).

    ``leftovers`` counts the temporary folders of fills and removals that were killed half-way.
    """

    entries: int
    size: int
    leftovers: int = 0


class BlobCache:
    """Content-keyed, read-only copies of artifacts under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _entry(self, digest: str) -> str:
        return os.path.join(self.root, digest[:2], digest[2:])

    def lookup(self, digest: str, manifest: Manifest) -> Optional[str]:
        """The artifact's path if a sound entry exists, else None (a spoiled entry is removed)."""
        entry = self._entry(digest)
        try:
            with open(os.path.join(entry, "stamp.json")) as f:
                stamp = json.load(f)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        data = os.path.join(entry, "data")
        if _fingerprint(data) != stamp:
            self._remove(entry)
            return None
        return _artifact_path(data, manifest)

    def ensure(
        self,
        repo: Repository,
        digest: str,
        manifest: Manifest,
        progress: Optional[Callable[[int], None]] = None,
    ) -> tuple[str, bool]:
        """Return ``(path, hit)``: the cached artifact, filling the entry from ``repo`` on a miss."""
        found = self.lookup(digest, manifest)
        if found is not None:
            return found, True
        self.remove_leftovers()
        entry = self._entry(digest)
        parent = os.path.dirname(entry)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{digest[2:14]}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.mkdir(tmp)
            stamp = fill_new_folder(repo, manifest, os.path.join(tmp, "data"), progress=progress)
            with open(os.path.join(tmp, "stamp.json"), "w") as f:
                f.write(json.dumps(stamp))  # one C-encoded string: json.dump encodes piece by piece in Python
            try:
                os.rename(tmp, entry)
                return _artifact_path(os.path.join(entry, "data"), manifest), False
            except OSError:
                if not os.path.isdir(entry):
                    raise
                # another run filled it first: use theirs
        finally:
            if os.path.isdir(tmp):
                _rmtree(tmp)
        found = self.lookup(digest, manifest)
        if found is None:  # pragma: no cover - the winner's entry was spoiled at once
            raise RuntimeError(f"blob cache entry {entry} could not be filled")
        return found, False

    def stats(self) -> CacheStats:
        """Entries and bytes held, and the leftovers of killed fills (whose bytes count too)."""
        entries = size = leftovers = 0
        for path, is_leftover in self._listing():
            leftovers += is_leftover
            entries += not is_leftover
            for dirpath, _dirs, files in os.walk(path):
                size += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
        return CacheStats(entries, size, leftovers)

    def clean(self) -> CacheStats:
        """Remove every entry and stale leftover; returns what was there. Runs using an entry keep their open files."""
        before = self.stats()
        self.remove_leftovers()
        if os.path.isdir(self.root):
            for fan in os.listdir(self.root):
                if not fan.startswith("."):
                    self._remove(os.path.join(self.root, fan))
        return before

    def remove_leftovers(self) -> int:
        """Remove temporary folders of fills and removals whose process is gone; returns how many."""
        removed = 0
        for path, is_leftover in self._listing():
            if is_leftover and _is_stale(os.path.basename(path), path):
                try:
                    _rmtree(path)
                except FileNotFoundError:  # another process removed it first
                    continue
                removed += 1
        return removed

    def _listing(self) -> list[tuple[str, bool]]:
        """Every entry folder and leftover, as ``(path, is_leftover)``."""
        found: list[tuple[str, bool]] = []
        if not os.path.isdir(self.root):
            return found
        for fan in os.listdir(self.root):
            fan_dir = os.path.join(self.root, fan)
            if fan.startswith("."):  # a removal's trash
                found.append((fan_dir, True))
                continue
            if not os.path.isdir(fan_dir):
                continue
            found.extend((os.path.join(fan_dir, name), name.startswith(".")) for name in os.listdir(fan_dir))
        return found

    def _remove(self, path: str) -> None:
        trash = os.path.join(self.root, f".trash-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        try:
            os.rename(path, trash)  # atomic: readers see the entry whole or gone
        except FileNotFoundError:
            return
        _rmtree(trash)


def _artifact_path(data: str, manifest: Manifest) -> str:
    if manifest.single_file:
        return os.path.join(data, manifest.entries[0].path)
    return data


def _fingerprint(data: str) -> dict[str, list[int]]:
    stamp: dict[str, list[int]] = {}
    for dirpath, _dirs, files in os.walk(data):
        for name in files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if statmod.S_ISREG(st.st_mode):
                rel = os.path.relpath(full, data)
                stamp[rel] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o777]
    return stamp


def _is_stale(name: str, path: str) -> bool:
    """Whether a leftover's creator (the pid in its name) is dead, or, without one, it is old."""
    parts = name.split("-")
    if name.startswith(".tmp-"):
        pid_part = parts[2] if len(parts) == 4 else ""  # .tmp-DIGEST-PID-RANDOM
    else:
        pid_part = parts[1] if len(parts) == 3 else ""  # .trash-PID-RANDOM
    if pid_part.isdigit() and int(pid_part) < 1 << 31:
        pid = int(pid_part)
        if pid == os.getpid():
            return False  # one of this process's threads is at work
        return not process_alive(pid)
    try:
        return time.time() - os.lstat(path).st_mtime > _STALE_AFTER
    except FileNotFoundError:
        return False


def _rmtree(path: str) -> None:
    def onerror(func, target, _exc):  # type: ignore[no-untyped-def]
        os.chmod(os.path.dirname(target), 0o755)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o755)
        func(target)

    for dirpath, dirs, _files in os.walk(path):
        for name in dirs:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)
    if os.path.isdir(path):
        os.chmod(path, 0o755)
    shutil.rmtree(path, onerror=onerror)
