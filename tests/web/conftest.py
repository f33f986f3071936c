"""Shared by the ``studio ui`` tests: a store filled by real ``studio run``s, and a ``studio ui``
server started as a subprocess on a free port (``--port 0``; the address is read from the one
line it prints), stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

import pytest
from starlette.testclient import TestClient

from studio_run.config import load_config
from studio_run.store.open import open_store
from studio_run.store.runindex import RunIndex
from studio_run.web.app import build_app
from studio_run.web.security import Guard
from tests.helpers import studio, studio_env, write_script

# The script of every test run: files with known bytes and known mtimes in out/, a line of output.
TRAIN = """\
import os, sys
lr = sys.argv[sys.argv.index("--lr") + 1]
os.makedirs("out/sub", exist_ok=True)
for name, data, stamp in [("out/model.txt", ("model lr=" + lr).encode(), 1600000000),
                          ("out/sub/weights.bin", bytes(range(256)) * 40, 1600000100)]:
    with open(name, "wb") as f:
        f.write(data)
    os.utime(name, (stamp, stamp))
print("trained with lr", lr, flush=True)
"""


def expected_files(lr: str) -> dict[str, tuple[bytes, int]]:
    """What the ``model`` artifact of a run with ``--lr lr`` holds: path -> (bytes, mtime)."""
    return {"model.txt": (f"model lr={lr}".encode(), 1600000000),
            "sub/weights.bin": (bytes(range(256)) * 40, 1600000100)}


@dataclass
class Home:
    """A throwaway HOME with a store, the folder runs start in, and the runs made there."""

    home: str
    work: str
    runs: dict[str, list[str]] = field(default_factory=dict)  # experiment -> run ids, oldest first
    extra: dict[str, str] = field(default_factory=dict)  # more environment (a cloud SDK's fake credentials)

    def env(self) -> dict[str, str]:
        return studio_env(self.home, **self.extra)

    def run(self, experiment: str, *args: str, options: tuple[str, ...] = ()) -> str:
        """``studio run -e EXPERIMENT -c out:model OPTIONS train.py ARGS``; returns the new run id."""
        proc = studio("run", "-e", experiment, "-c", "out:model", *options, "train.py", *args,
                      home=self.home, cwd=self.work)
        assert proc.returncode == 0, proc.stderr
        listed = studio("list", "--json", "-a", experiment, home=self.home)
        assert listed.returncode == 0, listed.stderr
        ids = sorted(r["run_id"] for r in json.loads(listed.stdout))
        self.runs[experiment] = ids
        return ids[-1]


def make_home(root: str) -> Home:
    """A home where experiment ``alpha`` ran twice: ``--lr 0.1`` (version 1), ``--lr 0.01`` (2)."""
    home = Home(os.path.join(root, "home"), os.path.join(root, "work"))
    os.makedirs(home.home)
    os.makedirs(home.work)
    write_script(home.work, "train.py", TRAIN)
    home.run("alpha", "--lr", "0.1")
    home.run("alpha", "--lr", "0.01")
    return home


@dataclass
class Server:
    """A running ``studio ui`` and the URL it printed."""

    proc: subprocess.Popen
    url: str  # as printed: http://HOST:PORT/ (with ?token=... off loopback)
    port: int

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def start_ui(home: Home, *args: str, deadline: float = 60) -> Server:
    """``studio ui --port 0 ARGS`` over ``home``'s store, once it has printed its address."""
    proc = subprocess.Popen([sys.executable, "-m", "studio_run", "ui", "--port", "0", *args], cwd=home.work,
                            env=home.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = b""
    end = time.monotonic() + deadline
    while not line.endswith(b"\n") and time.monotonic() < end and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line += os.read(proc.stdout.fileno(), 4096)
    if b"http://" not in line:
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"studio ui did not start: {line!r} {err.decode(errors='replace')}")
    url = line.decode().split(" at ", 1)[1].split()[0]
    port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    return Server(proc, url, port)


def app_client(home: Home, bind: str = "127.0.0.1", base_url: str = "http://127.0.0.1:8765",
               follow_redirects: bool = True) -> TestClient:
    """A TestClient over ``studio ui``'s app on ``home``'s store (its run index in ``home/index``),
    guarded as a server bound to ``bind`` would be; enter it to start the app."""
    store = open_store(load_config(None, env=home.env()))
    app = build_app(store, Guard.for_bind(bind), RunIndex(store, os.path.join(home.home, "index")),
                    socket.gethostname())
    return TestClient(app, base_url=base_url, follow_redirects=follow_redirects)


@pytest.fixture(scope="module")
def alpha_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """A home of its own for one test module, with ``alpha`` run twice."""
    yield make_home(str(tmp_path_factory.mktemp("web")))


def chromium_path() -> Optional[str]:
    """Debian's Chromium, which the browser tests drive (never a downloaded browser)."""
    path = "/usr/bin/chromium"
    return path if os.access(path, os.X_OK) else None
