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

from .errors import UnsafePathError
from .objects.manifest import LINK, Manifest
from .objects.repository import Repository

__all__ = ["make_read_only", "materialize"]

_WORKERS = 4


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
    if manifest.single_file:
        return os.path.join(dest, manifest.entries[0].path)
    return dest


def make_read_only(root: str) -> None:
    """Drop write permission from every file and folder below ``root`` (links untouched)."""
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, os.stat(full).st_mode & 0o555)
        for name in dirs:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o555)
    os.chmod(root, 0o555)
