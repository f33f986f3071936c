"""Facts about where and with what a run ran, kept in its experiment record.

A result is only as reproducible as what is known about how it was made: the host and the
interpreter, the installed packages, and the exact code, that is the commit plus the
uncommitted diff. Gathering a fact must never fail a run: a missing git, a detached HEAD, an
unborn branch or a hung git give ``None`` fields, never exceptions. Remote URLs lose passwords
and tokens before they reach a record that may be shared.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import sys
import threading
from importlib import metadata
from urllib.parse import unquote, urlsplit, urlunsplit

from ..origin import current_origin
from ..storage import redact_url

__all__ = ["git_facts", "host_facts", "installed_packages"]

_log = logging.getLogger(__name__)

_GIT_TIMEOUT = 5.0  # seconds per git command
_DIFF_LIMIT = 5 * 1024 * 1024  # bytes of `git diff HEAD` kept in a record
_DIFF_TRUNCATED = "\n[studio: diff truncated at {limit} bytes]\n"

# A user name in an https remote that is really a credential, e.g. https://ghp_xxx@github.com.
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-")
_TOKEN_MIN_LENGTH = 20  # longer "user names" are treated as tokens: dropping a name costs little


def host_facts() -> dict[str, str | None]:
    """Host, user, Python version and executable, and platform string of this process.

    ``user`` is None when the account has no name (containers running a bare UID). Host, user
    and Python come from ``origin.current_origin``, the one place that says who ran something.
    """
    origin = current_origin()
    return {
        "host": origin.host,
        "user": origin.user or None,
        "python_version": origin.python,
        "python_executable": sys.executable or None,
        "platform": platform.platform(),
    }


def installed_packages() -> list[str]:
    """Every importable distribution as ``name==version``, sorted by normalized name.

    Read from package metadata in-process (no ``pip freeze`` subprocess). A distribution
    installed twice on ``sys.path`` is listed once, with the version that imports first.
    Distributions with broken metadata are skipped.
    """
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name, version = _from_folder_name(dist)
        if not name:
            try:
                meta = dist.metadata  # parsed on every access: read it once
                name = meta["Name"] if "Name" in meta else None
                version = meta["Version"] if "Version" in meta else None
            except Exception as exc:  # noqa: BLE001 - a broken dist-info must not fail a run
                _log.debug("skipping a distribution with unreadable metadata: %s", exc)
                continue
        if not name or not version:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        found.setdefault(key, f"{name}=={version}")
    return [found[key] for key in sorted(found)]


def git_facts(path: str) -> dict[str, str | bool | None] | None:
    """The code version of the git work tree holding ``path``, or None outside one.

    Keys: ``commit`` (None before the first commit), ``branch`` (None when detached),
    ``dirty`` (tracked files differ from HEAD, staged or not; untracked files do not count,
    as in ``git describe --dirty``, since the workspace snapshot captures them), ``remote``
    (``origin``, else the first remote, without credentials) and ``diff`` (``git diff HEAD``,
    cut at 5 MiB with a marker). A git command that fails or exceeds 5 s gives a None field;
    None overall also when git is not installed.
    """
    cwd = path if os.path.isdir(path) else (os.path.dirname(path) or ".")
    inside = _git(cwd, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.strip() != "true":
        return None
    commit = _git(cwd, "rev-parse", "--verify", "-q", "HEAD")
    branch = _git(cwd, "symbolic-ref", "--short", "-q", "HEAD")
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit.strip() if commit else None,
        "branch": branch.strip() if branch else None,
        "dirty": None if status is None else bool(status.strip()),
        "remote": _remote(cwd),
        "diff": _diff(cwd) if commit else None,
    }


def _from_folder_name(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    """Name and version from a ``name-version.dist-info`` folder, without parsing METADATA.

    Parsing every METADATA file costs ~0.5 ms a package (70 ms for a typical environment) on
    the start-up path of every run; wheel installers name the folder after both fields.
    """
    folder = os.path.basename(str(getattr(dist, "_path", "")).rstrip("/"))
    if not folder.endswith(".dist-info"):
        return None, None
    stem = folder[: -len(".dist-info")]
    name, sep, version = stem.partition("-")
    if not sep or not name or not version or "-" in version:
        return None, None
    return name, version


def _git_command(*args: str) -> list[str]:
    return ["git", "-c", "core.quotepath=off", *args]


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not take index.lock from the user
    return env


def _git(cwd: str, *args: str) -> str | None:
    """Standard output of a git command, or None if git is missing, fails or times out."""
    try:
        proc = subprocess.run(
            _git_command(*args),
            cwd=cwd,
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", "replace")


def _diff(cwd: str) -> str | None:
    """``git diff HEAD`` read up to the limit, so a huge diff never sits whole in memory."""
    args = ("diff", "--no-color", "--no-ext-diff", "--no-textconv", "HEAD", "--")
    try:
        proc = subprocess.Popen(
            _git_command(*args),
            cwd=cwd,
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(_GIT_TIMEOUT, _kill)
    timer.start()
    try:
        with proc:
            assert proc.stdout is not None
            data = proc.stdout.read(_DIFF_LIMIT + 1)
            truncated = len(data) > _DIFF_LIMIT
            if truncated:
                proc.kill()
    finally:
        timer.cancel()
    if not truncated and (timed_out.is_set() or proc.returncode != 0):
        return None
    text = data[:_DIFF_LIMIT].decode("utf-8", "replace")
    if truncated:
        text += _DIFF_TRUNCATED.format(limit=_DIFF_LIMIT)
    return text


def _remote(cwd: str) -> str | None:
    """URL of ``origin``, else of the first configured remote, without credentials."""
    out = _git(cwd, "config", "--get-regexp", r"^remote\..*\.url$")
    if not out:
        return None
    urls: dict[str, str] = {}
    for line in out.splitlines():
        key, _, url = line.partition(" ")
        urls.setdefault(key[len("remote.") : -len(".url")], url.strip())
    url = urls.get("origin") or next(iter(urls.values()), "")
    return _redact_remote(url) if url else None


def _redact_remote(url: str) -> str:
    """``redact_url`` drops passwords; this also drops a user name that is itself a token."""
    clean = redact_url(url)
    if "://" not in clean:  # scp-like "git@host:path" carries no secret
        return clean
    parts = urlsplit(clean)
    user, at, host = parts.netloc.rpartition("@")
    if at and _looks_like_token(unquote(user)):
        clean = urlunsplit((parts.scheme, host, parts.path, "", ""))
    return clean


def _looks_like_token(user: str) -> bool:
    return user.startswith(_TOKEN_PREFIXES) or len(user) >= _TOKEN_MIN_LENGTH
