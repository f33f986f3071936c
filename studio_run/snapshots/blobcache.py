"""The blob cache: reused artifacts materialised once per content, read-only, shared by runs.

An entry is named by its manifest digest, so it can never be stale: a re-run of an experiment
that changed its artifact has a new digest and a new entry. Layout::

    <root>/ab/cdef…/data/        the artifact (read-only files and folders)
    <root>/ab/cdef…/stamp.json   size, mtime and inode of every file when it was filled

An entry is filled in a temporary sibling folder and renamed into place, so a reader sees a whole
entry or none, and two runs filling the same entry at once both end up using the one that won the
rename. Read-only permissions do not stop root, so every hit compares the stamp with a fresh stat
walk (microseconds a file) and refills an entry a script has modified.
"""

from __future__ import annotations

import json
import os
import shutil
import stat as statmod
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from ..objects.manifest import Manifest
from ..objects.repository import Repository
from .restore import fill_new_folder

__all__ = ["BlobCache", "CacheStats"]


@dataclass(frozen=True)
class CacheStats:
    """How many entries the cache holds and their total size in bytes."""

    entries: int
    size: int


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
        entry = self._entry(digest)
        parent = os.path.dirname(entry)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{digest[2:14]}-{uuid.uuid4().hex[:8]}")
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
        """Entries and bytes held."""
        entries = size = 0
        if not os.path.isdir(self.root):
            return CacheStats(0, 0)
        for fan in os.listdir(self.root):
            fan_dir = os.path.join(self.root, fan)
            if not os.path.isdir(fan_dir) or fan.startswith("."):
                continue
            for name in os.listdir(fan_dir):
                if name.startswith("."):
                    continue
                entries += 1
                for dirpath, _dirs, files in os.walk(os.path.join(fan_dir, name)):
                    size += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
        return CacheStats(entries, size)

    def clean(self) -> CacheStats:
        """Remove every entry; returns what was removed. Runs using an entry keep their open files."""
        before = self.stats()
        if os.path.isdir(self.root):
            for fan in os.listdir(self.root):
                self._remove(os.path.join(self.root, fan))
        return before

    def _remove(self, path: str) -> None:
        trash = os.path.join(self.root, f".trash-{uuid.uuid4().hex[:12]}")
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
