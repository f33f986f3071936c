"""Snapshot a directory (or one file) into a local object repository, incrementally.

Why it is shaped this way:

- Only files whose stat changed are read (``StatCache``); content already stored is never written
  again, so an unchanged periodic capture costs one stat walk.
- A file is read once: small files are read into memory, hashed, and written only when missing;
  large ones are copied into the repository while being hashed and the copy is dropped if the
  object existed. The object's name is always the digest of the bytes actually stored.
- A file that changes while it is read (its stat moves, or it was modified within a clock tick of
  the read and a second read disagrees) is read again; if it keeps changing, the snapshot keeps
  the previous version of that file and names it in ``unstable``: never a torn copy.
- The script's files are only read, never moved or modified.
"""

from __future__ import annotations

import os
import posixpath
import stat as statmod
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from ..objects.digest import CHUNKED_FROM, hash_bytes, hash_file, hash_file_chunked
from ..objects.local import LocalRepository
from ..objects.manifest import LINK, Entry, Manifest
from .batching import split_work
from .statcache import StatCache, now_ns, stat_key

__all__ = ["SnapshotResult", "snapshot"]

_SMALL = 1 << 20
_RACY_NS = 50_000_000
_WORKERS = 4  # large files at once (kernel copies and BLAKE3 run without the GIL)
_SMALL_WORKERS = 2  # batches of small files at once (see ``batching``: more only queue for the GIL)
_BATCH_FILES = 64

Progress = Callable[[int], None]
_Chunks = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class SnapshotResult:
    """What one capture produced: the manifest, and what it cost."""

    manifest: Manifest
    bytes_written: int
    files_written: int
    files_read: int
    unstable: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """The manifest's digest, the snapshot's identity."""
        return self.manifest.digest


def snapshot(
    path: str,
    repo: LocalRepository,
    stat_cache: StatCache,
    *,
    ignore: object | None = None,
    previous: Optional[Manifest] = None,
    retries: int = 3,
    progress: Optional[Progress] = None,
    flush: bool = True,
) -> SnapshotResult:
    """Capture ``path`` into ``repo`` (which must be on local disk) and store its manifest.

    ``ignore`` is an ``IgnoreRules`` for the workspace; ``previous`` is the last manifest of the
    same artifact, whose files are known to be stored and are kept for files that will not hold
    still. With ``flush`` (the default) objects and manifest are durable on return; a caller
    capturing several folders passes False and calls ``repo.flush()`` once. No record points at
    the manifest yet: the caller publishes it, after the flush.
    """
    path = os.path.abspath(path)
    single = os.path.isfile(path)
    if single:
        files: Iterator[tuple[str, os.stat_result]] = iter([(os.path.basename(path), os.lstat(path))])
        root = os.path.dirname(path)
    else:
        from .ignore import walk_files

        files = walk_files(path, ignore)  # type: ignore[arg-type]
        root = path
    known = previous.digests() if previous else set()
    prev_by_path = {e.path: e for e in previous.entries} if previous else {}

    entries: list[Entry] = []
    skipped: list[str] = []
    todo: list[tuple[str, os.stat_result]] = []
    regular: list[tuple[str, os.stat_result]] = []
    for rel, st in files:
        full = os.path.join(root, rel)
        if statmod.S_ISLNK(st.st_mode):
            entry = _link_entry(root, rel, full)
            if entry is None:
                skipped.append(rel)
            elif entry.type == LINK:
                entries.append(entry)
            else:
                todo.append((rel, os.stat(full)))  # an outward link to a file: store its content
        elif statmod.S_ISREG(st.st_mode):
            regular.append((rel, st))

    cached = stat_cache.get_many(stat_key(st) for _rel, st in regular)
    for rel, st in regular:
        value = cached.get(stat_key(st))
        if value is not None:
            digest, chunks = _decode(value)
            objects = list(chunks) or [(digest, st.st_size)]
            if all(d in known or repo.has_object(d, n) for d, n in objects):  # a truncated object is stored again
                entries.append(Entry(rel, size=st.st_size, mode=st.st_mode & 0o777, digest=digest, chunks=chunks))
                if progress:
                    progress(st.st_size)
                continue
        todo.append((rel, st))

    written = [0, 0]
    unstable: list[str] = []
    lock = threading.Lock()

    def work(item: tuple[str, os.stat_result]) -> Optional[Entry]:
        rel, _st = item
        entry, nbytes = _read_stable(repo, stat_cache, rel, os.path.join(root, rel), retries)
        if entry is None:
            with lock:
                unstable.append(rel)
            return prev_by_path.get(rel)
        if nbytes:
            with lock:
                written[0] += nbytes
                written[1] += 1
        if progress:
            progress(entry.size)
        return entry

    def work_batch(batch: list[tuple[str, os.stat_result]]) -> list[Optional[Entry]]:
        return [work(item) for item in batch]

    if todo:
        todo.sort(key=lambda item: item[1].st_ino)  # roughly the order on disk: fewer seeks on cold reads
        large, small = split_work(todo, lambda item: item[1].st_size, small_below=_SMALL, per_batch=_BATCH_FILES)
        with ThreadPoolExecutor(_WORKERS) as large_pool, ThreadPoolExecutor(_SMALL_WORKERS) as small_pool:
            futures = [large_pool.submit(work_batch, b) for b in large]
            futures += [small_pool.submit(work_batch, b) for b in small]
            for future in futures:
                entries.extend(e for e in future.result() if e is not None)
        stat_cache.save()
    manifest = Manifest.build(entries, single_file=single)
    repo.put_manifest(manifest)
    if flush:
        repo.flush()
    return SnapshotResult(manifest, written[0], written[1], len(todo), tuple(sorted(unstable)), tuple(skipped))


def _read_stable(
    repo: LocalRepository, cache: StatCache, rel: str, full: str, retries: int
) -> tuple[Optional[Entry], int]:
    """Store one file's content as it is between two identical stats; ``(None, 0)`` if it never holds."""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.05 * 2**attempt, 1.0))
        try:
            before = os.stat(full)
            started = now_ns()
            digest, chunks, nbytes = _ingest(repo, full, before.st_size)
            after = os.stat(full)
        except FileNotFoundError:
            return None, 0
        if stat_key(before) != stat_key(after):
            continue
        if after.st_size and started - after.st_mtime_ns < _RACY_NS:
            # Modified within a clock tick of the read: a write in the same tick would not move
            # the mtime, so confirm with a second read once the tick has passed. (An empty file
            # needs no second look: any write to it changes its size.)
            time.sleep(_RACY_NS / 1e9)
            again = hash_file_chunked(full)[0] if chunks else hash_file(full)
            if stat_key(os.stat(full)) != stat_key(after) or again != digest:
                continue
        cache.put(stat_key(after), _encode(digest, chunks), started)
        entry = Entry(rel, size=after.st_size, mode=after.st_mode & 0o777, digest=digest, chunks=chunks)
        return entry, nbytes
    return None, 0


def _ingest(repo: LocalRepository, full: str, size: int) -> tuple[str, _Chunks, int]:
    """Store one file: chunked when large, copied in the kernel when medium, from memory when small."""
    if size >= CHUNKED_FROM:
        return repo.ingest_file_chunked(full)
    if size >= _SMALL:
        digest, nbytes = repo.ingest_file(full)
    else:
        with open(full, "rb") as f:
            data = f.read()
        digest, nbytes = repo.ingest_bytes(data, hash_bytes(data))
    return digest, (), nbytes


def _encode(digest: str, chunks: _Chunks) -> str:
    """Stat-cache value: the digest, then the chunk list of a chunked file."""
    if not chunks:
        return digest
    return digest + ";" + ",".join(f"{d}:{n}" for d, n in chunks)


def _decode(value: str) -> tuple[str, _Chunks]:
    digest, _, rest = value.partition(";")
    if not rest:
        return digest, ()
    return digest, tuple((d, int(n)) for d, n in (part.split(":") for part in rest.split(",")))


def _link_entry(root: str, rel: str, full: str) -> Optional[Entry]:
    """A symlink inside the artifact stays a link; one pointing out is stored as its target file.

    Restores refuse links that leave the artifact, so storing such a link would make a snapshot
    that can never be restored. A dangling or outward link to a directory is skipped (and named).
    """
    target = os.readlink(full)
    if not os.path.isabs(target):
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if resolved != ".." and not resolved.startswith("../"):
            return Entry(rel, type=LINK, target=target)
    if os.path.isfile(full):
        return Entry(rel)  # marker: caller stores the content
    return None
