"""Artifacts as downloads: a whole snapshot as a tar or tar.gz stream, one file's bytes, and a
folder listing for a browsable tree (``studio ui`` and ``studio get EXP/TAG --tar OUT``).

Everything is read through the repository's verified reads (``Repository.read_object``, loose
or packed objects alike), one object at a time, so memory stays bounded whatever the artifact's
size (a few objects of at most 8 MiB in flight) and the first bytes go out at once. An object
whose bytes do not match its digest raises ``IntegrityError`` *before* its bytes are handed out:
the stream stops short of the size its tar header announced, so every tar and gunzip reports a
truncated archive instead of extracting wrong bytes. Files keep their mode and their captured
modification time (to the nanosecond, in a PAX header) from the artifact's ``times`` manifest.

Paths name files by lookup in the manifest, never by joining onto a folder: ``..``, absolute
paths, empty segments and NUL are refused as unknown (``NotFoundError``) before any lookup.

gzip level: ``GZIP_LEVEL`` is 1. Measured on W1's folder (half random weights, half text),
level 1 streams about twice as fast as level 6 for a few percent more bytes (random data does
not compress at any level); ``benchmarks/ui_bench.py`` has the figures.
"""

from __future__ import annotations

import os
import posixpath
import struct
import tarfile
import tempfile
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generator, Iterator, Optional

from ..errors import IntegrityError, NotFoundError, UsageError
from ..objects.digest import hash_bytes
from ..objects.manifest import LINK, Entry, Manifest
from ..objects.repository import Repository
from ..refs import ArtifactRef
from .artifacts import protected_folders, resolve_artifact
from .browse import list_files
from .placing import check_dest, place_file, staging_folder
from .records import RunRecord
from .store import Store

__all__ = ["GZIP_LEVEL", "TreeEntry", "find_entry", "iter_file", "iter_ref_tar", "iter_tar", "list_tree",
           "run_artifact_manifest", "save_tar", "tar_kind"]

#: The default gzip level of ``iter_tar`` (see the module docstring for why 1).
GZIP_LEVEL = 1
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_PIECE = 256 << 10  # small pieces (headers, small files) are gathered into yields of about this size
_AHEAD = 4  # objects read and verified ahead of the one being written (overlaps store reads)
_EMPTY = hash_bytes(b"")
_TAR_SUFFIXES = ((".tar.gz", True), (".tgz", True), (".tar", False))  # --tar OUT: gzipped or not
_GZ_BLOCK = 1 << 20  # input compressed per task
_WINDOW = 32 << 10  # deflate's window: what a block is primed with from the one before
_SAMPLE = 32 << 10  # what is tried first to tell whether a block compresses at all
_COMPRESSORS = max(2, min(4, os.cpu_count() or 2))
# gzip header: magic, deflate, no flags, no time, no extra flags, OS unknown (RFC 1952).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass(frozen=True)
class TreeEntry:
    """One name in a folder listing: a file, link or folder (``size`` and ``files``: everything below)."""

    name: str
    path: str
    is_dir: bool
    size: int
    mtime: Optional[float]  # seconds; a folder's is its newest file's; None when not recorded
    is_link: bool = False
    target: str = ""
    files: int = 1


def run_artifact_manifest(store: Store, record: RunRecord, tag: str) -> Manifest:
    """The manifest of ``record``'s artifact ``tag`` (with file times when recorded), verified."""
    art = record.artifacts.get(tag)
    if art is None or not art.digest:
        tags = ", ".join(sorted(t for t, a in record.artifacts.items() if a.digest)) or "none"
        raise NotFoundError(f"experiment {record.experiment!r} version {record.version} has no artifact "
                            f"{tag!r}; its tags: {tags}")
    return store.repo.get_manifest(art.restore_digest)


def _safe_path(path: str, what: str = "file") -> str:
    """``path`` when it can name a manifest entry; ``NotFoundError`` for anything that could not."""
    if (not isinstance(path, str) or not path or "\x00" in path or path.startswith("/")
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise NotFoundError(f"the artifact has no {what} {path!r}")
    return path


def find_entry(store: Store, record: RunRecord, tag: str, path: str) -> Entry:
    """The file entry ``path`` names in the artifact (a link inside it is followed to its file).

    ``NotFoundError`` for unknown names, folders, links leading nowhere, and unsafe paths.
    """
    path = _safe_path(path)
    entries = {e.path: e for e in run_artifact_manifest(store, record, tag).entries}
    current: Optional[Entry] = entries.get(path)
    for _hop in range(len(entries)):
        if current is None or current.type != LINK:
            break
        # Manifests are validated: a link's target stays inside the artifact.
        current = entries.get(posixpath.normpath(posixpath.join(posixpath.dirname(current.path), current.target)))
    if current is None or current.type == LINK:
        below = any(p.startswith(path + "/") for p in entries)
        kind = "a folder, not a file" if below else "not a file in it"
        raise NotFoundError(f"{record.experiment}/{tag} has no file {path!r} ({path!r} is {kind})")
    return current


def iter_file(store: Store, record: RunRecord, tag: str, path: str) -> Iterator[bytes]:
    """One file's bytes, each object verified before it is handed out.

    The lookup happens now (so a caller can answer 404 before sending anything); the bytes
    are read as the iterator is consumed.
    """
    entry = find_entry(store, record, tag, path)
    return _prefetched(store.repo, list(_objects(entry)))


def _objects(entry: Entry) -> tuple[tuple[str, int], ...]:
    return entry.chunks or ((entry.digest, entry.size),)


def _read(repo: Repository, digest: str, size: int) -> bytes:
    """An object's verified bytes, of exactly the size the manifest gives."""
    if size == 0 and digest == _EMPTY:
        return b""
    data = repo.read_object(digest)
    if len(data) != size:
        raise IntegrityError(f"object {digest[:12]}… holds {len(data)} bytes where its manifest says {size}")
    return data


def list_tree(store: Store, record: RunRecord, tag: str, prefix: str = "") -> list[TreeEntry]:
    """What the folder ``prefix`` (``""``: the artifact's top) holds, folders first, then by name.

    A folder's size and file count add up everything below it. ``NotFoundError`` when
    ``prefix`` is no folder of the artifact.
    """
    manifest = run_artifact_manifest(store, record, tag)
    prefix = _safe_path(prefix.rstrip("/"), "folder") if prefix else ""
    entries = list_files(manifest, prefix or None)
    if prefix and all(e.path == prefix for e in entries):
        raise NotFoundError(f"{record.experiment}/{tag} has no folder {prefix!r} (it is a file)")
    start = len(prefix) + 1 if prefix else 0
    folders: dict[str, list[float]] = {}  # name -> [size, files, newest mtime]
    rows: list[TreeEntry] = []
    for entry in entries:
        head, sep, _rest = entry.path[start:].partition("/")
        mtime = entry.mtime_ns / 1e9 if entry.mtime_ns is not None else None
        if sep:
            acc = folders.setdefault(head, [0, 0, -1.0])
            acc[0] += entry.size if entry.type != LINK else 0
            acc[1] += 1
            acc[2] = max(acc[2], mtime if mtime is not None else -1.0)
        elif entry.type == LINK:
            rows.append(TreeEntry(head, entry.path, False, 0, None, is_link=True, target=entry.target))
        else:
            rows.append(TreeEntry(head, entry.path, False, entry.size, mtime))
    dirs = [TreeEntry(name, f"{prefix}/{name}" if prefix else name, True, int(size), newest if newest >= 0 else None,
                      files=int(files)) for name, (size, files, newest) in folders.items()]
    return sorted(dirs, key=lambda t: t.name) + sorted(rows, key=lambda t: t.name)


def iter_tar(
    store: Store,
    record: RunRecord,
    tag: str,
    *,
    gzip_level: Optional[int] = GZIP_LEVEL,
    path: str = "",
) -> Iterator[bytes]:
    """The artifact (or the file or folder ``path`` names in it) as a tar stream, gzipped unless
    ``gzip_level`` is None. Paths in the archive are the artifact's own (no top folder).

    The manifest is read now, so unknown tags and paths raise here; the objects are read as
    the iterator is consumed. A corrupted or missing object raises ``IntegrityError`` from the
    iterator, leaving the archive visibly truncated. Closing the iterator early stops the reads.
    """
    if gzip_level is not None and not (isinstance(gzip_level, int) and 0 <= gzip_level <= 9):
        raise UsageError(f"gzip level {gzip_level!r} is not 0 to 9")
    manifest = run_artifact_manifest(store, record, tag)
    entries = list_files(manifest, _safe_path(path.rstrip("/"), "file or folder") if path else None)
    fallback = int(record.ended_at or record.started_at or 0)
    pieces = _padded(_tar_pieces(store.repo, entries, fallback))
    return _gathered(pieces) if gzip_level is None else _gzipped(pieces, gzip_level)


def _folder_times(entries: list[Entry], fallback: int) -> dict[str, int]:
    """Each folder above an entry, with the newest mtime (ns) of the files below it."""
    folders: dict[str, int] = {}
    for entry in entries:
        parts = entry.path.split("/")[:-1]
        for i in range(len(parts)):
            folder = "/".join(parts[: i + 1])
            stamp = entry.mtime_ns if entry.mtime_ns is not None else fallback * 10**9
            folders[folder] = max(folders.get(folder, stamp), stamp)
    return folders


def _header(name: str, kind: bytes, mode: int, mtime_ns: int, size: int = 0, target: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, target
    seconds, fraction = divmod(mtime_ns, 10**9)
    info.mtime = seconds
    if fraction and mtime_ns > 0:
        info.pax_headers = {"mtime": f"{seconds}.{fraction:09d}".rstrip("0")}  # exact, as GNU tar reads it
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _tar_pieces(repo: Repository, entries: list[Entry], fallback: int) -> Iterator[bytes]:
    """Headers, verified contents and padding, in order; ends with tar's end-of-archive blocks."""
    for folder, stamp in sorted(_folder_times(entries, fallback).items()):
        yield _header(folder, tarfile.DIRTYPE, 0o755, stamp)
    files = [e for e in entries if e.type != LINK]
    contents = _prefetched(repo, [obj for e in files for obj in _objects(e)])
    try:
        for entry in entries:
            stamp = entry.mtime_ns if entry.mtime_ns is not None else fallback * 10**9
            if entry.type == LINK:
                yield _header(entry.path, tarfile.SYMTYPE, 0o777, stamp, target=entry.target)
                continue
            yield _header(entry.path, tarfile.REGTYPE, entry.mode & 0o7777, stamp, entry.size)
            for _obj in _objects(entry):
                yield next(contents)
            if entry.size % _BLOCK:
                yield bytes(_BLOCK - entry.size % _BLOCK)
    finally:
        contents.close()
    yield bytes(2 * _BLOCK)


def _prefetched(repo: Repository, objects: list[tuple[str, int]]) -> Generator[bytes, None, None]:
    """The objects' verified bytes in order, with up to ``_AHEAD`` read ahead on two threads.

    Closing the iterator cancels what was not started; reads under way finish and are dropped.
    """
    if not objects:
        return
    pool = ThreadPoolExecutor(2, thread_name_prefix="studio-archive")
    queue: deque[Future[bytes]] = deque()
    todo = iter(objects)
    try:
        for digest, size in todo:
            queue.append(pool.submit(_read, repo, digest, size))
            if len(queue) >= _AHEAD:
                break
        while queue:
            data = queue.popleft().result()
            for digest, size in todo:
                queue.append(pool.submit(_read, repo, digest, size))
                break
            yield data
    finally:
        for future in queue:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def _gathered(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Small pieces joined into yields of at least ``_PIECE`` bytes; large ones pass through whole."""
    held: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= _PIECE:
            if held:
                yield b"".join(held)
                held, size = [], 0
            yield piece
            continue
        held.append(piece)
        size += len(piece)
        if size >= _PIECE:
            yield b"".join(held)
            held, size = [], 0
    if held:
        yield b"".join(held)


def _gzipped(pieces: Iterator[bytes], level: int) -> Iterator[bytes]:
    """The tar stream as one gzip member, compressed one block at a time on several threads.

    The way pigz does it: each ``_GZ_BLOCK`` of input is deflated on its own (zlib releases
    the GIL), primed with the 32 KiB before it so matches still reach back across blocks, and
    ends on a byte boundary (``Z_SYNC_FLUSH``), so the blocks concatenate into one deflate
    stream; the CRC and length of the whole input close the member. Any gunzip reads it as a
    plain ``.gz``, and the output is a little larger than one single-threaded stream's.
    """
    yield _GZIP_HEADER
    crc, length = 0, 0
    pool = ThreadPoolExecutor(_COMPRESSORS, thread_name_prefix="studio-gzip")
    pending: deque[Future[bytes]] = deque()
    before = b""
    try:
        for block in _blocks(pieces, _GZ_BLOCK):
            crc = zlib.crc32(block, crc)
            length += len(block)
            pending.append(pool.submit(_deflate, block, before, level))
            before = block[-_WINDOW:]
            while pending and (len(pending) > 2 * _COMPRESSORS or pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        yield zlib.compressobj(level, zlib.DEFLATED, -15).flush() + struct.pack("<II", crc, length & 0xFFFFFFFF)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def _deflate(block: bytes, before: bytes, level: int) -> bytes:
    """One block as raw deflate that continues the stream before it (see ``_gzipped``).

    A block whose samples do not compress (random weights, already compressed files) is
    stored as it is: deflate spends as long on bytes it cannot shrink as on text (about
    30 MB/s a core here), and stored blocks cost next to nothing.
    """
    if level and len(block) >= 4 * _SAMPLE and all(
            len(zlib.compress(block[at:at + _SAMPLE], 1)) > _SAMPLE * 0.97 for at in (0, len(block) // 2)):
        level = 0
    compressor = (zlib.compressobj(level, zlib.DEFLATED, -15, zdict=before) if before
                  else zlib.compressobj(level, zlib.DEFLATED, -15))
    return compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _blocks(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The stream cut into blocks of exactly ``size`` bytes (the last one shorter)."""
    held = bytearray()
    for piece in pieces:
        if not held and len(piece) == size:
            yield piece
            continue
        held += piece
        while len(held) >= size:
            yield bytes(held[:size])
            del held[:size]
    if held:
        yield bytes(held)


def _padded(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Pad the archive to a whole tar record, as ``tar`` does."""
    length = 0
    for piece in pieces:
        length += len(piece)
        yield piece
    if length % _RECORD:
        yield bytes(_RECORD - length % _RECORD)


def tar_kind(out: str) -> Optional[int]:
    """The gzip level a ``--tar OUT`` name asks for (``None``: plain tar); ``UsageError`` if unknown."""
    if out == "-":
        return GZIP_LEVEL
    for suffix, gzipped in _TAR_SUFFIXES:
        if out.lower().endswith(suffix):
            return GZIP_LEVEL if gzipped else None
    raise UsageError(f"--tar {out}: name a file ending in .tar.gz, .tgz or .tar (or - for a tar.gz on stdout)")


def iter_ref_tar(store: Store, ref: ArtifactRef, *, gzip_level: Optional[int] = GZIP_LEVEL) -> Iterator[bytes]:
    """``iter_tar`` of what ``EXP/TAG[@VERSION][/PATH]`` names (``studio get REF --tar``)."""
    record, _art = resolve_artifact(store, ref)
    return iter_tar(store, record, ref.tag, gzip_level=gzip_level, path=ref.path or "")


def save_tar(store: Store, ref: ArtifactRef, out: str, *, gzip_level: Optional[int] = GZIP_LEVEL) -> str:
    """Write ``ref`` as a tar (gzipped unless ``gzip_level`` is None) to the file ``out``; returns its path.

    The archive is written beside ``out`` under a temporary name and renamed into place only
    once every object was verified, so ``out`` never holds a wrong or partial archive. The rules
    of ``studio get`` for DEST apply: links and special files are refused, studio's own storage
    is off limits, a regular file is replaced.
    """
    if os.path.isdir(out):
        raise UsageError(f"--tar {out} is a folder; name the archive file (e.g. {ref.tag}.tar.gz)")
    dest = check_dest(out, protected_folders(store), True, False)
    chunks = iter_ref_tar(store, ref, gzip_level=gzip_level)
    folder = staging_folder(dest)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="archive-")
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.chmod(tmp, 0o666 & ~_umask())
        return place_file(tmp, dest)
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
