"""restic and borg: the backup tools a user would name first for "snapshot a folder, keep what changed".

Both are Debian packages (``apt-get install -y restic borgbackup``, see ``setup.sh``), run for real
as their users run them, with their repository on the same disk as studio's store:

- restic (Go, content-defined chunks, parallel) encrypts always; its password comes from the
  environment (``RESTIC_PASSWORD``), never the command line. Repository format 2 (compression)
  needs restic >= 0.14; an older restic gets the ``--compression off`` rows as plain ``backup``
  (format 1 has no compression, which is the same thing) and the ``auto`` rows say why they cannot run.
- borg (Python + C) runs unencrypted (studio does not encrypt either) with its default lz4.

Each tool's local cache (restic's metadata cache, borg's files cache and chunk index) lives in the
contender's folder, so a first capture starts without one and nothing is left in ``~/.cache``;
it counts as written, not as content. Captures end with ``sync -f REPO`` like every baseline.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from functools import lru_cache
from typing import Optional

from contenders import Contender, Ctx, remove
from measure import Cmd

__all__ = ["APT_HINT", "BorgCreate", "BorgExtract", "ResticBackup", "ResticRestore", "restic_version", "tool_version"]

APT_HINT = "not installed: apt-get install -y restic borgbackup (or run benchmarks/setup.sh)"
BENCH_PASSWORD = "studio-bench-not-a-secret"  # a throwaway repository's password, given through the environment
_BORG_ENV = {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}


@lru_cache(maxsize=None)
def tool_version(program: str) -> str:
    """``restic 0.14.0`` / ``borg 1.2.4``, or 'not installed'."""
    path = shutil.which(program)
    if not path:
        return "not installed"
    args = ["version"] if program == "restic" else ["--version"]
    out = subprocess.run([path] + args, capture_output=True, text=True).stdout.strip()
    return out.split(" compiled")[0] if out else "unknown"


def restic_version() -> tuple[int, ...]:
    """restic's version as numbers, () when not installed."""
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", tool_version("restic"))
    return tuple(int(n) for n in found.groups()) if found else ()


def _sh(script: str, cwd: str, env: dict[str, str]) -> Cmd:
    return Cmd(["sh", "-c", script], cwd, env)


def _q(path: str) -> str:
    return shlex.quote(path)


class _Tool(Contender):
    """A repository of restic or borg below the workload's folder, with its own cache."""

    program = ""

    def __init__(self, ctx: Ctx, name: str, data: str) -> None:
        super().__init__(ctx)
        self.name, self.data = name, data
        self.dest = ctx.path(name)
        self.repo = os.path.join(self.dest, "repo")
        self.cache = os.path.join(self.dest, "cache")
        self.outputs = [self.repo, self.cache]
        self.content_dirs = [self.repo]
        self.count = 0

    def missing(self) -> Optional[str]:
        return None if shutil.which(self.program) else APT_HINT + f" ({self.program})"

    def env(self) -> dict[str, str]:
        """The tool's environment: password, cache folder, no prompts."""
        raise NotImplementedError

    def init(self) -> Cmd:
        """The untimed command that makes an empty repository."""
        raise NotImplementedError

    def capture(self) -> Cmd:
        """One backup of ``data`` into the repository, synced."""
        raise NotImplementedError

    def _fresh(self) -> None:
        remove(self.dest)
        os.makedirs(self.cache)
        self.ctx.untimed(self.init())

    def warm(self) -> Optional[Cmd]:
        return Cmd([self.program, "version" if self.program == "restic" else "--version"], self.dest, self.env())

    def cleanup(self) -> None:
        remove(self.dest)


class ResticBackup(_Tool):
    """``restic backup --compression MODE DATA`` (+ ``sync``); ``fresh``: into a new repository each time.

    Otherwise ``prepare`` backs up once and every repetition is a re-capture, which restic bases
    on the previous snapshot of the same path (its parent) and so re-reads only changed files.
    """

    program = "restic"

    def __init__(self, ctx: Ctx, name: str, data: str, *, fresh: bool, compression: str = "off") -> None:
        super().__init__(ctx, name, data)
        self.fresh, self.compression = fresh, compression
        self.label = f"restic backup --compression {compression}"

    def missing(self) -> Optional[str]:
        why = super().missing()
        if why is None and self.compression != "off" and restic_version() < (0, 14):
            why = (f"{tool_version('restic')} has no --compression (repository format 2 needs restic >= 0.14); "
                   "its backups are uncompressed: see the --compression off row")
        return why

    def env(self) -> dict[str, str]:
        return {"RESTIC_PASSWORD": BENCH_PASSWORD, "RESTIC_REPOSITORY": self.repo, "RESTIC_CACHE_DIR": self.cache,
                "RESTIC_PROGRESS_FPS": "0.1"}

    def init(self) -> Cmd:
        version = " --repository-version 2" if restic_version() >= (0, 14) else ""
        return _sh(f"restic init -q{version}", self.dest, self.env())

    def capture(self) -> Cmd:
        compression = f" --compression {self.compression}" if restic_version() >= (0, 14) else ""
        return _sh(f"restic backup -q{compression} {_q(self.data)} && sync -f {_q(self.repo)}", self.dest, self.env())

    def prepare(self) -> None:
        self._fresh()
        if not self.fresh:
            self.ctx.untimed(self.capture())

    def before(self) -> None:
        if self.fresh:
            self._fresh()

    def command(self) -> Cmd:
        return self.capture()


class ResticRestore(ResticBackup):
    """``restic restore latest --target DEST`` of a backup of ``data`` into an empty folder (not synced)."""

    def __init__(self, ctx: Ctx, name: str, data: str) -> None:
        super().__init__(ctx, name, data, fresh=False)
        self.label = "restic restore"
        self.restored = os.path.join(self.dest, "restored")
        self.outputs = self.content_dirs = [self.restored]

    def before(self) -> None:
        remove(self.restored)

    def command(self) -> Cmd:
        return _sh(f"restic restore -q latest --target {_q(self.restored)}", self.dest, self.env())


class BorgCreate(_Tool):
    """``borg create REPO::NAME .`` from inside DATA (+ ``sync``), unencrypted, borg's default lz4."""

    program = "borg"

    def __init__(self, ctx: Ctx, name: str, data: str, *, fresh: bool) -> None:
        super().__init__(ctx, name, data)
        self.fresh = fresh
        self.label = "borg create"

    def env(self) -> dict[str, str]:
        return dict(_BORG_ENV, BORG_BASE_DIR=self.cache, BORG_REPO=self.repo)

    def init(self) -> Cmd:
        return _sh("borg init --encryption=none", self.dest, self.env())

    def capture(self) -> Cmd:
        self.count += 1
        return _sh(f"borg create ::capture-{self.count} . && sync -f {_q(self.repo)}", self.data, self.env())

    def prepare(self) -> None:
        self._fresh()
        if not self.fresh:
            self.ctx.untimed(self.capture())

    def before(self) -> None:
        if self.fresh:
            self._fresh()

    def command(self) -> Cmd:
        return self.capture()


class BorgExtract(BorgCreate):
    """``borg extract REPO::NAME`` of a capture of ``data`` into an empty folder (not synced)."""

    def __init__(self, ctx: Ctx, name: str, data: str) -> None:
        super().__init__(ctx, name, data, fresh=False)
        self.label = "borg extract"
        self.restored = os.path.join(self.dest, "restored")
        self.outputs = self.content_dirs = [self.restored]

    def before(self) -> None:
        remove(self.restored)
        os.makedirs(self.restored)

    def command(self) -> Cmd:
        return _sh(f"borg extract ::capture-{self.count}", self.restored, self.env())
