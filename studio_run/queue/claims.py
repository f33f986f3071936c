"""The run record's fence: one claim per attempt, created exclusively, and its heartbeat.

Celery delivers a job at least once; a broker may deliver it again while it runs (a Redis
visibility timeout, a RabbitMQ consumer timeout) or lose it (an embedded transport killed with
-9). So a delivery only *asks* to run a job; the store decides. Attempt N of a run exists once
a worker has created ``claims/<exp>/<run_id>/<N>`` with an exclusive (create-if-absent) write,
which every storage backend makes atomic: of two workers claiming the same attempt, exactly
one succeeds. Only the holder of the newest claim may run or finish the run; a holder that
finds a newer claim than its own has been fenced off and stops at once.

Staleness is judged by *watching* a heartbeat change, never by comparing clocks of different
machines: ``<N>.beat`` holds a counter its holder rewrites every few seconds, and an observer
(``StaleWatch``) calls the holder dead when it has seen the same value for longer than the
stale period on its own monotonic clock. ``<N>.end`` says how an attempt ended when it did not
finish the run itself: ``lost`` (its worker died: taken over), ``released`` (its worker was
stopped and gave the run back) or ``fenced``.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any, Optional

from ..storage.base import Storage
from .jobs import claims_prefix

__all__ = ["Attempt", "Claims", "StaleWatch"]


@dataclass(frozen=True)
class Attempt:
    """One attempt of a run: who claimed it and, when it ended without finishing, how."""

    number: int
    worker: str
    host: str
    claimed_at: float
    end: str = ""  # "" (current or finished), "lost", "released", "fenced"


class Claims:
    """The claims of one run on a storage."""

    def __init__(self, storage: Storage, experiment: str, run_id: str) -> None:
        self.storage = storage
        self.prefix = claims_prefix(experiment, run_id)

    def numbers(self) -> list[int]:
        """The attempts claimed so far, in order."""
        found = []
        for key in self.storage.list(self.prefix):
            name = key[len(self.prefix):]
            if name.isdigit():
                found.append(int(name))
        return sorted(found)

    def newest(self) -> int:
        """The newest claimed attempt, 0 when the run was never claimed."""
        numbers = self.numbers()
        return numbers[-1] if numbers else 0

    def claim(self, attempt: int, worker: str) -> bool:
        """Create attempt ``attempt`` for ``worker``; False when another worker created it first."""
        data = {"attempt": attempt, "worker": worker, "host": socket.gethostname(), "claimed_at": time.time()}
        try:
            self.storage.write_bytes(f"{self.prefix}{attempt}", _encode(data), exclusive=True)
        except FileExistsError:
            return False
        return True

    def beat(self, attempt: int, worker: str, counter: int) -> None:
        """Say that attempt ``attempt`` is alive (the counter changes on every beat)."""
        data = {"worker": worker, "beat": counter, "at": time.time()}
        self.storage.write_bytes(f"{self.prefix}{attempt}.beat", _encode(data))

    def heartbeat(self, attempt: int) -> Optional[bytes]:
        """The raw heartbeat of ``attempt`` (compared for change only), None before the first."""
        try:
            return self.storage.read_bytes(f"{self.prefix}{attempt}.beat")
        except FileNotFoundError:
            return None

    def end(self, attempt: int, how: str) -> None:
        """Record that ``attempt`` ended without finishing the run (``lost``, ``released``, ``fenced``)."""
        self.storage.write_bytes(f"{self.prefix}{attempt}.end", _encode({"end": how, "at": time.time()}))

    def ending(self, attempt: int) -> str:
        """How ``attempt`` ended when it did not finish the run; "" otherwise."""
        try:
            data = json.loads(self.storage.read_bytes(f"{self.prefix}{attempt}.end"))
        except (FileNotFoundError, ValueError):
            return ""
        return str(data.get("end", "")) if isinstance(data, dict) else ""

    def history(self) -> list[Attempt]:
        """Every attempt with who ran it and how it ended."""
        attempts = []
        for number in self.numbers():
            data = _decode(self._read(str(number)))
            attempts.append(Attempt(number, str(data.get("worker", "")), str(data.get("host", "")),
                                    float(data.get("claimed_at") or 0.0), self.ending(number)))
        return attempts

    def lost(self) -> int:
        """How many attempts were taken over because their worker died (what ``--retries`` bounds)."""
        return sum(1 for n in self.numbers() if self.ending(n) == "lost")

    def _read(self, name: str) -> bytes:
        try:
            return self.storage.read_bytes(f"{self.prefix}{name}")
        except FileNotFoundError:
            return b"{}"


class StaleWatch:
    """Decides, from what one observer has seen, whether a heartbeat stopped changing.

    A heartbeat first seen now is fresh; one seen unchanged for ``after`` seconds of this
    process's monotonic clock is stale. Nothing compares timestamps written by other machines.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._seen: dict[str, tuple[Optional[bytes], float]] = {}

    def stale(self, key: str, value: Optional[bytes]) -> bool:
        """Whether ``value`` (the heartbeat read now under ``key``) has not changed for ``after`` s."""
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != value:
            self._seen[key] = (value, now)
            return False
        return now - seen[1] >= self.after

    def forget(self, key: str) -> None:
        """Stop watching ``key`` (its run ended or was taken over)."""
        self._seen.pop(key, None)


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _decode(data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
