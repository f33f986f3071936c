"""Destinations for tests: they record what arrived, wait on a gate, fail, or upload from inside."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Callable, Optional

from studio_run.uploads import Destination


def upload_from_threads(upload: Callable[[str, str], None], folder, repeat: int = 1) -> list[bytes]:
    """Four threads upload one name five times each, in a known order; returns the contents in it."""
    order: list[bytes] = []
    turn = threading.Lock()  # the calls themselves happen in a known order, from many threads

    def worker(index: int) -> None:
        for round_ in range(5):
            content = f"thread {index} round {round_} ".encode() * repeat
            path = os.path.join(str(folder), f"src{index}")
            with open(path, "wb") as f:
                f.write(content)
            with turn:
                upload("model/latest.pt", path)
                order.append(content)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return order


def digest_of(path: str) -> str:
    """SHA-256 of a file (independent of studio's own hashing)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Recording(Destination):
    """Keeps the SHA-256 of the latest content of each name, and every call in order."""

    label = "recording"

    def __init__(self, gate: Optional[threading.Event] = None, delay: Optional[Callable[[str, str], float]] = None):
        self.gate = gate
        self.delay = delay
        self.latest: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.threads: set[int] = set()
        self.flushes = 0
        self.closed = False
        self._lock = threading.Lock()

    def upload_file(self, name: str, path: str) -> None:
        self.threads.add(threading.get_ident())
        if self.gate is not None:
            assert self.gate.wait(60), "test gate never opened"
        digest = digest_of(path)
        if self.delay is not None:
            time.sleep(self.delay(name, digest))
        with self._lock:
            self.latest[name] = digest
            self.links.pop(name, None)
            self.calls.append(("upload", name))

    def link(self, target: str, name: str) -> None:
        with self._lock:
            assert target in self.latest or target in self.links, f"link {name} came before its target {target}"
            self.links[name] = target
            self.latest.pop(name, None)
            self.calls.append(("link", name))

    def flush(self, timeout=None) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


class Failing(Destination):
    """Fails every upload with ``error`` (a fresh copy each time); counts attempts."""

    label = "failing"

    def __init__(self, error: Callable[[], BaseException], succeed_after: Optional[int] = None):
        self.error = error
        self.succeed_after = succeed_after
        self.attempts = 0
        self.delivered: list[str] = []

    def upload_file(self, name: str, path: str) -> None:
        self.attempts += 1
        if self.succeed_after is not None and self.attempts > self.succeed_after:
            self.delivered.append(name)
            return
        raise self.error()


class Reentrant(Recording):
    """A destination that produces a log file on every upload and uploads it through studio."""

    label = "reentrant"

    def __init__(self, folder: str, upload: Callable[[str, str], object]):
        super().__init__()
        self.folder = folder
        self.upload = upload
        self.produced = 0

    def upload_file(self, name: str, path: str) -> None:
        super().upload_file(name, path)
        self.produced += 1
        log = os.path.join(self.folder, f"log-{self.produced}.txt")
        with open(log, "w") as f:
            f.write(f"delivered {name}\n")
        self.upload(f"logs/{self.produced}.txt", log)

    def owns(self, path: str) -> bool:
        return False  # deliberately: the uploader must stop the loop by itself
