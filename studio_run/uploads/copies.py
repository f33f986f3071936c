"""The caller's side of an upload: a checked remote name and one private copy of the file.

"Copies" here are the uploads' own: one file per ``upload_file`` call, in the process's
``<proc_dir>/staging/`` folder (the folder keeps its name on disk), deleted once delivered. They
are not the store's staging folder (``$STUDIOML_HOME/staging/<store id>``), where captures for a
remote store wait to be sent (``studio_run.store``).

Why a copy at all: the script may overwrite, truncate or delete its file the moment
``upload_file`` returns, and the upload must carry the content as it was at the call. Why only
one: the copy is the only work done on the caller's thread. It is a reflink (``FICLONE``,
constant time, no data copied) where the filesystem can clone, else an in-kernel
``copy_file_range`` (no bytes through user space), else a plain read/write loop. Everything
after that (hashing, storing, sending) happens on the uploader's worker threads.

Remote names are relative posix paths; ``{experiment}``, ``{run}`` and ``{rank}`` are replaced
by the run's values. Any other brace is refused rather than guessed at.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Mapping

__all__ = ["PLACEHOLDERS", "clone_or_copy", "expand_name", "rank"]

PLACEHOLDERS = ("experiment", "run", "rank")
_PLACEHOLDER = re.compile(r"\{(experiment|run|rank)\}")
_FICLONE = 0x40049409  # _IOW(0x94, 9, int): Linux's clone ioctl (btrfs, xfs, ocfs2, bcachefs)
_NO_CLONE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF, errno.EPERM}
_RANK_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK")
_CHUNK = 1 << 30


def rank(env: Mapping[str, str] = os.environ) -> str:
    """This process's rank in a distributed job (torchrun, SLURM, MPI), ``"0"`` when alone."""
    for var in _RANK_VARS:
        value = env.get(var, "").strip()
        if value.isdigit():
            return value
    return "0"


def expand_name(name: str, values: Mapping[str, str]) -> str:
    """Replace the placeholders in ``name`` and check that the result is a safe relative path.

    Raises ``ValueError`` for an unknown placeholder, an absolute path, ``.``/``..`` parts,
    empty parts, backslashes or NUL: a name must be usable as a path below any folder.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a remote name must be a non-empty string, e.g. 'checkpoints/ep3.pt'")
    expanded = _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), name)
    if "{" in expanded or "}" in expanded:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise ValueError(f"remote name {name!r} has an unknown placeholder; the known ones are {known}")
    if expanded.startswith("/") or "\\" in expanded or "\x00" in expanded:
        raise ValueError(f"remote name {expanded!r} must be a relative path with '/' separators")
    if any(part in ("", ".", "..") for part in expanded.split("/")):
        raise ValueError(f"remote name {expanded!r} has an empty, '.' or '..' part")
    return expanded


def clone_or_copy(src_fd: int, dest: str, size: int) -> str:
    """Write the content of open file ``src_fd`` (``size`` bytes) to a new file ``dest``.

    Returns how it was done: ``"reflink"``, ``"copy_file_range"`` or ``"read"``. ``dest`` must
    not exist; it is created with mode 0600 and removed again if the copy fails.
    """
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        how = _clone(src_fd, out) or _copy_range(src_fd, out, size) or _copy_read(src_fd, out)
    except BaseException:
        os.close(out)
        try:
            os.unlink(dest)
        except FileNotFoundError:
            pass
        raise
    os.close(out)
    return how


def _clone(src: int, out: int) -> str:
    try:
        import fcntl

        fcntl.ioctl(out, _FICLONE, src)
    except OSError as exc:
        if exc.errno in _NO_CLONE:
            return ""
        raise
    except ImportError:  # pragma: no cover - not on Linux
        return ""
    return "reflink"


def _copy_range(src: int, out: int, size: int) -> str:
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is None:  # pragma: no cover - older Python or not Linux
        return ""
    offset = 0
    while True:
        try:
            n = copy_range(src, out, _CHUNK, offset, offset)
        except OSError as exc:
            if offset == 0 and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                return ""  # not supported here (old kernel, odd filesystem): fall back
            raise
        if n == 0:
            break
        offset += n
    if offset < size:  # some filesystems (procfs, FUSE) report 0 instead of failing
        if offset == 0:
            return ""
        raise OSError(errno.EIO, f"short copy: {offset} of {size} bytes")
    return "copy_file_range"


def _copy_read(src: int, out: int) -> str:
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(out, 0, os.SEEK_SET)
    os.ftruncate(out, 0)
    while True:
        chunk = os.read(src, 1 << 20)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view):]
    return "read"
