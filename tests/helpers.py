"""Shared helpers for tests that drive ``studio`` as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def studio_env(home: str, **extra: str) -> dict[str, str]:
    """An environment with a throwaway HOME and STUDIOML_HOME, and no real cloud credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "STUDIO"))}
    env.update(HOME=home, STUDIOML_HOME=os.path.join(home, ".studioml"), PYTHONPATH=REPO)
    env.update(extra)
    return env


def studio(
    *args: str, home: str, cwd: Optional[str] = None, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess:
    """Run ``studio ARGS`` in a subprocess; returns the completed process with text output."""
    return subprocess.run(
        [sys.executable, "-m", "studio_run", *args],
        cwd=cwd or home,
        env=studio_env(home, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def file_bytes(root: str) -> dict[str, bytes]:
    """Every regular file below ``root`` by relative path, with its bytes: to compare a folder
    (a store, a restored artifact) before and after, or with what it should hold."""
    files: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def wait_for(condition: Callable[[], Any], what: str, deadline: float = 60.0, every: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something true and return that; fail naming ``what``
    after ``deadline`` s (generous: the suite may run twice side by side on loaded cores)."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def write_script(folder: str, name: str, body: str) -> str:
    """Write a Python script and return its path."""
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(body)
    return path


def corrupt_object(repo, digest: str) -> None:  # type: ignore[no-untyped-def]
    """Overwrite the start of a stored object in a local repository (bit rot, a bad disk),
    loose or inside its pack."""
    path, offset = repo.storage.path_of(repo.object_key(digest)), 0
    if not os.path.exists(path):
        name, offset, _length = repo.packs.location(digest)
        path = repo.storage.path_of(f"packs/{name[:2]}/{name[2:]}.pack")
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"BAD")
