"""Putting a fetched artifact at the user's DEST without harming anything already there.

``studio get`` writes outside the store, so it follows three rules (and ``cp``'s where they
agree): it never replaces or writes through a symlink, a device, a FIFO or a socket at DEST
(it refuses and says so); it never merges into a folder that holds something unless told to
(``force``); and it writes everything first into a hidden temporary folder beside DEST
(``.studio-get-<host>-<pid>-…``), moving the files into place only once all of them are
verified. A ``get`` killed with ``kill -9`` leaves that folder behind; the next ``get`` into
the same folder removes every one whose process is gone. A regular file at a single-file
DEST is replaced, as ``cp`` does.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from typing import Iterable

from ..errors import UsageError
from ..origin import process_alive

__all__ = ["TEMP_PREFIX", "check_dest", "clean_stale_temps", "place_file", "place_folder", "staging_folder"]

TEMP_PREFIX = ".studio-get-"
_HOST = socket.gethostname().replace("-", "_")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file")):
        if test(mode):
            return name
    return "a special file"


def _refuse_special(path: str, what: str = "DEST") -> None:
    """Refuse a path that is a link or special file (it would be replaced, or written through)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        extra = f" (to {os.readlink(path)})" if stat.S_ISLNK(mode) else ""
        raise UsageError(f"{what} {path} is {_kind(mode)}{extra}; studio get never replaces or writes through "
                         "links and special files: give a new path, or the real folder")


def check_dest(dest: str, protected: Iterable[str], single_file: bool, force: bool) -> str:
    """The absolute DEST after the checks that come before any byte is fetched."""
    if not dest or not dest.strip():
        raise UsageError("DEST is empty; name a folder or a file (`.` for the current folder)")
    path = os.path.abspath(os.path.expanduser(dest))
    real = os.path.realpath(path)
    for root in protected:
        root = os.path.realpath(root)
        if real == root or real.startswith(root + os.sep):
            raise UsageError(f"DEST {path} is inside studio's own storage ({root}); writing there could "
                             "damage it: choose a folder outside")
    _refuse_special(path)
    if os.path.isdir(path):
        if single_file:
            return path
        if os.listdir(path) and not force:
            raise UsageError(f"DEST {path} is a folder that is not empty; studio get does not merge into it "
                             "unless you add --force (or choose a new folder)")
    elif os.path.lexists(path) and not single_file:
        raise UsageError(f"DEST {path} is a file, and this artifact is a folder: choose a folder path")
    return path


def clean_stale_temps(parent: str) -> None:
    """Remove temporary folders of earlier ``get`` runs on this machine whose process is gone."""
    mine = f"{TEMP_PREFIX}{_HOST}-"
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(mine):
            continue
        pid = name[len(mine):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            _rmtree(os.path.join(parent, name))


def staging_folder(dest: str) -> str:
    """A new temporary folder beside ``dest`` (same filesystem, so moves are renames)."""
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    clean_stale_temps(parent)
    return tempfile.mkdtemp(dir=parent, prefix=f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-")


def place_file(written: str, dest: str) -> str:
    """Move a fetched file to ``dest``, or into it when ``dest`` is a folder; returns the path."""
    if os.path.isdir(dest) and not os.path.islink(dest):
        dest = os.path.join(dest, os.path.basename(written))
    _refuse_special(dest)
    if os.path.isdir(dest):
        raise UsageError(f"{dest} is a folder; studio get does not replace a folder with a file")
    os.replace(written, dest)
    return dest


def place_folder(tmp: str, dest: str) -> str:
    """Move what ``tmp`` holds into ``dest``: a rename when ``dest`` is new; otherwise (an empty
    folder, or ``--force``) entry by entry after checking every collision first, so nothing is
    moved when one is refused."""
    if not os.path.lexists(dest):
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, dest)
        return dest
    moves: list[tuple[str, str]] = []
    for dirpath, dirs, files in os.walk(tmp):
        rel = os.path.relpath(dirpath, tmp)
        for name in dirs + files:
            source = os.path.join(dirpath, name)
            target = os.path.normpath(os.path.join(dest, rel, name))
            if os.path.isdir(source) and not os.path.islink(source):
                if os.path.lexists(target):
                    _refuse_special(target, "in DEST,")
                    if not os.path.isdir(target):
                        raise UsageError(f"in DEST, {target} is a file where the artifact has a folder")
                continue
            _refuse_special(target, "in DEST,")
            if os.path.isdir(target):
                raise UsageError(f"in DEST, {target} is a folder where the artifact has a file")
            moves.append((source, target))
    for source, target in moves:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(source, target)
    return dest




def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rmtree(path: str) -> None:
    def onerror(func, target, _exc):  # type: ignore[no-untyped-def]
        try:
            os.chmod(os.path.dirname(target), 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)
