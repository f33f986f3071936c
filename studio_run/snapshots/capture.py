"""Snapshot a directory (or one file) into a local object repository, incrementally.

Why it is shaped this way:

- Only files whose stat changed are read (``StatCache``); content already stored is never written
  again. An unchanged re-capture costs one stat walk and one read of the folder's stat table
  (path -> stat and digest, like git's index): one dict lookup a file, and when every file and
  link is as the table says, the previous manifests are the result, named without serialising
  or hashing them again.
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
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, cast

from ..objects.digest import CHUNKED_FROM, hash_bytes, hash_file, hash_file_chunked
from ..objects.local import LocalRepository
from ..objects.manifest import LINK, Entry, Manifest
from .batching import split_work
from .ignore import is_credential_file, printable, walk_files
from .statcache import StatCache, TableMeta, now_ns, packed_stat, stat_key, table_row

__all__ = ["SnapshotResult", "snapshot"]

_SMALL = 1 << 20
_RACY_NS = 50_000_000
_WORKERS = 4  # large files at once (kernel copies and BLAKE3 run without the GIL)
_SMALL_WORKERS = 2  # batches of small files at once (see ``batching``: more only queue for the GIL)
_BATCH_FILES = 64
_SPARSE_SLACK = 64 << 10  # fewer allocated bytes than this below the size: not worth a sparse restore

Progress = Callable[[int], None]
_Chunks = tuple[tuple[str, int], ...]
_Item = tuple[str, os.stat_result]


@dataclass(frozen=True)
class SnapshotResult:
    """What one capture produced: the manifest, what it cost, and what it could not hold.

    ``unstable`` files kept changing and hold their previous version; ``skipped`` files are not
    in the snapshot at all (unreadable, vanished, not regular files, links leading out to a
    folder or nowhere). Either means the artifact is not the folder as it was.
    """

    manifest: Manifest
    bytes_written: int
    files_written: int
    files_read: int
    unstable: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # paths left out of the snapshot, sorted
    skip_reasons: tuple[str, ...] = ()  # one printable line per skipped path: "a/b: Permission denied"
    content: str = ""  # the stored manifest without file times (``manifest`` itself without ``times``)

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
    times: bool = False,
) -> SnapshotResult:
    """Capture ``path`` into ``repo`` (which must be on local disk) and store its manifest.

    ``ignore`` is an ``IgnoreRules`` for the workspace; ``previous`` is the last manifest of the
    same artifact, whose files are known to be stored and are kept for files that will not hold
    still. With ``flush`` (the default) objects and manifest are durable on return; a caller
    capturing several folders passes False and calls ``repo.flush()`` once. No record points at
    the manifest yet: the caller publishes it, after the flush.

    A file that cannot be read (no permission, a FIFO, gone before it was read, a link leading
    nowhere or to a folder outside) never fails the capture: the rest is stored and the file is
    named in ``skipped``. Only a single-file artifact, which has no rest, raises ``OSError``.

    With ``times`` each file's modification time goes into the manifest (restores set it back).
    Off by default: the manifest's digest is the artifact's identity, and with times in it the
    same content captured from two folders would no longer share one digest.
    """
    full = os.path.abspath(path)
    table, meta = stat_cache.load_table(full)
    known = previous.digests() if previous else set()
    plan = _plan(full, ignore, times, lambda p, item: _from_table(p, repo, known, item, table, progress))
    misses = len(plan.regular)
    plan.todo += _reuse_cached(plan, repo, stat_cache, known, progress)
    reader = _Reader(repo, stat_cache, plan, previous, retries, progress)
    if plan.todo:
        reader.read_all()
        stat_cache.save()
    repo.seal()  # small objects into a pack (fsynced) before a manifest may name them
    links = tuple(sorted((e.path, e.target) for e in plan.entries if e.type == LINK))
    unchanged = not plan.todo and not misses and not plan.skipped and plan.table_hits == len(table)
    manifest, content = _store_manifests(repo, plan, meta if unchanged else (), links)
    new_meta = (manifest.digest, content, links, plan.single, times)
    if not unchanged or new_meta != meta:
        stat_cache.save_table(full, plan.rows, new_meta)
    if flush:
        repo.flush()
    skipped = sorted(plan.skipped)
    return SnapshotResult(
        manifest,
        reader.bytes_written,
        reader.files_written,
        len(plan.todo),
        tuple(sorted(reader.unstable)),
        tuple(skipped),
        tuple(f"{printable(rel)}: {plan.skipped[rel]}" for rel in skipped),
        content,
    )


def _store_manifests(repo: LocalRepository, plan: "_Plan", meta: TableMeta, links: tuple) -> tuple[Manifest, str]:
    """Store the capture's manifest and its content manifest (without times); ``(manifest, content digest)``.

    ``meta`` is the stat table's word on the last capture, given only when every file was
    found unchanged in the table: if its links and options match too and its manifests are
    still stored, the capture is that one, and they are neither serialised nor hashed again.
    """
    if meta and len(meta) == 5 and meta[2:] == (links, plan.single, plan.times):
        digest, content = meta[0], meta[1]
        if repo.has_manifest(digest) and repo.has_manifest(content):
            return Manifest.stored(plan.entries, plan.single, digest), content
    manifest = Manifest.build(plan.entries, single_file=plan.single, check=False)
    repo.put_manifest(manifest)
    if not plan.times:
        return manifest, manifest.digest
    return manifest, repo.put_manifest_bytes(manifest.to_bytes(times=False))


_STAT = struct.Struct("<QQqIqqq")  # dev, ino, size, mode, mtime_ns, ctime_ns, blocks


def _stat_field(index: int) -> property:
    return property(lambda self: _STAT.unpack_from(self._packed)[index])


class _Stat:
    """The fields of a stat result that a capture reads, packed into one bytes object: a first
    capture of 300,000 files holds one for every file until it is read, and seven Python
    integers a file (~260 bytes with their holder) would be ~75 MB of them; packed, ~125 bytes."""

    __slots__ = ("_packed",)

    def __init__(self, st: os.stat_result) -> None:
        self._packed = _STAT.pack(st.st_dev, st.st_ino, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns,
                                  st.st_blocks)

    st_dev, st_ino, st_size, st_mode = _stat_field(0), _stat_field(1), _stat_field(2), _stat_field(3)
    st_mtime_ns, st_ctime_ns, st_blocks = _stat_field(4), _stat_field(5), _stat_field(6)


@dataclass
class _Plan:
    """What the walk found: entries already decided, files to look at, and what was left out."""

    root: str
    single: bool
    entries: list[Entry] = field(default_factory=list)
    regular: list[_Item] = field(default_factory=list)  # not in the stat table: may be known to the stat cache
    todo: list[_Item] = field(default_factory=list)  # must be read
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it is not in the snapshot
    times: bool = False  # record each file's mtime
    rows: dict[str, bytes] = field(default_factory=dict)  # the stat table this capture leaves
    table_hits: int = 0  # files the last capture's stat table vouched for


def _plan(path: str, ignore: object | None, times: bool, known: Callable[[_Plan, _Item], bool]) -> _Plan:
    """Walk ``path`` and sort what it holds: links, regular files, and what cannot be captured.

    A file ``known`` vouches for (the stat table) gets its entry at once, and its stat is not
    kept: a stat result is ~600 bytes, 180 MB for 300,000 files.
    """
    single = os.path.isfile(path)
    if single:
        plan = _Plan(os.path.dirname(path), True, times=times)
        files: Iterator[_Item] = iter([(os.path.basename(path), os.lstat(path))])
    else:
        plan = _Plan(path, False, times=times)
        files = walk_files(path, ignore, on_skip=plan.skipped.__setitem__)  # type: ignore[arg-type]
    for item in files:
        rel, st = item
        if statmod.S_ISREG(st.st_mode):
            if not known(plan, item):
                plan.regular.append((rel, cast(os.stat_result, _Stat(st))))  # duck-typed: the fields used
        elif statmod.S_ISLNK(st.st_mode):
            _plan_link(plan, rel)
    return plan


def _plan_link(plan: _Plan, rel: str) -> None:
    """A symlink inside the artifact stays a link; one pointing out is stored as its target file.

    Restores refuse links that leave the artifact, so storing such a link would make a snapshot
    that can never be restored. A dangling or outward link to a folder is skipped (and named);
    an outward link to a credential file is left out like the file itself would be.
    """
    full = os.path.join(plan.root, rel)
    try:
        target = os.readlink(full)
    except OSError as exc:
        plan.skipped[rel] = exc.strerror or str(exc)
        return
    if not os.path.isabs(target):
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if resolved != ".." and not resolved.startswith("../"):
            plan.entries.append(Entry(rel, type=LINK, target=target))
            return
    try:
        st = os.stat(full)
    except FileNotFoundError:
        plan.skipped[rel] = f"symlink to {printable(target)}, which does not exist"
        return
    except OSError as exc:
        plan.skipped[rel] = f"symlink to {printable(target)}: {exc.strerror or exc}"
        return
    if not statmod.S_ISREG(st.st_mode):
        plan.skipped[rel] = f"symlink to {printable(target)} outside the artifact, not a file"
    elif not is_credential_file(os.path.realpath(full)):
        plan.todo.append((rel, st))


def _from_table(plan: _Plan, repo: LocalRepository, known: set[str], item: _Item, table: dict[str, bytes],
                progress: Optional[Progress]) -> bool:
    """Add the entry of a file the stat table vouches for (same stat, objects stored); False if not."""
    row = table.get(item[0])
    if row is None or row[:40] != packed_stat(item[1]):
        return False
    if not _reuse(plan, repo, known, item, row[40:].decode("ascii"), progress):
        return False
    plan.rows[item[0]] = row
    plan.table_hits += 1
    return True


def _reuse_cached(
    plan: _Plan, repo: LocalRepository, stat_cache: StatCache, known: set[str], progress: Optional[Progress]
) -> list[_Item]:
    """Add entries for the files the table did not know whose stat the machine-wide cache knows
    and whose objects are stored; returns the rest, which must be read."""
    todo: list[_Item] = []
    if not plan.regular:
        return todo
    cached = stat_cache.get_many(stat_key(st) for _rel, st in plan.regular)
    for item in plan.regular:
        key = stat_key(item[1])
        value = cached.get(key)
        if value is not None and _reuse(plan, repo, known, item, value, progress):
            plan.rows[item[0]] = table_row(key, value)
        else:
            todo.append(item)
    return todo


def _reuse(plan: _Plan, repo: LocalRepository, known: set[str], item: _Item, value: str,
           progress: Optional[Progress]) -> bool:
    """Add the entry of a file whose digest the cache gave, if its objects are stored (with
    the right size: a truncated object is stored again)."""
    rel, st = item
    digest, chunks = _decode(value)
    if chunks:
        if not all(d in known or repo.has_object(d, n) for d, n in chunks):
            return False
    elif digest not in known and not repo.has_object(digest, st.st_size):
        return False
    plan.entries.append(_file_entry(rel, st, digest, chunks, plan.times))
    if progress:
        progress(st.st_size)
    return True


class _Reader:
    """Reads the files the stat cache could not vouch for, on two thread pools."""

    def __init__(
        self,
        repo: LocalRepository,
        stat_cache: StatCache,
        plan: _Plan,
        previous: Optional[Manifest],
        retries: int,
        progress: Optional[Progress],
    ) -> None:
        self.repo, self.stat_cache, self.plan = repo, stat_cache, plan
        self._previous: "Optional[Manifest] | dict[str, Entry]" = previous
        self.retries, self.progress = retries, progress
        self.bytes_written = self.files_written = 0
        self.unstable: list[str] = []
        self._lock = threading.Lock()

    def read_all(self) -> None:
        """Read every planned file; large ones and batches of small ones in parallel."""
        todo = sorted(self.plan.todo, key=lambda item: item[1].st_ino)  # roughly the order on disk
        large, small = split_work(todo, lambda item: item[1].st_size, small_below=_SMALL, per_batch=_BATCH_FILES)
        with ThreadPoolExecutor(_WORKERS) as large_pool, ThreadPoolExecutor(_SMALL_WORKERS) as small_pool:
            futures = [large_pool.submit(self._read_batch, b) for b in large]
            futures += [small_pool.submit(self._read_batch, b) for b in small]
            for future in futures:
                self.plan.entries.extend(e for e in future.result() if e is not None)

    @property
    def previous(self) -> dict[str, Entry]:
        """The previous capture's entries by path (made on first need: only unstable files ask)."""
        with self._lock:
            if not isinstance(self._previous, dict):
                self._previous = {e.path: e for e in self._previous.entries} if self._previous else {}
            return self._previous

    def _read_batch(self, batch: list[_Item]) -> list[Optional[Entry]]:
        return [self._read_one(rel) for rel, _st in batch]

    def _read_one(self, rel: str) -> Optional[Entry]:
        full = os.path.join(self.plan.root, rel)
        try:
            entry, nbytes, row = _read_stable(self.repo, self.stat_cache, rel, full, self.retries, self.plan.times)
        except OSError as exc:
            if self.plan.single:  # nothing else to keep: the capture fails
                raise
            self._skip(rel, exc)
            return None
        if entry is None:
            with self._lock:
                self.unstable.append(rel)
            return self.previous.get(rel)

        if row:
            self.plan.rows[rel] = row
        if nbytes:
            with self._lock:
                self.bytes_written += nbytes
                self.files_written += 1
        if self.progress:
            self.progress(entry.size)
        return entry

    def _skip(self, rel: str, exc: OSError) -> None:
        """Name a file whose read failed, and why; the snapshot goes on without it."""
        if isinstance(exc, FileNotFoundError):
            why = "vanished while it was being captured"
        else:
            why = exc.strerror or str(exc)
        with self._lock:
            self.plan.skipped[rel] = why


def _read_stable(
    repo: LocalRepository, cache: StatCache, rel: str, full: str, retries: int, times: bool
) -> tuple[Optional[Entry], int, bytes]:
    """Store one file's content as it is between two identical stats: ``(entry, bytes written,
    stat-table row)``, the row empty for a file too recently modified to be vouched for by its
    stat; ``(None, 0, b"")`` if it never holds still."""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.05 * 2**attempt, 1.0))
        before = os.stat(full)
        started = now_ns()
        digest, chunks, nbytes = _ingest(repo, full, before.st_size)
        after = os.stat(full)
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
        key, value = stat_key(after), _encode(digest, chunks)
        row = cache.remember(key, value, started)  # the pending row and the stat table's: one object
        return _file_entry(rel, after, digest, chunks, times), nbytes, row
    return None, 0, b""


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


def _file_entry(rel: str, st: os.stat_result, digest: str, chunks: _Chunks, times: bool) -> Entry:
    """A file's manifest entry from the stat that vouches for its content."""
    sparse = st.st_blocks * 512 + _SPARSE_SLACK < st.st_size  # holes worth keeping on restore
    return Entry(
        rel, size=st.st_size, mode=st.st_mode & 0o777, digest=digest, chunks=chunks, sparse=sparse,
        mtime_ns=st.st_mtime_ns if times else None,
    )
