"""How often a worker beats and sweeps, and when a silent heartbeat counts as a dead worker.

Defaults give a redelivery within about a minute of a worker's death: attempts beat every 5 s,
a heartbeat unchanged for 30 s (as seen by another worker's own clock) is dead, and each worker
sweeps its queue's index every 15 s. ``STUDIO_WORKER_TIMING`` (``heartbeat=1,stale=5,sweep=1``)
shortens them, for tests and for impatient single-machine set-ups; every worker of a queue
should use the same values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Mapping

from ..errors import ConfigError

__all__ = ["ENV_VAR", "Timing"]

ENV_VAR = "STUDIO_WORKER_TIMING"


@dataclass(frozen=True)
class Timing:
    """Seconds between heartbeats, before a heartbeat is stale, and between sweeps."""

    heartbeat: float = 5.0
    stale: float = 30.0
    sweep: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Timing":
        """The defaults, overridden by ``STUDIO_WORKER_TIMING`` when set."""
        text = env.get(ENV_VAR, "").strip()
        timing = cls()
        if not text:
            return timing
        for item in text.split(","):
            name, sep, value = item.partition("=")
            name = name.strip()
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not sep or name not in ("heartbeat", "stale", "sweep") or number <= 0:
                raise ConfigError(f"{ENV_VAR}={text!r}: expected e.g. heartbeat=5,stale=30,sweep=15 (seconds > 0)")
            timing = replace(timing, **{name: number})
        if timing.stale <= 2 * timing.heartbeat:
            raise ConfigError(f"{ENV_VAR}: stale ({timing.stale:g} s) must exceed two heartbeats "
                              f"({timing.heartbeat:g} s each)")
        return timing
