"""The blob cache: reused artifacts materialised once per content, read-only, shared by runs.

An entry is named by its manifest digest, so it can never be stale: a re-run of an experiment
that changed its artifact has a new digest and a new entry. ``--reuse`` names it by the manifest
*with file times* when the record has one (``ArtifactRecord.times``), so an entry's files carry the
times of the run they came from: the same content captured with other times fills an entry of its
own (setting times on a shared, read-only entry in use by another run would change its files under
it). Records from before times were kept name the content manifest, as they always did. Layout::

    <root>/ab/cdef…/data/        the artifact (read-only files and folders)
    <root>/ab/cdef…/stamp.json   one BLAKE3 over every file's path, size, mtime, inode and mode
                                 when it was filled, the file count, and the artifact's path in data/

An entry is filled in a temporary sibling folder and renamed into place, so a reader sees a whole
entry or none, and two runs filling the same entry at once both end up using the one that won the
rename. A fill killed half-way leaves its temporary folder (``.tmp-<digest>-<pid>-<random>``):
``stats`` counts such leftovers, and the next fill or clean removes those whose creator is dead
(or, for a name without a pid, that are older than ``_STALE_AFTER`` seconds). Read-only permissions do not stop root, so every hit compares the stamp with a fresh stat
walk (microseconds a file) and refills an entry a script has modified.

The stamp is one digest, not a table (``_STAMP_VERSION`` 2): a hit at 100,000 files then reads a
few hundred bytes instead of parsing a 100,000-entry JSON, and, since the stamp also names the
artifact's path, needs no manifest (``cached``), so a warm ``--reuse`` never reads the snapshot's
manifest from the store. A stamp of the first format (a table of every file) is still understood:
its table is digested the same way, and a sound hit rewrites it in the new format.
"""

from __future__ import annotations

import json
import os
import shutil
import stat as statmod
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

from blake3 import blake3

from ..objects.manifest import Manifest
from ..objects.repository import Repository
from ..origin import process_alive
from .restore import fill_new_folder

__all__ = ["BlobCache", "CacheStats"]


_STALE_AFTER = 600.0  # a leftover whose creator cannot be told is removed after ten minutes
_STAMP_VERSION = 2


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

    def cached(self, digest: str) -> Optional[str]:
        """The artifact's path if a sound entry with a current stamp exists, without a manifest.

        None when there is no entry, when it was modified (it is removed), or when its stamp is
        of the first format, which does not name the artifact's path: ``ensure`` then reads it.
        """
        return self._check(digest, None)

    def lookup(self, digest: str, manifest: Manifest) -> Optional[str]:
        """The artifact's path if a sound entry exists, else None (a spoiled entry is removed)."""
        return self._check(digest, manifest)

    def _check(self, digest: str, manifest: Optional[Manifest]) -> Optional[str]:
        entry = self._entry(digest)
        try:
            with open(os.path.join(entry, "stamp.json")) as f:
                stamp = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            if os.path.isdir(entry):  # an entry without a stamp would block every later fill
                self._remove(entry)
            return None
        except ValueError:
            stamp = None
        data = os.path.join(entry, "data")
        if not isinstance(stamp, dict):
            self._remove(entry)
            return None
        if stamp.get("version") == _STAMP_VERSION:
            want, artifact = stamp.get("fingerprint"), stamp.get("artifact")
            if not isinstance(artifact, str) or "/" in artifact or artifact in (".", ".."):
                want = None  # a damaged stamp: refill rather than trust the path it names
        elif manifest is None:
            return None  # a first-format stamp: the caller reads the manifest and asks ``lookup``
        else:
            want, artifact = _table_digest(stamp), _artifact_rel(manifest)
        if not isinstance(want, str) or not want or _fingerprint(data) != want:
            self._remove(entry)
            return None
        if stamp.get("version") != _STAMP_VERSION:
            _write_stamp(entry, _stamp(want, len(stamp), artifact or ""))  # upgraded once, in place, atomically
        return os.path.join(data, artifact) if artifact else data

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
            table = fill_new_folder(repo, manifest, os.path.join(tmp, "data"), progress=progress)
            artifact = _artifact_rel(manifest)
            with open(os.path.join(tmp, "stamp.json"), "w") as f:
                f.write(json.dumps(_stamp(_table_digest(table), len(table), artifact)))
            del table
            try:
                os.rename(tmp, entry)
                data = os.path.join(entry, "data")
                return (os.path.join(data, artifact) if artifact else data), False
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


def _artifact_rel(manifest: Manifest) -> str:
    """The artifact's path inside ``data/``: its one file's name, or "" for a folder."""
    return manifest.entries[0].path if manifest.single_file else ""


def _stamp(fingerprint: str, files: int, artifact: str) -> dict[str, Any]:
    return {"version": _STAMP_VERSION, "fingerprint": fingerprint, "files": files, "artifact": artifact}


def _write_stamp(entry: str, stamp: dict[str, Any]) -> None:
    tmp = os.path.join(entry, f".stamp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(stamp))
        os.replace(tmp, os.path.join(entry, "stamp.json"))
    except OSError:  # a read-only cache or a race with a removal: the old stamp still holds
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _record(rel: str, size: int, mtime_ns: int, ino: int, mode: int) -> str:
    """One file's part of a fingerprint: five NUL-ended fields (a path never holds a NUL)."""
    return f"{rel}\0{size}\0{mtime_ns}\0{ino}\0{mode}\0"


def _digest_records(records: list[str]) -> str:
    records.sort()  # paths are unique and NUL sorts first, so this is the order of the paths
    return blake3("".join(records).encode("utf-8", "surrogateescape")).hexdigest()


def _table_digest(table: Any) -> str:
    """The fingerprint of a table ``{path: [size, mtime_ns, inode, mode]}`` (a fill's, or a first-format stamp)."""
    try:
        return _digest_records([_record(rel, *values) for rel, values in table.items()])
    except (TypeError, ValueError):  # a damaged stamp matches no folder
        return ""


def _fingerprint(data: str) -> str:
    """The digest of every regular file below ``data`` (path, size, mtime, inode, mode), by one stat each.

    ``os.scandir`` and one f-string a file: no ``relpath``/``join`` per file, nothing kept but the
    strings to digest.
    """
    records: list[str] = []
    is_reg, is_dir = statmod.S_ISREG, statmod.S_ISDIR
    folders = [("", data)]
    try:
        while folders:
            prefix, folder = folders.pop()
            with os.scandir(folder) as listing:
                for item in listing:
                    st = item.stat(follow_symlinks=False)
                    mode = st.st_mode
                    if is_reg(mode):
                        records.append(
                            f"{prefix}{item.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{mode & 0o777}\0")
                    elif is_dir(mode):
                        folders.append((f"{prefix}{item.name}/", item.path))
    except OSError:  # gone, unreadable or changing under the walk: not the entry that was stamped
        return ""
    return _digest_records(records)


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
