"""Materialise a manifest into a folder, verifying every byte and refusing unsafe paths.

Manifests were validated when read (no absolute paths, no ``..``, nothing below a link or file,
no link target leaving the artifact). Here files are written first and links last, so no file is
ever written through a link, and each link is checked once more on disk with ``realpath``. Files
get back their mode, modification time and holes (sparse files stay sparse). Every
object is hashed while it is copied; a mismatch raises ``IntegrityError`` and names the file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from ..errors import UnsafePathError
from ..objects.local import LocalRepository
from ..objects.manifest import LINK, Entry, Manifest
from ..objects.repository import Repository
from .batching import split_work

__all__ = ["fill_new_folder", "materialize", "write_entry_file"]

_WORKERS = 4
_SMALL_WORKERS = 2  # cache fills: batches of small files at once (see ``batching``)
_BLOCK = 4096  # a sparse file's holes are found at the file system's block size
_ZEROS = bytes(_BLOCK)


def materialize(
    repo: Repository,
    manifest: Manifest,
    dest: str,
    *,
    progress: Optional[Callable[[int], None]] = None,
) -> str:
    """Write the manifest's files below ``dest`` (a folder); returns the artifact's path.

    For a single-file artifact the file is ``dest/<name>`` and that path is returned.
    ``dest`` may exist; files it already holds under the same names are replaced.
    """
    dest = os.path.abspath(dest)
    os.makedirs(dest, exist_ok=True)
    files = [e for e in manifest.entries if e.type != LINK]
    links = [e for e in manifest.entries if e.type == LINK]
    folders = {os.path.dirname(e.path) for e in manifest.entries}
    for folder in sorted(folders):
        if folder:
            target = os.path.join(dest, *folder.split("/"))
            if os.path.islink(target):
                raise UnsafePathError(f"refusing to write through the existing symlink {target}")
            os.makedirs(target, exist_ok=True)

    local = isinstance(repo, LocalRepository)

    def write(batch: list[Entry]) -> None:
        for entry in batch:
            target = os.path.join(dest, *entry.path.split("/"))
            if os.path.islink(target):
                os.unlink(target)
            if not (local and not entry.sparse and _write_new(repo, entry, target)):  # type: ignore[arg-type]
                write_entry_file(repo, entry, target)
            if progress:
                progress(entry.size)

    _run_batches(repo, files, write)
    _write_links(dest, links)
    if manifest.single_file:
        return os.path.join(dest, manifest.entries[0].path)
    return dest


def fill_new_folder(
    repo: Repository,
    manifest: Manifest,
    dest: str,
    *,
    progress: Optional[Callable[[int], None]] = None,
) -> dict[str, list[int]]:
    """Materialise into ``dest``, which must not exist yet, read-only; returns each file's stamp.

    The blob cache's fill: nobody else writes into a folder this call creates, so files are
    created in place (no temporary names, no checks for links that cannot be there yet), born
    with their final read-only mode and their captured time, and stamped (size, mtime, inode, mode) from the open
    descriptor instead of walking the tree again. Links are still written last and checked.
    """
    os.mkdir(dest)
    files = [e for e in manifest.entries if e.type != LINK]
    links = [e for e in manifest.entries if e.type == LINK]
    folders = sorted({parent for e in manifest.entries for parent in _parents(e.path)})
    for folder in folders:
        os.makedirs(os.path.join(dest, *folder.split("/")), exist_ok=True)
    stamp: dict[str, list[int]] = {}

    def write(batch: list[Entry]) -> None:
        for entry in batch:
            target = os.path.join(dest, *entry.path.split("/"))
            mode = entry.mode & 0o555
            if entry.sparse or isinstance(repo, LocalRepository):
                out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                try:
                    if isinstance(repo, LocalRepository) and not entry.sparse:
                        repo.write_entry_to(entry, out)
                    else:
                        _write_sparse(repo, entry, out)
                    os.fchmod(out, mode)  # the umask may have taken bits away
                    _set_mtime(out, entry)
                    st = os.fstat(out)
                finally:
                    os.close(out)
            else:
                repo.get_entry_file(entry, target)
                os.chmod(target, mode)
                _set_mtime(target, entry)
                st = os.lstat(target)
            stamp[entry.path] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o777]
            if progress:
                progress(entry.size)

    _run_batches(repo, files, write)
    _write_links(dest, links)
    for folder in reversed(folders):
        os.chmod(os.path.join(dest, *folder.split("/")), 0o555)
    os.chmod(dest, 0o555)
    return stamp


def _run_batches(repo: Repository, files: list[Entry], write: Callable[[list[Entry]], None]) -> None:
    """Run ``write`` over the files: large ones one task each, small ones in batches, the small
    ones in the order of their packs (each pack opened once and read front to back)."""
    if isinstance(repo, LocalRepository):
        order = repo.read_order
        files = sorted(files, key=lambda e: order(e.digest) if not e.chunks else ("", 0))
    large, small = split_work(files, lambda e: e.size, small_below=1 << 20, per_batch=64)
    with ThreadPoolExecutor(_WORKERS) as large_pool, ThreadPoolExecutor(_SMALL_WORKERS) as small_pool:
        futures = [large_pool.submit(write, b) for b in large] + [small_pool.submit(write, b) for b in small]
        for future in futures:
            future.result()


def _write_new(repo: LocalRepository, entry: Entry, target: str) -> bool:
    """Write a file that does not exist yet in place (no temporary name to rename: ``get``
    fills a fresh folder); False when it exists, to be replaced atomically instead.

    ``O_EXCL | O_NOFOLLOW`` never writes through anything already there; a file left half
    written by a failed read is removed before the error goes on.
    """
    try:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    try:
        repo.write_entry_to(entry, out)
        os.fchmod(out, entry.mode)
        _set_mtime(out, entry)
    except BaseException:
        os.close(out)
        os.unlink(target)
        raise
    os.close(out)
    return True


def write_entry_file(repo: Repository, entry: Entry, dest: str) -> None:
    """Write one file entry to ``dest`` (replaced atomically) with its mode and time; holes stay holes.

    The one way a restore writes a file, so ``studio get`` of a whole artifact and of one file
    give the same bytes, mode and sparseness.
    """
    if entry.sparse:
        folder = os.path.dirname(os.path.abspath(dest))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-studio-")
        try:
            _write_sparse(repo, entry, fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, dest)
        finally:
            if fd >= 0:
                os.close(fd)
            if os.path.lexists(tmp):
                os.unlink(tmp)
    else:
        repo.get_entry_file(entry, dest)
    os.chmod(dest, entry.mode)
    _set_mtime(dest, entry)


def _set_mtime(target: "str | int", entry: Entry) -> None:
    """Give the restored file (a path or an open descriptor) its captured time, when the manifest has one."""
    if entry.mtime_ns is not None:
        os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))


def _write_sparse(repo: Repository, entry: Entry, out: int) -> None:
    """Write the entry's verified bytes at their offsets, skipping all-zero blocks, then set the size."""
    offset = 0
    for digest, _size in entry.chunks or ((entry.digest, entry.size),):
        data = repo.read_object(digest)  # verified; a chunk or a file below the chunking size
        view = memoryview(data)
        for start in range(0, len(data), _BLOCK):
            block = view[start:start + _BLOCK]
            if block != _ZEROS[: len(block)]:
                os.pwrite(out, block, offset + start)
        offset += len(data)
    os.ftruncate(out, offset)


def _parents(path: str) -> list[str]:
    """Every folder above a manifest path: ``"a/b/c"`` -> ``["a", "a/b"]``."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _write_links(dest: str, links: list[Entry]) -> None:
    """Create the links (after every file), then remove and refuse any that resolves outside."""
    real_dest = os.path.realpath(dest)
    for entry in links:
        target = os.path.join(dest, *entry.path.split("/"))
        if os.path.lexists(target):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        os.symlink(entry.target, target)
    for entry in links:
        resolved = os.path.realpath(os.path.join(dest, *entry.path.split("/")))
        if resolved != real_dest and not resolved.startswith(real_dest + os.sep):
            os.unlink(os.path.join(dest, *entry.path.split("/")))
            raise UnsafePathError(f"symlink {entry.path!r} resolves outside the destination; removed")
