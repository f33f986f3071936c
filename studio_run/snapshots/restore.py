"""Materialise a manifest into a folder, verifying every byte and refusing unsafe paths.

Manifests were validated when read (no absolute paths, no ``..``, nothing below a link or file,
no link target leaving the artifact). Here files are written first and links last, so no file is
ever written through a link, and each link is checked once more on disk with ``realpath``. Every
object is hashed while it is copied; a mismatch raises ``IntegrityError`` and names the file.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from ..errors import UnsafePathError
from ..objects.local import LocalRepository
from ..objects.manifest import LINK, Entry, Manifest
from ..objects.repository import Repository
from .batching import split_work

__all__ = ["fill_new_folder", "materialize"]

_WORKERS = 4
_SMALL_WORKERS = 2  # cache fills: batches of small files at once (see ``batching``)


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

    def write(entry) -> None:  # type: ignore[no-untyped-def]
        target = os.path.join(dest, *entry.path.split("/"))
        if os.path.islink(target):
            os.unlink(target)
        repo.get_entry_file(entry, target)
        os.chmod(target, entry.mode)
        if progress:
            progress(entry.size)

    if files:
        with ThreadPoolExecutor(min(_WORKERS, len(files))) as pool:
            list(pool.map(write, files))
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
    with their final read-only mode, and stamped (size, mtime, inode, mode) from the open
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
            if isinstance(repo, LocalRepository):
                out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                try:
                    repo.write_entry_to(entry, out)
                    os.fchmod(out, mode)  # the umask may have taken bits away
                    st = os.fstat(out)
                finally:
                    os.close(out)
            else:
                repo.get_entry_file(entry, target)
                os.chmod(target, mode)
                st = os.lstat(target)
            stamp[entry.path] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o777]
            if progress:
                progress(entry.size)

    large, small = split_work(files, lambda e: e.size, small_below=1 << 20, per_batch=64)
    with ThreadPoolExecutor(_WORKERS) as large_pool, ThreadPoolExecutor(_SMALL_WORKERS) as small_pool:
        futures = [large_pool.submit(write, b) for b in large] + [small_pool.submit(write, b) for b in small]
        for future in futures:
            future.result()
    _write_links(dest, links)
    for folder in reversed(folders):
        os.chmod(os.path.join(dest, *folder.split("/")), 0o555)
    os.chmod(dest, 0o555)
    return stamp


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
