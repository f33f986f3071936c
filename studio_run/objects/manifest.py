"""Manifests: the list of what one snapshot of a directory (or single file) holds.

A manifest is itself content-addressed (its digest is the hash of its canonical JSON), so the
same directory state always has the same digest: the blob cache keys on it, and an unchanged
periodic capture is recognised by comparing two digests.

Every manifest read back from a store is validated before anything is written from it: paths
must be relative, free of ``..`` and unique, no entry may live below a symlink or a file, and
symlink targets must stay inside the artifact. A manifest that breaks a rule raises
``UnsafePathError``; one that does not parse raises ``IntegrityError``.

Names are any bytes Linux allows (backslash, newline, leading dash, 255 bytes, invalid UTF-8).
A name is held as Python holds file names (``os.fsdecode``: UTF-8, each undecodable byte as a
lone surrogate U+DC80..U+DCFF) and the JSON is ASCII, so such a byte is written ``\\udcXX``; the
round trip to bytes is exact. Only the canonical spelling is accepted (the one ``os.fsdecode``
gives for those bytes), so no two entries can name the same file.
"""

from __future__ import annotations

import json
import posixpath
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from ..errors import IntegrityError, UnsafePathError
from .digest import ALGORITHM, chunk_list_digest, hash_bytes, is_digest

__all__ = ["Entry", "FILE", "LINK", "Manifest"]

FILE = "file"
LINK = "link"
_FORMAT = 1


# Slots where Python has them (3.10+): a capture of 300,000 files holds 300,000 entries, and a
# slotted one is a fifth of the size of one with a __dict__.
_SLOTS: dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}
_ENCODE_BATCH = 5000  # entries serialised at a time: the dicts of a whole manifest never exist at once


@dataclass(frozen=True, **_SLOTS)
class Entry:
    """One file or symlink: relative posix ``path``; ``digest`` for files, ``target`` for links.

    ``mtime_ns`` is the file's modification time, kept when the capture asked for times
    (``snapshot(times=True)``); restores set it back. Without it (older manifests, captures
    without times) a restored file gets the time of the restore.
    ``sparse`` marks a file that had holes when captured, so restores leave its zero blocks
    unwritten. It is written only when true, so the manifests of other files keep their digests.
    """

    path: str
    type: str = FILE
    size: int = 0
    mode: int = 0o644
    digest: str = ""
    target: str = ""
    chunks: tuple[tuple[str, int], ...] = ()
    sparse: bool = False
    mtime_ns: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """Compact form: links carry a target, files a digest, size and mode (and chunks)."""
        if self.type == LINK:
            return {"path": self.path, "type": LINK, "target": self.target}
        data: dict[str, Any] = {"path": self.path, "size": self.size, "mode": self.mode, "digest": self.digest}
        if self.chunks:
            data["chunks"] = [[d, n] for d, n in self.chunks]
        if self.sparse:
            data["sparse"] = True
        if self.mtime_ns is not None:
            data["mtime"] = self.mtime_ns
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Entry":
        """Inverse of ``to_dict``; raises ``IntegrityError`` on malformed fields."""
        try:
            if data.get("type", FILE) == LINK:
                return cls(path=str(data["path"]), type=LINK, target=str(data["target"]))
            entry = cls(
                path=str(data["path"]),
                size=int(data["size"]),
                mode=int(data["mode"]) & 0o777,
                digest=str(data["digest"]),
                chunks=tuple((str(d), int(n)) for d, n in data.get("chunks", ())),
                sparse=data.get("sparse", False) is True,
                mtime_ns=None if data.get("mtime") is None else _int(data["mtime"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"malformed manifest entry {data!r}") from exc
        if not is_digest(entry.digest) or entry.size < 0:
            raise IntegrityError(f"malformed manifest entry {data!r}")
        if entry.chunks and (
            any(not is_digest(d) or n <= 0 for d, n in entry.chunks)
            or sum(n for _, n in entry.chunks) != entry.size
            or chunk_list_digest(entry.chunks) != entry.digest
        ):
            raise IntegrityError(f"chunk list of {entry.path!r} does not add up to its size and digest")
        return entry


@dataclass(frozen=True)
class Manifest:
    """A snapshot's entries sorted by path; ``single_file`` marks a one-file artifact."""

    entries: tuple[Entry, ...] = ()
    single_file: bool = False
    _digest: list[str] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def build(cls, entries: Iterable[Entry], single_file: bool = False, *, check: bool = True) -> "Manifest":
        """Sort and validate entries into a manifest.

        ``check=False`` skips the validation for entries a capture made from a walk of the file
        system, safe by construction (relative, unique, nothing below a file; links that lead
        out are never entries): on 100,000 files it costs more than the rest of an unchanged
        capture. Manifests read from a store are always validated (``from_bytes``).
        """
        manifest = cls(tuple(sorted(entries, key=_path_of)), single_file)
        if check:
            manifest.validate()
        return manifest

    @classmethod
    def stored(cls, entries: Iterable[Entry], single_file: bool, digest: str) -> "Manifest":
        """The manifest of a capture known to be identical to the stored one named ``digest``
        (every file's stat unchanged since that capture: ``snapshots.statcache``), without
        serialising and hashing it again."""
        return cls(tuple(sorted(entries, key=_path_of)), single_file, [digest])

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(e.size for e in self.entries if e.type == FILE)

    @property
    def file_count(self) -> int:
        """Number of files and links."""
        return len(self.entries)

    def digests(self) -> set[str]:
        """Every object digest the manifest refers to (a chunked file's chunks, not the file)."""
        return set(self.objects())

    def objects(self) -> dict[str, int]:
        """Every object the manifest refers to, with its size in bytes."""
        found: dict[str, int] = {}
        for e in self.entries:
            if e.type != FILE:
                continue
            if e.chunks:
                found.update(e.chunks)
            else:
                found[e.digest] = e.size
        return found

    def to_bytes(self, times: bool = True) -> bytes:
        """Canonical JSON: the same manifest always serialises to the same bytes.

        The bytes are ``json.dumps(doc, separators=(",", ":"), sort_keys=True)`` of
        ``{"entries": [...], "format", "hash", "single_file"}``, made a few thousand entries at a
        time so that 300,000 entry dicts never exist at once. ``times=False`` leaves the file
        times out: the bytes of the content manifest, without building its entries.
        """
        parts = []
        for start in range(0, len(self.entries), _ENCODE_BATCH):
            dicts = [e.to_dict() for e in self.entries[start:start + _ENCODE_BATCH]]
            if not times:
                for d in dicts:
                    d.pop("mtime", None)
            parts.append(json.dumps(dicts, separators=(",", ":"), sort_keys=True)[1:-1])
        tail = json.dumps({"format": _FORMAT, "hash": ALGORITHM, "single_file": self.single_file},
                          separators=(",", ":"), sort_keys=True)
        return ('{"entries":[' + ",".join(parts) + "]," + tail[1:]).encode()

    def encode(self) -> bytes:
        """``to_bytes``, remembering the digest of those bytes (one serialisation for both)."""
        data = self.to_bytes()
        if not self._digest:
            self._digest.append(hash_bytes(data))
        return data

    @property
    def digest(self) -> str:
        """Digest of the canonical bytes, computed once."""
        if not self._digest:
            self._digest.append(hash_bytes(self.to_bytes()))
        return self._digest[0]

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        """Parse and validate stored bytes; never trusts them."""
        try:
            doc = json.loads(data)
            if doc.get("format") != _FORMAT or doc.get("hash") != ALGORITHM:
                raise IntegrityError(f"unsupported manifest format {doc.get('format')!r}")
            entries = tuple(Entry.from_dict(e) for e in doc["entries"])
            single = bool(doc.get("single_file", False))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError("manifest is not valid JSON of the expected shape") from exc
        manifest = cls(entries, single)
        manifest.validate()
        return manifest

    def validate(self) -> None:
        """Refuse anything that could write outside the destination when restored."""
        seen: set[str] = set()
        links: set[str] = set()
        for entry in self.entries:
            path = entry.path
            _check_relative(path, "path")
            if path in seen:
                raise UnsafePathError(f"manifest lists {path!r} twice")
            seen.add(path)
            if entry.type == LINK:
                links.add(path)
                _check_link_target(path, entry.target)
        folders: set[str] = set()  # every folder above an entry, each walked up once
        for path in seen:
            parent = posixpath.dirname(path)
            while parent and parent not in folders:
                folders.add(parent)
                parent = posixpath.dirname(parent)
        for folder in folders & seen:  # an entry that is also a folder above another entry
            below = next(p for p in sorted(seen) if p.startswith(folder + "/"))
            kind = "symlink" if folder in links else "file"
            raise UnsafePathError(f"manifest entry {below!r} lies below the {kind} {folder!r}")
        if self.single_file and (len(self.entries) != 1 or "/" in self.entries[0].path):
            raise IntegrityError("a single-file manifest must hold exactly one top-level entry")


def _path_of(entry: Entry) -> str:
    return entry.path


def _int(value: Any) -> int:
    """An integer field, refusing floats and strings that ``int`` would quietly accept."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _check_relative(path: str, what: str) -> None:
    if not path or path.startswith("/") or "\x00" in path or not _is_fs_name(path):
        raise UnsafePathError(f"manifest {what} {path!r} is absolute or malformed")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise UnsafePathError(f"manifest {what} {path!r} escapes its folder")


def _is_fs_name(text: str) -> bool:
    """Whether ``text`` is the canonical ``os.fsdecode`` spelling of some bytes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape") == text
    except UnicodeError:
        return False


def _check_link_target(path: str, target: str) -> None:
    if not target or target.startswith("/") or "\x00" in target or not _is_fs_name(target):
        raise UnsafePathError(f"symlink {path!r} points outside the artifact ({target!r})")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafePathError(f"symlink {path!r} points outside the artifact ({target!r})")
